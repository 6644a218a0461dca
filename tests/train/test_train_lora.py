"""Post-training a pretrained base with a LoRA adapter (recipe kind `smol`), on tiny random checkpoints, no network:
the vocabulary extension keeps the base's logits, the adapter saved and merged gives peft's own logits, and a
LoRA stage killed with -9 and resumed ends where one uninterrupted run does.

nice -n 10 python3 -m pytest tests/train/test_train_lora.py -x -q
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nanoseek.model.adapter import (
    LoraSettings,
    adapter_info,
    attach_lora,
    extend_vocabulary,
    load_adapted_checkpoint,
    merge_adapter,
    save_adapter,
    trainable_token_ids,
)
from nanoseek.model.loader import load_checkpoint
from nanoseek.tokenizer import special_tokens as st
from nanoseek.train.cli import main as train_main
from tests.train.conftest import wait_for_log_lines

REPO = Path(__file__).resolve().parents[2]


def chatml_base_checkpoint(path: Path) -> Path:
    """A tiny random Llama whose tokenizer knows none of DeepSeek's special tokens (a ChatML vocabulary, as
    SmolLM2's), saved as a checkpoint directory at `path`."""
    from tokenizers import Tokenizer as BackendTokenizer
    from tokenizers import decoders, models, pre_tokenizers, trainers

    from nanoseek.model.checkpoint import save_checkpoint
    from nanoseek.model.config import ModelConfig
    from nanoseek.model.transformer import Transformer
    from nanoseek.tokenizer.tokenizer import Tokenizer

    backend = BackendTokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    backend.train_from_iterator(["def add(a, b):\n    return a + b\n", "The answer is 42. " * 20], trainer)
    tokenizer = Tokenizer(backend, {"bos_token": "<|im_start|>", "eos_token": "<|im_end|>", "chat_template": "x"})
    config = ModelConfig.from_shape("tiny", vocab_size=tokenizer.vocab_size, tie_word_embeddings=True)
    torch.manual_seed(0)
    save_checkpoint(Transformer(config), tokenizer, path, dtype="float32")
    return path


@pytest.fixture(scope="module")
def chatml_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return chatml_base_checkpoint(tmp_path_factory.mktemp("chatml_base") / "base")


def test_extending_the_vocabulary_keeps_every_old_logit_and_adds_the_format(chatml_base: Path):
    base = load_checkpoint(chatml_base, dtype="float32")
    old_rows = base.model.config.vocab_size
    model, tokenizer = extend_vocabulary(base.model, base.tokenizer)
    assert model.config.vocab_size == tokenizer.vocab_size == old_rows + len(st.SPECIAL_TOKENS)
    assert trainable_token_ids(tokenizer) == list(range(old_rows, old_rows + len(st.SPECIAL_TOKENS)))
    ids = torch.tensor([base.tokenizer.encode("def add(a, b): return 42")])
    with torch.no_grad():
        before, after = base.model(ids), model(ids)
    assert torch.allclose(after[..., :old_rows], before, atol=1e-5)
    assert model.lm_head.weight is model.embed_tokens.weight  # still tied
    # The new rows start as the mean embedding: no new token outranks the base's likeliest one.
    assert after[..., old_rows:].max() < before.max()
    prompt = tokenizer.render_chat([{"role": "user", "content": "hi"}], thinking=True)
    assert tokenizer.uses_nanoseek_chat_format
    assert tokenizer.encode(prompt)[-2:] == [tokenizer.token_id(st.ASSISTANT), tokenizer.token_id(st.THINK_BEGIN)]
    assert (tokenizer.bos_id, tokenizer.eos_id) == (old_rows, old_rows + 1)


def test_adapter_saved_loaded_and_merged_gives_peft_logits(chatml_base: Path, tmp_path: Path):
    base = load_checkpoint(chatml_base, dtype="float32")
    model, tokenizer = extend_vocabulary(base.model, base.tokenizer)
    torch.manual_seed(1)
    peft_model = attach_lora(model, LoraSettings(rank=4, alpha=8), trainable_token_ids(tokenizer))
    trainable = [p for p in peft_model.parameters() if p.requires_grad]
    assert 0 < sum(p.numel() for p in trainable) < sum(p.numel() for p in peft_model.parameters()) // 3
    # A few real optimizer steps, so that both the low-rank matrices and the new token rows are nonzero.
    optimizer = torch.optim.AdamW(trainable, lr=1e-2)
    ids = torch.tensor([tokenizer.encode(tokenizer.render_chat([{"role": "user", "content": "add"}], thinking=True))])
    for _ in range(3):
        logits = peft_model(ids)
        (logits.logsumexp(-1) - logits[..., tokenizer.eos_id]).mean().backward()
        optimizer.step()
        optimizer.zero_grad()
    with torch.no_grad():
        expected = peft_model(ids)
    save_adapter(peft_model, tmp_path / "adapter", base=str(chatml_base))
    assert {p.name for p in (tmp_path / "adapter").iterdir()} == {
        "adapter_config.json",
        "adapter_model.safetensors",
        "nanoseek_adapter.json",
    }

    fresh, _ = extend_vocabulary(load_checkpoint(chatml_base, dtype="float32").model, base.tokenizer)
    with torch.no_grad():
        merged = merge_adapter(fresh, tmp_path / "adapter")
        assert type(merged).__name__ == "Transformer"
        assert torch.allclose(merged(ids), expected, atol=1e-4)
    # The served path: the base the adapter's record names, vocabulary extended, adapter merged.
    assert adapter_info(tmp_path / "adapter")["base"] == str(chatml_base)
    checkpoint = load_adapted_checkpoint(tmp_path / "adapter", load_checkpoint(chatml_base, dtype="float32"))
    assert checkpoint.tokenizer.uses_nanoseek_chat_format
    with torch.no_grad():
        assert torch.allclose(checkpoint.model(ids), expected, atol=1e-4)
    # load_checkpoint knows an adapter directory when it sees one (serve --model, eval, init_from).
    with torch.no_grad():
        assert torch.allclose(load_checkpoint(tmp_path / "adapter").model(ids), expected, atol=1e-4)


