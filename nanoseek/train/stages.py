"""Training stages: tokenizer -> pretrain -> sft -> rl (-> later rounds the recipe names), each resumable, each
writing into one run directory.

    nanoseek train all --recipe tiny --out runs/tiny          # the CLI (train/cli.py) calls these
    from nanoseek.train.stages import run_stage
    run_stage("pretrain", load_recipe("tiny"), Path("runs/tiny"), resume=True)

Run directory layout:
    tokenizer/                         tokenizer.json + tokenizer_config.json (with the chat template)
    pretrain/ sft/                     train_rows.npz, eval_rows.npz (packed data, built once, then reused),
                                       checkpoint.pt (loop state), log.jsonl, loss.png, model/ (HF checkpoint,
                                       rewritten at every loop checkpoint, so there is always one to export)
    rl/                                checkpoint.pt, log.jsonl, rewards.png, rewards.md (its curves), model/ (when
                                       the recipe's stages include an RL stage: nanoseek.train.rl)
    dpo/                               pairs.json (tokenized pairs with the reference log-probabilities, built
                                       once), checkpoint.pt, log.jsonl, loss.png, adapter/, model/ (a DPO stage:
                                       nanoseek.train.dpo)
    sft2/ ...                          a later round's folder is named after its recipe section
    base/model/                        (recipes with a [base]) the pretrained base, DeepSeek's special tokens added
    STAGE/adapter/                     (stages with a `lora` table) the adapter, rewritten at every loop
                                       checkpoint (nanoseek.model.adapter); model/ is base + adapter merged
    wall_clock.json                    each stage session's start and wall seconds (see `run_stage`)
Each stage's `model/` is a full Hugging Face checkpoint (config.json, model.safetensors, tokenizer files,
generation_config.json) that `nanoseek serve --model` and transformers load.
"""

from __future__ import annotations

import copy
import json
import random
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from nanoseek.fileio import append_to_json_list, utc_timestamp, write_json_atomic
from nanoseek.model import adapter
from nanoseek.model.adapter import LoraSettings, attach_lora, extend_vocabulary, trainable_token_ids
from nanoseek.model.checkpoint import save_checkpoint
from nanoseek.model.config import ModelConfig
from nanoseek.model.loader import load_checkpoint, load_model
from nanoseek.model.transformer import Transformer
from nanoseek.tasks.stdlib_split import stdlib_files
from nanoseek.tokenizer.tokenizer import Tokenizer
from nanoseek.train import data, dpo, self_distill
from nanoseek.train.loop import TrainResult, distributed_setup, train
from nanoseek.train.packing import PackedRows, pack_documents, pack_stream
from nanoseek.train.recipe import (
    dpo_config,
    init_stage,
    loop_config,
    optional_stages,
    rl_config,
    stage_kind,
    stage_seed,
    stage_settings,
    training_stages,
)
from nanoseek.train.rl import train_rl

# Held-out loss during SFT is measured on this many held-out items of each suite (loss only, never trained).
SFT_EVAL_ITEMS_PER_SUITE = 24


def tokenizer_stage(recipe: dict[str, Any], out: Path) -> None:
    target = out / "tokenizer"
    if (target / "tokenizer.json").exists():
        print(f"tokenizer: already trained in {target}")
        return
    settings = recipe["tokenizer"]
    rng = random.Random(f"tokenizer:{recipe['seed']}")
    files = data.stdlib_train_files()
    rng.shuffle(files)
    budget, sample, sampled_files = settings.get("sample_chars", 4_000_000), [], []
    for path in files:
        if budget <= 0:
            break
        text = data.read_source(path)
        if text:
            sample.append(text[:budget])
            sampled_files.append(path)
            budget -= len(sample[-1])
    # Chat text too, so common English words and the answers' phrasing get their own tokens.
    sample += [
        m["content"]
        for c in data.python_qa(sampled_files, rng)[: settings.get("sample_chats", 4000)]
        for m in c.messages
    ]
    sample += [m["content"] for c in data.identity_conversations(200, rng) for m in c.messages]
    started = time.perf_counter()
    tokenizer = Tokenizer.train(sample, settings["vocab_size"])
    tokenizer.save(target)
    print(
        f"tokenizer: {tokenizer.vocab_size} ids trained on {sum(map(len, sample)):,} chars "
        f"in {time.perf_counter() - started:.1f}s -> {target}"
    )


