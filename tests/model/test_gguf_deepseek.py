"""GGUF's `deepseek2` architecture (nanoseek/model/gguf_deepseek.py): tiny random DeepSeek-V2/V3 models written as
llama.cpp's converter lays them out (absorbed attn_k_b / attn_v_b, stacked experts, gating function and group
limits in the metadata) read back with the same config and logits, llama.cpp reads our files with our logits,
and older files with the unsplit attn_kv_b read too."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from nanoseek.engine.native_latent import LatentNativeDecoder
from nanoseek.model.gguf_checkpoint import gguf_model_metadata, open_gguf, save_gguf, write_gguf
from nanoseek.model.gguf_deepseek import deepseek2_arrays
from nanoseek.model.loader import load_checkpoint
from nanoseek.model.random_init import make_random_checkpoint
from nanoseek.tokenizer.gguf_vocab import gguf_tokenizer_metadata

PROMPT = "def add(a, b):\n    return a + b\n\nprint(add(1, 2))"
YARN = {
    "rope_type": "yarn",
    "factor": 4.0,
    "original_max_position_embeddings": 16,
    "mscale": 0.707,
    "mscale_all_dim": 0.707,
}
# On shape tiny_mla_moe (V3: full q, 8 experts in 4 groups, top-2 of 2 groups, one shared, layer 0 dense).
CASES = {
    "v3-groups": dict(),
    "v3-qlora-halfsplit-yarn": dict(
        q_lora_rank=24, rope_interleave=False, rope_scaling={**YARN, "mscale": 1.0, "mscale_all_dim": 1.0}
    ),
    "v2-qlora-yarn-scaled": dict(
        model_type="deepseek_v2", q_lora_rank=24, rope_scaling=YARN, routed_scaling_factor=2.0, n_shared_experts=2
    ),
    "v2-group-limited": dict(model_type="deepseek_v2", topk_method="group_limited_greedy", n_group=4, topk_group=2),
}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("deepseek2_sources")
    return {
        name: make_random_checkpoint(
            root / name,
            shape="tiny_mla_moe",
            vocab_size=512,
            seed=2,
            init_std=0.3,
            tie_word_embeddings=False,
            rms_norm_eps=1e-6,  # llama.cpp normalises the q/kv latents with the model's eps, transformers with 1e-6
            max_position_embeddings=64,
            **extra,
        )
        for name, extra in CASES.items()
    }


def logits(model: torch.nn.Module, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.tensor([ids]))[0]


@pytest.mark.parametrize("case", CASES)
def test_a_written_deepseek2_file_reads_back_with_its_config_and_logits(checkpoints, tmp_path, case):
    source = load_checkpoint(checkpoints[case])
    path = save_gguf(source.model, source.tokenizer, tmp_path / "model.gguf", "f32")
    file = open_gguf(path)
    assert file.architecture == "deepseek2" and "blk.0.attn_k_b.weight" in file.tensors
    assert "blk.1.ffn_gate_exps.weight" in file.tensors and "blk.0.attn_kv_b.weight" not in file.tensors
    loaded = load_checkpoint(path)
    ours, theirs = source.model.config, loaded.model.config
    for field in ("model_type", "q_lora_rank", "kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim"):
        assert getattr(theirs, field) == getattr(ours, field), field
    for field in ("n_routed_experts", "n_shared_experts", "num_experts_per_tok", "first_k_dense_replace"):
        assert getattr(theirs, field) == getattr(ours, field), field
    assert (theirs.group_limited, theirs.routed_scaling_factor, theirs.rope_scaling) == (
        ours.group_limited,
        ours.routed_scaling_factor,
        ours.rope_scaling,
    )
    assert theirs.rope_interleave  # a half-split model is stored (and read back) with interleaved rotary rows
    ids = source.tokenizer.encode(PROMPT, add_bos=True)
    torch.testing.assert_close(logits(loaded.model, ids), logits(source.model, ids), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("case", ["v3-groups", "v3-qlora-halfsplit-yarn", "v2-qlora-yarn-scaled"])
def test_llama_cpp_reads_our_deepseek2_files_with_our_logits(checkpoints, tmp_path, case):
    llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python is in the test extra")
    source = load_checkpoint(checkpoints[case])
    path = save_gguf(source.model, source.tokenizer, tmp_path / "model.gguf", "f32")
    f32 = 0  # GGML_TYPE_F32 for llama.cpp's KV cache: its default f16 cache alone moves logits by ~1e-2
    llm = llama_cpp.Llama(
        model_path=str(path), n_ctx=64, logits_all=True, verbose=False, n_threads=1, type_k=f32, type_v=f32
    )
    try:
        ids = source.tokenizer.encode(PROMPT, add_bos=True)
        llm.eval(ids)
        theirs = torch.tensor(np.array(llm.scores[: len(ids)]))
    finally:
        llm.close()
    # Measured: <= 4e-5 on every case (llama.cpp's fp32 kernels sum in another order).
    assert (theirs - logits(source.model, ids)).abs().max() < 2e-4


def test_older_files_with_the_unsplit_kv_b_read_the_same(checkpoints, tmp_path):
    """Files converted before llama.cpp split kv_b for absorption: attn_kv_b, per-head sizes in key/value_length."""
    source = load_checkpoint(checkpoints["v3-groups"])
    config = source.model.config
    arrays = deepseek2_arrays(source.model)
    for layer in range(config.num_hidden_layers):
        arrays.pop(f"blk.{layer}.attn_k_b.weight"), arrays.pop(f"blk.{layer}.attn_v_b.weight")
        kv_b = source.model.layers[layer].self_attn.kv_b_proj.weight
        arrays[f"blk.{layer}.attn_kv_b.weight"] = np.ascontiguousarray(kv_b.detach().numpy())
    metadata = gguf_model_metadata(config) | gguf_tokenizer_metadata(source.tokenizer)
    for key in ("attention.key_length_mla", "attention.value_length_mla"):
        del metadata[f"deepseek2.{key}"]
    metadata["deepseek2.attention.key_length"] = config.qk_head_dim
    metadata["deepseek2.attention.value_length"] = config.v_head_dim
    path = write_gguf(tmp_path / "legacy.gguf", "deepseek2", metadata, {n: (a, None) for n, a in arrays.items()})
    loaded = load_checkpoint(path)
    ids = source.tokenizer.encode(PROMPT, add_bos=True)
    torch.testing.assert_close(logits(loaded.model, ids), logits(source.model, ids), atol=1e-5, rtol=1e-5)


def test_a_q8_0_deepseek2_file_serves_through_the_native_latent_step(checkpoints, tmp_path):
    from nanoseek.engine import Engine, Request, SamplingParams

    source = load_checkpoint(checkpoints["v3-groups"])
    path = save_gguf(source.model, source.tokenizer, tmp_path / "q8.gguf", "q8_0")
    assert open_gguf(path).tensors["blk.0.attn_q.weight"].type_name == "Q8_0"
    loaded = load_checkpoint(path)  # dequantized to float32: the latent step has no quantized kernels
    ids = source.tokenizer.encode(PROMPT, add_bos=True)
    engine = Engine(loaded.model, loaded.tokenizer, max_batch=2, kv_budget_tokens=256)
    try:
        assert isinstance(engine.native, LatentNativeDecoder)
        [done] = engine.generate([Request(ids, SamplingParams(max_tokens=8, temperature=0, ignore_eos=True))])
    finally:
        engine.shutdown()
    with torch.no_grad():  # the same greedy tokens as the model's own forward
        expected = list(ids)
        for _ in range(8):
            expected.append(int(logits(loaded.model, expected)[-1].argmax()))
    assert done.token_ids == expected[len(ids) :]