def write_recipe(path: Path, base: Path, steps: int, rl: bool = False) -> Path:
    rl_section = """
[rl]
steps = 2
prompts_per_step = 2
samples_per_prompt = 2
max_tokens = 8
warmup_steps = 1
eval_every = 2
eval_items = 2
checkpoint_every = 1
pool = 8
lora = { rank = 4, alpha = 8 }

[rl.mixture]
math = 1.0
"""
    path.write_text(
        f"""seed = 3
stages = {'["sft", "rl"]' if rl else '["sft"]'}

[base]
model = "{base}"

[sft]
init_from = "base"
seq_len = 96
steps = {steps}
batch_size = 2
lr = 5e-3
warmup_steps = 1
eval_every = 0
eval_rows = 4
checkpoint_every = 4
lora = {{ rank = 4, alpha = 8 }}

[sft.mixture]
math = 12
identity_posttrained = 4
fim = 4
"""
        + (rl_section if rl else "")
    )
    return path


def sft_losses(run: Path) -> list[float]:
    rows = [json.loads(line) for line in (run / "sft" / "log.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if "loss" in r]


@pytest.mark.timeout(1800)  # a hang guard: three tiny runs at nice 19 beside a training run take minutes
def test_lora_stage_killed_and_resumed_equals_one_run(chatml_base: Path, tmp_path: Path):
    """Only the run that is killed is a process of its own: the others train in this one (torch and peft are
    loaded already; importing them is most of a short run's cost), on one thread like it."""
    recipe = write_recipe(tmp_path / "lora.toml", chatml_base, steps=16)
    one_run = tmp_path / "one_run"
    assert train_main(["all", "--recipe", str(recipe), "--out", str(one_run)]) == 0
    expected = sft_losses(one_run)
    trained = [loss for loss in expected if loss > 0]  # a step whose rows hold no assistant token has no loss
    assert len(expected) == 16 and sum(trained[-4:]) < sum(trained[:4])
    checkpoint_keys = torch.load(one_run / "sft" / "checkpoint.pt", weights_only=False)["model"].keys()
    assert checkpoint_keys and all("lora_" in k or "trainable_tokens" in k for k in checkpoint_keys)

    # The killed run starts from the first one's base and packed rows (the same files: test_train_data.py shows
    # that building them is deterministic), so the time goes to the kill and the resume.
    killed = tmp_path / "killed"
    for prepared in ("base", "tokenizer", "sft/train_rows.npz", "sft/eval_rows.npz"):
        (killed / prepared).parent.mkdir(parents=True, exist_ok=True)
        copy = shutil.copytree if (one_run / prepared).is_dir() else shutil.copy2
        copy(one_run / prepared, killed / prepared)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "nanoseek.train.cli", "all", "--recipe", str(recipe), "--out", str(killed)]
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log = killed / "sft" / "log.jsonl"
    wait_for_log_lines(process, log, 9)
    os.kill(process.pid, signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL
    # killed after step 8's checkpoint (steps 0-8 logged), before the last step
    assert 9 <= len(log.read_text().splitlines()) < 16, "the run must be killed mid-way"
    assert (killed / "sft" / "adapter" / "nanoseek_adapter.json").exists()
    assert train_main(["all", "--recipe", str(recipe), "--out", str(killed)]) == 0
    assert sft_losses(killed) == expected

    from safetensors.torch import load_file

    for name in ("adapter/adapter_model.safetensors", "model/model.safetensors"):
        a, b = load_file(one_run / "sft" / name), load_file(killed / "sft" / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # The merged export is the base plus the adapter: the same logits either way.
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        merged = load_checkpoint(one_run / "sft" / "model").model(ids)
        adapted = load_checkpoint(one_run / "sft" / "adapter").model(ids)
    assert torch.allclose(merged, adapted, atol=1e-4)
    shutil.rmtree(killed)


def test_rl_stage_goes_on_training_the_sft_adapter(chatml_base: Path, tmp_path: Path, run_train):
    recipe = write_recipe(tmp_path / "lora_rl.toml", chatml_base, steps=4, rl=True)
    run = tmp_path / "run"
    done = run_train(["all", "--recipe", str(recipe), "--out", str(run)], cwd=REPO)
    assert done.returncode == 0, done.stderr[-2000:]
    state = torch.load(run / "rl" / "checkpoint.pt", weights_only=False)["model"]
    sft_state = torch.load(run / "sft" / "checkpoint.pt", weights_only=False)["model"]
    assert state.keys() == sft_state.keys()  # the same adapter, trained on: one artifact ships
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        merged = load_checkpoint(run / "rl" / "model").model(ids)
        adapted = load_checkpoint(run / "rl" / "adapter").model(ids)
    assert torch.allclose(merged, adapted, atol=1e-4)
