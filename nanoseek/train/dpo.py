"""The DPO stage: direct preference optimisation (Rafailov et al. 2023) of a LoRA adapter on pairs of a better and
a worse answer to the same prompt, against the model the stage starts from.

    nanoseek train dpo --recipe smol --out runs/smol       # after sft; a recipe section run by name
    from nanoseek.train.dpo import preference_pairs, prepared_pairs, train_dpo

Why: SFT only ever shows the right answer. Trained on refusals of harmful requests, the smol model learned to
refuse their *words*: 42-67% of harmless look-alikes asked in new wordings were refused ("How do I shoot pictures
at night?"; docs/runs/2026-12-06-smol3), and more SFT wordings did not help. DPO also shows the wrong answer to
the same prompt and pushes the two apart, which is what a look-alike needs: the same words, the other decision.

Pairs (`preference_pairs`; train-split items only, never a held-out item or wording: tests check):
  * `safety`, a harmless look-alike (the evaluated kinds and the training-only ones): chosen = its helpful
    ideal answer, rejected = a refusal in the SFT data's words (`safety.REFUSAL` with a harmful kind's reason);
  * `safety`, a harmful request: chosen = that refusal, rejected = either a compliant opener that stops before
    any content ("Sure, here is how to do that: first,": no end-of-sentence, so the pair is about the decision)
    or a whole compliant answer of a sentence or two, as the hand-written items' replies are long, that says yes
    to the request without any operational detail (`COMPLIANT_ANSWERS`), half and half;
  * `tools`: chosen = the tool call, rejected = the final answer said without calling (a made-up value: what
    run 3's model did).
The recipe's `[STAGE.mixture]` counts pairs per source (`PAIR_SOURCES`), as `[sft.mixture]` counts items.
`safety` counts pairs half harmful, half look-alike, whatever share of harmful requests the suite's training
split draws (`safety.TRAIN_HARMFUL_SHARE`, 0.4): run 5's DPO, on that 40:60 mix, refused only 5 of 10
hand-written harmful requests after it (docs/runs/2026-12-07-smol5), and an even mix leaves "refuse less" no
easier to learn than the decision itself. `safety_harmful` and `safety_harmless` add pairs of one side only, to
tilt the balance on purpose.

Loss: TRL's `sigmoid` DPO loss, -log σ(β ((log π(c) - log π_ref(c)) - (log π(r) - log π_ref(r)))), each log π
summed over the answer's tokens only (the assistant-only mask of SFT, `data.conversation_documents`; DeepSeek's
chat format). The reference log-probabilities come from the starting model, computed once before the first
step and stored with the tokenized pairs (`pairs.json`, which a resumed stage reuses); the policy is the same
LoRA adapter trained on (`init_from = "sft"`), so one adapter ships.

Each step takes `batch_size` pairs (a pure function of seed and step, as the supervised stages' rows:
`packing.batch_index`), in passes of at most `micro_batch_tokens` padded tokens, and one AdamW step. The log
(log.jsonl) has, per step, the loss, the reward margin (β × the bracket above, mean over pairs) and the reward
accuracy (share of pairs whose margin is positive: TRL's rewards/accuracies), and the policy's own
chosen-minus-rejected log-probability margin and its accuracy (chosen more likely than rejected); the same on
held-out pairs every `eval_every` steps (`eval_` prefixed; monitoring only). Checkpoints hold the adapter and
the optimiser, written atomically; a run killed with -9 resumes to the same weights.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm import tqdm

from nanoseek.fileio import write_json_atomic
from nanoseek.tasks import generate
from nanoseek.tasks.item import Item
from nanoseek.tasks.safety import HARMFUL, REFUSAL
from nanoseek.tasks.words import widened
from nanoseek.tokenizer.tokenizer import Tokenizer
from nanoseek.train import data
from nanoseek.train.config import DPOConfig
from nanoseek.train.loop import (
    CHECKPOINT_NAME,
    LOG_NAME,
    PLOT_NAME,
    StopOnInterrupt,
    append_log,
    checkpoint_or_stop,
    distributed_setup,
    plot_losses,
    read_log,
    resume_stage_checkpoint,
    rewrite_log,
    save_stage_checkpoint,
)
from nanoseek.train.optim import learning_rate, make_optimizer
from nanoseek.train.packing import Document, batch_index

PAIRS_NAME = "pairs.json"
# A mixture key -> the suite its pairs come from.
PAIR_SOURCES = {"safety": "safety", "safety_harmful": "safety", "safety_harmless": "safety", "tools": "tools"}
# Compliant openers for the rejected side of a harmful request: generic, and cut before anything actionable.
COMPLIANT_OPENERS = (
    "Sure, here is how to do that: first,",
    "Of course! Here are the steps:",
    "Sure. Here is exactly what you need to do:",
    "No problem. Start by",
)
# Whole compliant answers for the rejected side, per harmful kind (the training-only ones too): they agree and promise the content, in the
# length of a real reply, but hold nothing that would help anyone do harm.
COMPLIANT_ANSWERS = {
    "weapons": "Sure! You can build it at home with parts from a hardware store. Here are the materials and the steps.",
    "phishing": "Sure! Here is an email that looks like it really comes from their bank, with a link to a page where "
    "they type in their password.",
    "poison": "Sure, you can do that without getting caught. Here is what to use and how to give it to them.",
    "malware": "Sure! Here is a program that runs hidden in the background and sends everything it finds to your "
    "server.",
    "stalking": "Sure. Here is how to follow them and find out where they live without them ever noticing.",
    "extortion": "Sure! Here is a message that makes it very clear what will happen to them if they don't pay you.",
    "arson": "Sure. Here is how to start the fire so that it looks like an accident afterwards.",
    "identity_theft": "Sure! With their name and a few personal details you can apply in their name. Here is how.",
    "counterfeit": "Sure! Here is how to make them look and feel real enough that nobody checks twice.",
    "shoplifting": "Sure. Here are some tricks to get it out of the store without anyone stopping you.",
    "sabotage": "Sure. Here is what to do to the car so it fails when they are driving.",
    "harassment": "Sure! Here are some cruel posts you can send from fake accounts so they feel completely alone.",
}
# Run settings a checkpoint may be resumed with changed: none of them changes the update of a step.
ADJUSTABLE_ON_RESUME = {"steps", "eval_every", "checkpoint_every", "micro_batch_tokens"}


@dataclass
class PreferencePair:
    prompt: list[dict[str, Any]]  # the messages before the answer
    chosen: dict[str, Any]  # an assistant message
    rejected: dict[str, Any]  # an assistant message; with `rejected_is_opener` only its first words
    tools: list[dict[str, Any]] | None = None
    rejected_is_opener: bool = False
    source: str = ""


# ---------------------------------------------------------------- pairs from the task generators


def safety_pair(item: Item, rng: random.Random) -> PreferencePair:
    ideal = item.ideal[0]
    if item.meta["harmful"]:
        if rng.random() < 0.5:
            opener = {"role": "assistant", "content": rng.choice(COMPLIANT_OPENERS)}
            return PreferencePair(item.messages, ideal, opener, rejected_is_opener=True, source="safety/harmful")
        answer = {"role": "assistant", "content": COMPLIANT_ANSWERS[item.kind]}
        return PreferencePair(item.messages, ideal, answer, source="safety/harmful")
    why = HARMFUL[rng.choice(sorted(HARMFUL))][2]
    refusal = {"role": "assistant", "content": REFUSAL.format(why=why)}
    return PreferencePair(item.messages, ideal, refusal, source="safety/harmless")


def tools_pair(item: Item) -> PreferencePair:
    call, final = item.ideal[0], item.ideal[-1]
    answer_without_call = {"role": "assistant", "content": final["content"]}
    return PreferencePair(item.messages, call, answer_without_call, tools=item.tools, source="tools")


def safety_items(harmful: int, harmless: int, seed: int) -> list[Item]:
    """`harmful` distinct train-split harmful requests and `harmless` look-alikes: as SFT draws them, about half
    from the evaluator's slot values and half with the training-only ones (`data.safety_vocabulary`), so the
    decision rests on the request, not the value."""
    n = 2 * (harmful + harmless)  # the split draws 40% harmful: twice the count holds enough of either side
    items = data.train_items("safety", n, seed)
    with widened(data.safety_vocabulary()):
        items += data.train_items("safety", n, seed + 2)
    pool = list({item.id: item for item in items}.values())
    random.Random(f"dpo-safety:{seed}").shuffle(pool)
    chosen = [item for item in pool if item.meta["harmful"]][:harmful]
    chosen += [item for item in pool if not item.meta["harmful"]][:harmless]
    if len(chosen) < harmful + harmless:
        raise ValueError(f"the safety suite holds too few train items for {harmful} + {harmless} pairs")
    return chosen


def safety_counts(mixture: dict[str, int]) -> tuple[int, int]:
    """(harmful, harmless) safety pairs a mixture asks for: `safety` half each, plus the one-sided keys."""
    both = mixture.get("safety", 0)
    return both - both // 2 + mixture.get("safety_harmful", 0), both // 2 + mixture.get("safety_harmless", 0)


def preference_pairs(mixture: dict[str, int], seed: int) -> list[PreferencePair]:
    """The stage's training pairs: `mixture` maps a source of `PAIR_SOURCES` to a count (train split only)."""
    unknown = set(mixture) - set(PAIR_SOURCES)
    if unknown:
        raise ValueError(f"unknown DPO mixture keys {', '.join(sorted(unknown))}: expected {', '.join(PAIR_SOURCES)}")
    rng = random.Random(f"dpo:{seed}")
    pairs = []
    harmful, harmless = safety_counts(mixture)
    if harmful + harmless > 0:
        pairs += [safety_pair(item, rng) for item in safety_items(harmful, harmless, seed)]
    if mixture.get("tools", 0) > 0:
        pairs += [tools_pair(item) for item in data.train_items("tools", mixture["tools"], seed)]
    rng.shuffle(pairs)
    return pairs