def base_stage(recipe: dict[str, Any], out: Path) -> None:
    """The pretrained base with DeepSeek's special tokens added to its vocabulary, as `base/model` (the stage
    after it starts from there) and `tokenizer/` (what every later stage encodes with)."""
    target = out / "base" / "model"
    if (target / "model.safetensors").exists() and (out / "tokenizer" / "tokenizer.json").exists():
        print(f"base: already in {target}")
    else:
        started = time.perf_counter()
        base = load_checkpoint(recipe["base"]["model"], dtype="float32")
        model, tokenizer = extend_vocabulary(base.model, base.tokenizer)
        save_checkpoint(model, tokenizer, target, dtype="float32", generation_config={"trained_steps": 0})
        tokenizer.save(out / "tokenizer")
        print(
            f"base: {recipe['base']['model']} with {model.config.vocab_size - base.model.config.vocab_size} "
            f"special tokens added ({model.config.vocab_size} ids) in {time.perf_counter() - started:.0f}s -> {target}"
        )
    distill = recipe["base"].get("self_distill")
    if distill:  # the base's own answers, for SFT to keep its behaviour (nanoseek.train.self_distill says why)
        path = out / "base" / self_distill.RECORDS_FILE
        requests = self_distill.general_requests(distill["requests"], recipe["seed"])
        questions = self_distill.short_questions(distill.get("questions", 0), recipe["seed"])
        self_distill.distill(recipe["base"]["model"], requests, path, max_tokens=distill["max_tokens"])
        self_distill.distill(
            recipe["base"]["model"], questions, path, max_tokens=distill["max_tokens"], kind="question"
        )
        kept = self_distill.read_distilled(path)
        print(
            f"base: self-distilled answers kept: {sum(c.source == 'self_distill' for c in kept)} of {len(requests)} "
            f"general requests and {sum(c.source != 'self_distill' for c in kept)} of {len(questions)} short "
            f"questions -> {path}"
        )


def load_tokenizer(out: Path) -> Tokenizer:
    if not (out / "tokenizer" / "tokenizer.json").exists():
        raise FileNotFoundError(f"no tokenizer in {out / 'tokenizer'}: run `nanoseek train tokenizer` first")
    return Tokenizer.load(out / "tokenizer")


def build_rows(stage: str, recipe: dict[str, Any], tokenizer: Tokenizer, out: Path) -> tuple[PackedRows, PackedRows]:
    """Tokenize and pack a stage's training data and its held-out evaluation data."""
    settings, seed = stage_settings(recipe, stage), stage_seed(recipe, stage)
    seq_len = settings["seq_len"]
    if stage_kind(recipe, stage) == "pretrain":
        corpus = data.pretrain_corpus(settings["mixture"], seed)
        documents = data.corpus_documents(corpus, tokenizer, pretraining=True, seed=seed)
        # Held-out loss on held-out stdlib files: how well the model predicts code it has never seen.
        texts = data.code_texts(stdlib_files("heldout"), max_chars=200_000)
        # Only the first eval_rows rows are ever scored: tokenize just enough text (~6 chars/token at most).
        budget = 6 * (settings.get("eval_rows", 64) + 1) * (seq_len + 1)
        kept = []
        while texts and budget > 0:
            kept.append(texts.pop(0)[:budget])
            budget -= len(kept[-1])
        heldout = data.Corpus(texts=kept)
        eval_documents = data.corpus_documents(heldout, tokenizer, pretraining=True, seed=seed)
        return pack_stream(documents, seq_len), pack_stream(eval_documents, seq_len)
    distilled = self_distill.read_distilled(out / "base" / self_distill.RECORDS_FILE)
    for key, source in data.SELF_DISTILL_SOURCES.items():
        held = sum(c.source == source for c in distilled)
        if settings["mixture"].get(key, 0) > held:
            raise FileNotFoundError(
                f"{stage}'s mixture asks for {settings['mixture'][key]} {key} answers; "
                f"{out / 'base' / self_distill.RECORDS_FILE} holds {held}: run the base stage with [base] self_distill"
            )
    direct_copies = settings.get("direct_copies", "answer")
    corpus = data.sft_corpus(settings["mixture"], seed, settings.get("widened_share", 0.0), distilled, direct_copies)
    documents = data.corpus_documents(corpus, tokenizer, pretraining=False, seed=seed)
    heldout = data.heldout_corpus(settings["mixture"], SFT_EVAL_ITEMS_PER_SUITE, seed, direct_copies)
    eval_documents = data.corpus_documents(heldout, tokenizer, pretraining=False, seed=seed)
    return (
        pack_documents(documents, seq_len, tokenizer.pad_id),
        pack_documents(eval_documents, seq_len, tokenizer.pad_id),
    )