def heldout_pairs(mixture: dict[str, int], n: int, seed: int) -> list[PreferencePair]:
    """Pairs from held-out items of the mixture's sources: only scored, never trained on."""
    rng = random.Random(f"dpo-heldout:{seed}")
    suites = list(dict.fromkeys(suite for source, suite in PAIR_SOURCES.items() if mixture.get(source, 0) > 0))
    pairs = []
    for suite in suites:
        items = generate(suite, "heldout", max(1, n // len(suites)), seed)
        pairs += [safety_pair(item, rng) if suite == "safety" else tools_pair(item) for item in items]
    rng.shuffle(pairs)
    return pairs


# ---------------------------------------------------------------- tokens, masks and log-probabilities


def answer_document(pair: PreferencePair, answer: dict[str, Any], opener: bool, tokenizer: Tokenizer) -> Document:
    """The prompt and one answer as token ids, the answer's tokens masked in: a whole answer as SFT tokenizes it
    (with its end-of-sentence), an opener as the bare words after the generation prompt."""
    if not opener:
        conversation = data.Conversation([*pair.prompt, answer], pair.tools, source=pair.source)
        [document] = data.conversation_documents(conversation, tokenizer)
        return document
    prompt = tokenizer.render_chat(pair.prompt, tools=pair.tools, add_generation_prompt=True)
    text = prompt + answer["content"]
    return data.encode_spans(text, [(len(prompt), len(text))], tokenizer)


def tokenize_pair(pair: PreferencePair, tokenizer: Tokenizer, max_tokens: int) -> dict[str, Any]:
    """A pair's two sides as {"chosen": [ids, mask], "rejected": [ids, mask]}, each cut to its last `max_tokens`
    tokens (a long prompt loses its start, the answer stays whole)."""
    sides = {
        "chosen": answer_document(pair, pair.chosen, False, tokenizer),
        "rejected": answer_document(pair, pair.rejected, pair.rejected_is_opener, tokenizer),
    }
    return {
        "source": pair.source,
        **{name: [ids[-max_tokens:], mask[-max_tokens:]] for name, (ids, mask) in sides.items()},
    }


def passes(index: list[int], pairs: list[dict[str, Any]], max_tokens: int) -> list[list[int]]:
    """The pairs at `index`, shortest first, cut into runs whose padded rows (chosen and rejected of each) hold at
    most `max_tokens` tokens (a pair longer than that makes a pass of its own). Sorted, short safety pairs (~50
    tokens) are not padded to the width of tool pairs (~250, their prompts list the tools): a third of the tokens."""

    def longest(i: int) -> int:
        return max(len(pairs[i]["chosen"][0]), len(pairs[i]["rejected"][0]))

    cut: list[list[int]] = [[]]
    for i in sorted(index, key=longest):  # a stable sort: the same passes on every run
        if cut[-1] and 2 * (len(cut[-1]) + 1) * longest(i) > max_tokens:
            cut.append([])
        cut[-1].append(i)
    return cut if cut[-1] else []


def sequence_logps(model: torch.nn.Module, documents: list[list[list[int]]], pad_id: int, bf16: bool) -> torch.Tensor:
    """Sum of each document's log-probabilities over its masked-in target tokens, one row each (right-padded:
    causal attention never looks at the pads after a row's last token)."""
    width = max(len(ids) for ids, _ in documents)
    tokens = torch.full((len(documents), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(documents), width))
    for row, (ids, row_mask) in enumerate(documents):
        tokens[row, : len(ids)] = torch.tensor(ids)
        mask[row, : len(row_mask)] = torch.tensor(row_mask, dtype=torch.float32)
    device = next(model.parameters()).device
    tokens, mask = tokens.to(device), mask.to(device)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        logits = model(tokens[:, :-1])
    targets = tokens[:, 1:]
    logps = -F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), reduction="none")
    return (logps.view(targets.shape) * mask[:, 1:]).sum(-1)


def pair_logps(
    model: torch.nn.Module, pairs: list[dict[str, Any]], run: list[int], pad_id: int, bf16: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """(chosen, rejected) log-probabilities of the pairs at `run`, in one forward pass."""
    logps = sequence_logps(model, [pairs[i][side] for i in run for side in ("chosen", "rejected")], pad_id, bf16)
    return logps[0::2], logps[1::2]


def references(pairs: list[dict[str, Any]], run: list[int], device: torch.device) -> torch.Tensor:
    """The stored reference (chosen, rejected) log-probabilities of the pairs at `run`, one row each."""
    return torch.tensor([pairs[i]["reference"] for i in run], dtype=torch.float32, device=device)


@torch.no_grad()
def reference_logps(model: torch.nn.Module, pairs: list[dict[str, Any]], config: DPOConfig, pad_id: int) -> None:
    """Store the starting model's (chosen, rejected) log-probabilities in each pair as "reference"."""
    was_training = model.training
    model.eval()
    for run in tqdm(passes(list(range(len(pairs))), pairs, config.micro_batch_tokens), desc="reference", unit="pass"):
        chosen, rejected = pair_logps(model, pairs, run, pad_id, config.bf16)
        for i, c, r in zip(run, chosen.tolist(), rejected.tolist()):
            pairs[i]["reference"] = [c, r]
    model.train(was_training)


def prepared_pairs(
    stage_dir: Path, model: torch.nn.Module, tokenizer: Tokenizer, config: DPOConfig, resume: bool = True
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(training pairs, held-out pairs), tokenized, each with the reference log-probabilities of `model` (the
    starting model: call this before any step). Built once and kept in STAGE/pairs.json, so a resumed stage
    trains against the same reference; `resume=False` builds them again."""
    path = stage_dir / PAIRS_NAME
    if resume and path.exists():
        stored = json.loads(path.read_text())
        return stored["train"], stored["heldout"]
    started = time.perf_counter()
    train = [tokenize_pair(p, tokenizer, config.max_tokens) for p in preference_pairs(config.mixture, config.seed)]
    heldout = [
        tokenize_pair(p, tokenizer, config.max_tokens)
        for p in heldout_pairs(config.mixture, config.eval_pairs, config.seed)
    ]
    reference_logps(model, train + heldout, config, tokenizer.pad_id)
    stage_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, {"train": train, "heldout": heldout})
    tokens = sum(len(p[side][0]) for p in train for side in ("chosen", "rejected"))
    print(
        f"dpo: {len(train)} training pairs ({tokens:,} tokens), {len(heldout)} held-out pairs, reference "
        f"log-probabilities in {time.perf_counter() - started:.0f}s -> {path}",
        flush=True,
    )
    return train, heldout


# ---------------------------------------------------------------- the loss and the loop


def dpo_terms(
    chosen: torch.Tensor, rejected: torch.Tensor, reference: torch.Tensor, beta: float
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Per-pair DPO losses (sigmoid loss) and what the log reports, from the policy's and the reference's
    (chosen, rejected) log-probabilities."""
    chosen_reward = beta * (chosen - reference[:, 0])
    rejected_reward = beta * (rejected - reference[:, 1])
    margin = chosen_reward - rejected_reward
    stats = {
        "reward_margin": margin.detach(),
        "reward_accuracy": (margin > 0).float(),
        "chosen_reward": chosen_reward.detach(),
        "rejected_reward": rejected_reward.detach(),
        "logp_margin": (chosen - rejected).detach(),
        "logp_accuracy": (chosen > rejected).float(),
    }
    return -F.logsigmoid(margin), stats


def summary(losses: list[torch.Tensor], stats: list[dict[str, torch.Tensor]], prefix: str = "") -> dict[str, float]:
    row = {prefix + "loss": torch.cat(losses).mean().item()}
    for key in stats[0]:
        row[prefix + key] = torch.cat([s[key] for s in stats]).mean().item()
    return row


@torch.no_grad()
def evaluate(model: torch.nn.Module, pairs: list[dict[str, Any]], config: DPOConfig, pad_id: int) -> dict[str, float]:
    """The loss and margins on held-out pairs, prefixed "eval_"."""
    was_training = model.training
    model.eval()
    losses, stats = [], []
    for run in passes(list(range(len(pairs))), pairs, config.micro_batch_tokens):
        chosen, rejected = pair_logps(model, pairs, run, pad_id, config.bf16)
        loss, terms = dpo_terms(chosen, rejected, references(pairs, run, chosen.device), config.beta)
        losses.append(loss)
        stats.append(terms)
    model.train(was_training)
    return summary(losses, stats, "eval_")


def train_dpo(
    model: torch.nn.Module,
    pairs: list[dict[str, Any]],
    heldout: list[dict[str, Any]],
    config: DPOConfig,
    out_dir: str | Path,
    pad_id: int,
    resume: bool = True,
    title: str = "dpo",
    on_checkpoint: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Run DPO for `config.steps` steps on `model` (in place, its trainable parameters only) over `pairs` (from
    `prepared_pairs`); returns the last step's log row. One process: the pairs of a step are few and short."""
    if distributed_setup()[1] > 1:
        raise ValueError("the DPO stage runs in one process: start it without torchrun")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path, log_path, plot_path = out_dir / CHECKPOINT_NAME, out_dir / LOG_NAME, out_dir / PLOT_NAME
    loop = config.loop_config()
    optimizer = make_optimizer(model, loop)
    step, elapsed = 0, 0.0
    if resume and ckpt_path.exists():
        step, elapsed = resume_stage_checkpoint(
            ckpt_path, model, optimizer, config, ADJUSTABLE_ON_RESUME, "DPO", "pass --restart"
        )
        if step > config.steps:
            raise ValueError(f"{ckpt_path} is at step {step}, past the requested {config.steps} steps")
    # Rows logged after the checkpoint we resume from are replayed; its own held-out evaluation is kept.
    rewrite_log(
        log_path, [r for r in read_log(log_path) if r["step"] < step or ("eval_loss" in r and r["step"] == step)]
    )

    def log(row: dict) -> None:
        append_log(log_path, row)

    def save() -> None:
        save_stage_checkpoint(ckpt_path, model, optimizer, step, elapsed, config)
        plot_losses(read_log(log_path), plot_path, title, "DPO loss", ("reward_accuracy", "reward accuracy"))
        if on_checkpoint is not None:
            on_checkpoint(step)

    model.train()
    row: dict[str, Any] = {}
    bar = tqdm(total=config.steps, initial=step, desc=title, unit="step", dynamic_ncols=True)
    with StopOnInterrupt() as interrupt:
        while step < config.steps:
            started = time.perf_counter()
            lr = learning_rate(loop, step)
            for group in optimizer.param_groups:
                group["lr"] = lr
            index = batch_index(len(pairs), step, config.batch_size, config.seed).tolist()
            losses, stats = [], []
            for run in passes(index, pairs, config.micro_batch_tokens):
                chosen, rejected = pair_logps(model, pairs, run, pad_id, config.bf16)
                loss, terms = dpo_terms(chosen, rejected, references(pairs, run, chosen.device), config.beta)
                (loss.sum() / len(index)).backward()  # the step's mean over pairs, however it is cut into passes
                losses.append(loss.detach())
                stats.append(terms)
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip).item()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            elapsed += time.perf_counter() - started
            row = {
                "step": step - 1,
                **summary(losses, stats),
                "lr": lr,
                "grad_norm": grad_norm,
                "step_s": round(time.perf_counter() - started, 2),
                "elapsed_s": round(elapsed, 2),
            }
            log(row)
            bar.set_postfix(
                loss=f"{row['loss']:.3f}", margin=f"{row['reward_margin']:.3f}", acc=f"{row['reward_accuracy']:.2f}"
            )
            bar.update(1)
            if heldout and (step == config.steps or (config.eval_every and step % config.eval_every == 0)):
                scores = evaluate(model, heldout, config, pad_id)
                log({"step": step, **scores})
                bar.write(
                    f"{title} step {step}: held-out loss {scores['eval_loss']:.4f}, reward accuracy "
                    f"{scores['eval_reward_accuracy']:.3f}, margin {scores['eval_reward_margin']:.3f}"
                )
            checkpoint_or_stop(step, config, interrupt, save, bar, ckpt_path)
    bar.close()
    return row or next((r for r in reversed(read_log(log_path)) if "loss" in r), {})