def cached_rows(
    stage_dir: Path, stage: str, recipe: dict[str, Any], tokenizer: Tokenizer, rank: int, world_size: int
) -> tuple[PackedRows, PackedRows]:
    """Build the packed rows once (rank 0) and reuse them: resume must see exactly the same data."""
    train_path, eval_path = stage_dir / "train_rows.npz", stage_dir / "eval_rows.npz"
    if rank == 0 and not (train_path.exists() and eval_path.exists()):
        started = time.perf_counter()
        train_rows, eval_rows = build_rows(stage, recipe, tokenizer, stage_dir.parent)
        stage_dir.mkdir(parents=True, exist_ok=True)
        eval_rows.save(eval_path)
        train_rows.save(train_path)
        print(
            f"{stage}: {len(train_rows):,} train rows ({train_rows.target_tokens():,} target tokens), "
            f"{len(eval_rows):,} held-out rows, built in {time.perf_counter() - started:.0f}s"
        )
    if world_size > 1:
        dist.barrier()
    return PackedRows.load(train_path), PackedRows.load(eval_path)


def new_model(recipe: dict[str, Any], tokenizer: Tokenizer) -> torch.nn.Module:
    config = ModelConfig(
        vocab_size=tokenizer.vocab_size,
        bos_token_id=tokenizer.bos_id,
        eos_token_id=tokenizer.eos_id,
        pad_token_id=tokenizer.pad_id,
        **recipe["model"],
    )
    torch.manual_seed(recipe["seed"])
    model = Transformer(config)
    model.init_weights()
    return model


def previous_model(stage: str, recipe: dict[str, Any], out: Path) -> torch.nn.Module:
    start = init_stage(recipe, stage)
    previous = out / start / "model"
    if (previous / "model.safetensors").exists():
        return load_model(previous, dtype="float32")
    if start not in recipe:  # not a stage: a checkpoint outside the run (directory, GGUF file or named model)
        return load_model(start, dtype="float32")
    raise FileNotFoundError(f"{stage} starts from {previous}, which does not exist: run the previous stage first")


def all_stages(recipe: dict[str, Any]) -> list[str]:
    """What `nanoseek train all` runs, in order: the tokenizer (or the base with its vocabulary extended), then
    the recipe's training stages."""
    return ["base" if "base" in recipe else "tokenizer", *training_stages(recipe)]


def export_step(stage_dir: Path, model: torch.nn.Module, tokenizer: Tokenizer, step: int) -> None:
    save_checkpoint(
        model,
        tokenizer,
        stage_dir / "model",
        dtype="float32",
        generation_config={"max_new_tokens": 512, "trained_steps": step},
    )


def rl_stage(stage: str, recipe: dict[str, Any], out: Path, resume: bool) -> None:
    # Only the RL stage needs the engine, the evaluator and xgrammar: loaded here, the other stages start
    # without them (a third of the start-up of `nanoseek train sft`)

    rank, world_size = distributed_setup()
    tokenizer, stage_dir = load_tokenizer(out), out / stage
    config = rl_config(recipe, stage)
    lora = stage_settings(recipe, stage).get("lora")
    if lora is None:
        model = trained = previous_model(stage, recipe, out)
        rollout_model, export = None, lambda step: export_step(stage_dir, model, tokenizer, step)
    else:
        model, trained = continued_lora_model(stage, recipe, out, tokenizer, lora)

        def rollout_model() -> torch.nn.Module:
            return copy.deepcopy(trained).merge_and_unload()

        def export(step: int) -> None:
            save_adapter(trained, stage_dir / "adapter", recipe, step)

    last = train_rl(
        trained,
        tokenizer,
        config,
        stage_dir,
        resume=resume,
        title=f"{recipe['name']}/{stage}",
        on_checkpoint=export,
        rollout_model=rollout_model,
    )
    if rank == 0 and exported_step(stage_dir / "model") != config.steps:
        if lora is None:
            export_step(stage_dir, model, tokenizer, config.steps)
        else:
            export_lora_stage(stage_dir, trained, recipe, tokenizer, config.steps)
    if world_size > 1:  # the stage after this one starts from the model rank 0 just exported
        dist.barrier()
    if rank == 0:
        print(
            f"{stage}: step {config.steps}, last sampled reward {last.get('reward', float('nan')):.3f} "
            f"-> {stage_dir / 'model'}"
        )


def dpo_stage(stage: str, recipe: dict[str, Any], out: Path, resume: bool) -> None:
    """Preference optimisation (nanoseek.train.dpo) of the adapter of the stage it starts from, against that
    stage's finished model: the reference log-probabilities are computed once, before the first step."""
    tokenizer, stage_dir = load_tokenizer(out), out / stage
    config = dpo_config(recipe, stage)
    start = init_stage(recipe, stage)
    if start in recipe and exported_step(out / start / "model") is None:
        raise FileNotFoundError(
            f"{stage} starts from {start}, which has not finished ({out / start / 'model'} does not exist): "
            f"run `nanoseek train {start}` first"
        )
    _, trained = continued_lora_model(stage, recipe, out, tokenizer, stage_settings(recipe, stage)["lora"])
    pairs, heldout = dpo.prepared_pairs(stage_dir, trained, tokenizer, config, resume=resume)

    def export(step: int) -> None:
        save_adapter(trained, stage_dir / "adapter", recipe, step)

    last = dpo.train_dpo(
        trained,
        pairs,
        heldout,
        config,
        stage_dir,
        tokenizer.pad_id,
        resume=resume,
        title=f"{recipe['name']}/{stage}",
        on_checkpoint=export,
    )
    if exported_step(stage_dir / "model") != config.steps:
        export_lora_stage(stage_dir, trained, recipe, tokenizer, config.steps)
    print(
        f"{stage}: step {config.steps}, loss {last.get('loss', float('nan')):.4f}, reward accuracy "
        f"{last.get('reward_accuracy', float('nan')):.3f} -> {stage_dir / 'adapter'}"
    )


def train_stage(stage: str, recipe: dict[str, Any], out: Path, resume: bool) -> TrainResult:
    rank, world_size = distributed_setup()
    tokenizer = load_tokenizer(out)
    stage_dir = out / stage
    train_rows, eval_rows = cached_rows(stage_dir, stage, recipe, tokenizer, rank, world_size)
    from_scratch = training_stages(recipe)[0] == stage and "init_from" not in recipe[stage]
    model = new_model(recipe, tokenizer) if from_scratch else previous_model(stage, recipe, out)
    lora = stage_settings(recipe, stage).get("lora")
    trained = model if lora is None else lora_model(model, tokenizer, lora, stage_seed(recipe, stage))

    def export(step: int) -> None:
        if lora is None:
            export_step(stage_dir, model, tokenizer, step)
        else:  # a few MB each checkpoint; the merged model is written once, when the stage ends
            save_adapter(trained, stage_dir / "adapter", recipe, step)

    result = train(
        trained,
        train_rows,
        eval_rows,
        loop_config(recipe, stage),
        stage_dir,
        resume=resume,
        title=f"{recipe['name']}/{stage}",
        on_checkpoint=export,
    )
    if rank == 0 and lora is not None and exported_step(stage_dir / "model") != result.step:
        export_lora_stage(stage_dir, trained, recipe, tokenizer, result.step)
    elif rank == 0 and exported_step(stage_dir / "model") != result.step:
        export(result.step)  # a kill after the last checkpoint but before its export: export it now
    if rank == 0:
        held_out = "n/a" if result.eval_loss is None else f"{result.eval_loss:.4f}"
        print(
            f"{stage}: step {result.step}, train loss {result.train_loss:.4f}, held-out loss {held_out}, "
            f"{result.tokens_per_second:,.0f} tokens/s, {result.elapsed_seconds / 60:.1f} min "
            f"-> {stage_dir / 'model'}"
        )
    return result


def lora_model(model: torch.nn.Module, tokenizer: Tokenizer, table: dict[str, Any], seed: int):
    """`model` wrapped for LoRA training (its DeepSeek special-token rows train too); the low-rank matrices
    start from `seed`, so a resumed stage rebuilds the same frozen model before loading what was trained."""
    torch.manual_seed(seed)
    return attach_lora(model, LoraSettings.from_table(table), trainable_token_ids(tokenizer))


def continued_lora_model(stage: str, recipe: dict[str, Any], out: Path, tokenizer: Any, table: dict[str, Any]):
    """(frozen model, LoRA model) for an RL or DPO stage with a `lora` table: the stage before it goes on training
    its own adapter when it has one (so one adapter ships), else a fresh adapter starts on its model."""
    previous = init_stage(recipe, stage)
    if not (out / previous / "adapter").is_dir():
        model = previous_model(stage, recipe, out)
        return model, lora_model(model, tokenizer, table, stage_seed(recipe, stage))
    model = previous_model(previous, recipe, out)  # what the previous stage's adapter was trained on
    return model, adapter.load_adapter(model, out / previous / "adapter", trainable=True)


def save_adapter(peft_model: torch.nn.Module, directory: Path, recipe: dict[str, Any], step: int) -> None:
    base = recipe.get("base", {}).get("model", "")
    adapter.save_adapter(peft_model, directory, base, generation_config={"max_new_tokens": 512, "trained_steps": step})


def export_lora_stage(
    stage_dir: Path, peft_model: torch.nn.Module, recipe: dict[str, Any], tokenizer: Tokenizer, step: int
) -> None:
    """A LoRA stage's end: its adapter at `step`, and base + adapter merged as STAGE/model/ (what the next stage
    starts from), written once. `peft_model` is merged in place: not to be trained on after this."""
    save_adapter(peft_model, stage_dir / "adapter", recipe, step)
    export_step(stage_dir, peft_model.merge_and_unload(), tokenizer, step)


def exported_step(model_dir: Path) -> int | None:
    """The training step of a stage's Hugging Face export (None when there is none)."""
    path = model_dir / "generation_config.json"
    return json.loads(path.read_text()).get("trained_steps") if path.exists() else None


WALL_CLOCK_FILE = "wall_clock.json"


def run_stage(stage: str, recipe: dict[str, Any], out: Path, resume: bool = True) -> None:
    """Run one stage and log the session on the run's wall clock (OUT/wall_clock.json): its start is written
    first and its wall seconds (data building and exports included) when it ends, so that a session killed
    midway shows as one with no seconds instead of vanishing. The sum over a run's sessions is its end-to-end
    time."""
    is_main = distributed_setup()[0] == 0
    clock, started = out / WALL_CLOCK_FILE, time.time()
    if is_main:
        session = (
            len(append_to_json_list(clock, {"stage": stage, "started": utc_timestamp(started), "seconds": None})) - 1
        )
    run_stage_untimed(stage, recipe, out, resume)
    if is_main:
        sessions = json.loads(clock.read_text())
        sessions[session]["seconds"] = round(time.time() - started, 1)
        write_json_atomic(clock, sessions)


def run_stage_untimed(stage: str, recipe: dict[str, Any], out: Path, resume: bool) -> None:
    if stage in ("tokenizer", "base"):
        if distributed_setup()[0] == 0:
            (tokenizer_stage if stage == "tokenizer" else base_stage)(recipe, out)
        if dist.is_initialized():
            dist.barrier()
        return
    stages = all_stages(recipe) + optional_stages(recipe)
    if stage not in stages:
        raise ValueError(f"recipe {recipe['name']} has no stage {stage!r}: expected one of {', '.join(stages)} or all")
    if stage_kind(recipe, stage) == "rl":
        rl_stage(stage, recipe, out, resume)
    elif stage_kind(recipe, stage) == "dpo":
        dpo_stage(stage, recipe, out, resume)
    else:
        train_stage(stage, recipe, out, resume)
