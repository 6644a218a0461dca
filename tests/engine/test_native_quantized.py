"""The native decode step over quantized weights (q8_0, q4_1; native_decode.c `project_quantized`).

The C step quantizes each projection's input rows to int8 per block of 32 (as llama.cpp does), so its reference
is the PyTorch model with the same dequantized weights and its activations rounded the same way: the two agree
to float rounding. Against fp32 activations the error stays that of int8 rounding. Both the AVX512-VNNI and
the portable loops are checked, rows do not depend on their batch, and an engine and a live `nanoseek serve`
decode a q8_0 model natively."""

from __future__ import annotations

import os
import subprocess
import sys

import httpx
import native_models
import pytest
import torch
from native_models import decode_side_by_side, ggml_linear, greedy, model_step, new_cache, prefill, rows_alone_too

from nanoseek.engine import Engine, Request, SamplingParams
from nanoseek.engine.kv_cache import SlotKVCache
from nanoseek.engine.native import NativeDecoder, load_library
from nanoseek.model.quantized import GGML_Q4_0, QuantizedLinear, quantize_model
from nanoseek.model.transformer import Transformer
from tests.api.conftest import free_port, wait_until_healthy

SHAPES = {
    # head_dim 16 (vector attention), tied embeddings: the embedding is read from the output head's blocks.
    "llama-gqa-tied": dict(
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=True,
    ),
    # Qwen2's biases, an embedding of its own, a vocabulary that leaves the last column block part-empty.
    "qwen2-bias": dict(
        hidden_size=64,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        model_type="qwen2",
        attention_bias=True,
        mlp_bias=True,
    ),
    # Six q heads of 32 per kv head, hidden 192 (six input blocks).
    "gqa-6-per-kv-head": dict(
        hidden_size=192, intermediate_size=64, num_hidden_layers=2, num_attention_heads=6, num_key_value_heads=1
    ),
}
KERNELS = {"vnni": True, "portable": False}


def random_model(shape: str, qtype: str) -> Transformer:
    return quantize_model(native_models.random_model(**SHAPES[shape]), qtype)


@pytest.fixture
def int8_activations(monkeypatch):
    """The PyTorch model's quantized projections round their inputs as the C step does."""
    monkeypatch.setattr(QuantizedLinear, "forward", ggml_linear)


def decode_against_the_model(model: Transformer, decoder: NativeDecoder, reference: SlotKVCache, steps: int = 4):
    """(model logits, native logits) of `steps` decode steps of three sequences, each row also decoded alone."""
    return decode_side_by_side(model_step(model, reference), rows_alone_too(decoder.step), count=steps)


@pytest.fixture(scope="module", autouse=True)
def library_builds():
    assert load_library() is not None


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("qtype", ["q8_0", "q4_1"])
@pytest.mark.parametrize("shape", SHAPES)
def test_quantized_step_equals_the_model_with_int8_rounded_activations(shape, qtype, kernel, int8_activations):
    if KERNELS[kernel] and not load_library().nanoseek_supports_vnni():
        pytest.skip("this CPU has no AVX512-VNNI: the portable case covers it")
    model = random_model(shape, qtype)
    reference, native_cache = new_cache(model.config), new_cache(model.config)
    decoder = NativeDecoder.build(model, native_cache, max_batch=6, allow_vnni=KERNELS[kernel])
    assert decoder is not None
    assert decoder.kernel == f"{qtype} {'AVX512-VNNI' if KERNELS[kernel] else 'portable'}"
    prefill(model, reference)
    prefill(model, native_cache)
    for expected, got in decode_against_the_model(model, decoder, reference):
        torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
    for layer in range(model.config.num_hidden_layers):
        torch.testing.assert_close(native_cache.keys[layer], reference.keys[layer], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("qtype", ["q8_0", "q4_1"])
def test_int8_activations_stay_close_to_fp32_ones_and_both_kernels_agree(qtype):
    model = random_model("gqa-6-per-kv-head", qtype)
    logits = {}
    for kernel, vnni in KERNELS.items():
        if vnni and not load_library().nanoseek_supports_vnni():
            continue
        reference, native_cache = new_cache(model.config), new_cache(model.config)
        decoder = NativeDecoder.build(model, native_cache, max_batch=6, allow_vnni=vnni)
        prefill(model, reference)
        prefill(model, native_cache)
        results = decode_against_the_model(model, decoder, reference)
        # The model's own forward dequantizes the weights and keeps its activations fp32: int8 rounding of
        # the inputs is the only difference (measured over these shapes: a mean |error| of 1.5-4.9% of the mean
        # |logit|; this random model's weights and norms are far larger than a trained model's).
        for expected, got in results:
            assert (got - expected).abs().mean() < 0.06 * expected.abs().mean()
        logits[kernel] = torch.stack([got for _, got in results])
    if len(logits) == 2:  # the same exact int32 sums, added in another order
        torch.testing.assert_close(logits["vnni"], logits["portable"], atol=1e-5, rtol=1e-5)


def q4_0_model(shape: str) -> Transformer:
    """random_model(shape) with every projection (and the embedding) as a GGUF file's Q4_0 blocks of its weight,
    which nanoseek keeps as q4_1 with m = -8 d."""
    gguf_quants = pytest.importorskip("gguf.quants")
    model = random_model(shape, "q4_1")
    for owner in list(model.modules()):
        for name, layer in list(owner.named_children()):
            if isinstance(layer, QuantizedLinear):
                blocks = torch.from_numpy(gguf_quants.quantize(layer.dequantize().numpy(), GGML_Q4_0))
                q4_0 = QuantizedLinear.from_ggml(GGML_Q4_0, blocks, layer.in_features, layer.bias, layer.row_order)
                setattr(owner, name, q4_0)
    return model


WIDE_BATCH = (
    9  # rows of one step: the VNNI kernel's passes of 4 rows over a weight block (4 + 4 + 1), the portable one's of 8
)


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("blocks", ["q8_0", "q4_1", "q4_0"])
def test_a_wide_batch_gives_every_row_what_it_gets_alone(blocks, kernel, int8_activations):
    if KERNELS[kernel] and not load_library().nanoseek_supports_vnni():
        pytest.skip("this CPU has no AVX512-VNNI: the portable case covers it")
    model = q4_0_model("qwen2-bias") if blocks == "q4_0" else random_model("qwen2-bias", blocks)
    config = model.config
    caches = [
        SlotKVCache(
            config.num_hidden_layers, config.num_key_value_heads, config.head_dim, WIDE_BATCH, 64, torch.float32
        )
        for _ in range(2)
    ]
    decoder = NativeDecoder.build(model, caches[1], max_batch=WIDE_BATCH, allow_vnni=KERNELS[kernel])
    assert (
        decoder.kernel == f"q{'8_0' if blocks == 'q8_0' else '4_1'} {'AVX512-VNNI' if KERNELS[kernel] else 'portable'}"
    )
    slots, positions = list(range(WIDE_BATCH))[::-1], [2 + 3 * row for row in range(WIDE_BATCH)]
    generator = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for slot, length in zip(slots, positions):
            prompt = torch.randint(0, config.vocab_size, (1, length), generator=generator)
            for cache in caches:
                cache.begin_prefill(slot, 0, length)
                model(prompt, torch.arange(length)[None], cache=cache)
    tokens = [(37 * row) % config.vocab_size for row in range(WIDE_BATCH)]
    for _ in range(2):
        expected = model_step(model, caches[0])(tokens, positions, slots)
        got = rows_alone_too(decoder.step)(tokens, positions, slots)  # each row alone: the very same logits
        torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
        tokens, positions = expected.argmax(-1).tolist(), [position + 1 for position in positions]


def test_the_environment_variable_keeps_quantized_projections_off_vnni(monkeypatch):
    model = random_model("llama-gqa-tied", "q8_0")
    monkeypatch.setenv("NANOSEEK_NATIVE_VNNI", "0")
    decoder = NativeDecoder.build(model, new_cache(model.config), max_batch=2)
    assert decoder.kernel == "q8_0 portable"


def test_mixed_formats_each_projection_in_its_own(int8_activations):
    """A GGUF file mixes types (SmolLM2's Q4_1 layers with a Q8_0 output head): each projection keeps its own."""
    model = random_model("llama-gqa-tied", "q4_1")
    exact = random_model("llama-gqa-tied", "q8_0")
    model.lm_head = exact.lm_head
    model.embed_tokens = exact.embed_tokens
    reference, native_cache = new_cache(model.config), new_cache(model.config)
    decoder = NativeDecoder.build(model, native_cache, max_batch=6)
    assert decoder.kernel.startswith("q4_1") and "q8_0" in decoder.kernel
    prefill(model, reference)
    prefill(model, native_cache)
    for expected, got in decode_against_the_model(model, decoder, reference, steps=2):
        torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


def test_a_q8_0_engine_decodes_natively_batched_as_alone_and_its_fallback_dequantizes(engine_checkpoint):
    from nanoseek.model.loader import load_checkpoint

    prompts = [[3, 1, 4, 1, 5, 9, 2, 6], [2, 7, 1, 8, 2], [1, 4, 1, 4, 2, 1, 3, 5], [9, 9, 8]]
    engine = Engine.from_checkpoint(str(engine_checkpoint), dtype="q8_0", max_batch=8)
    fallback = Engine.from_checkpoint(str(engine_checkpoint), dtype="q8_0", max_batch=8, native_decode=False)
    # The fallback's reference: an fp32 model holding the dequantized weights.
    checkpoint = load_checkpoint(engine_checkpoint)
    with torch.no_grad():
        for name, module in fallback.model.named_modules():
            if isinstance(module, QuantizedLinear):
                # (the embedding's table: the output head's blocks, or its own)
                target = checkpoint.model.get_submodule(name.removesuffix(".table"))
                target.weight.copy_(module.dequantize())
    dequantized = Engine(checkpoint.model, checkpoint.tokenizer, max_batch=8, native_decode=False)
    try:
        assert engine.native is not None and engine.native.kernel.startswith("q8_0")
        assert fallback.native is None
        alone = [engine.generate([Request(p, greedy(32))])[0].token_ids for p in prompts]
        batched = [
            c.token_ids for c in engine.generate([Request(p, greedy(32 - 6 * i)) for i, p in enumerate(prompts)])
        ]
        assert batched == [tokens[: 32 - 6 * i] for i, tokens in enumerate(alone)]
        requests = [Request(p, greedy(24)) for p in prompts]
        assert [c.token_ids for c in fallback.generate(requests)] == [
            c.token_ids for c in dequantized.generate(requests)
        ]
        # A prompt longer than max_batch goes through the native step in chunks of max_batch rows; rows do not
        # depend on their batch, so it decodes as when one step takes the whole prompt.
        assert engine.native.quantized
        long_prompt = [(7 * i) % 500 + 3 for i in range(21)]
        wide = Engine.from_checkpoint(str(engine_checkpoint), dtype="q8_0", max_batch=32)
        before = wide.counters["steps"]
        expected = wide.generate([Request(long_prompt, greedy(16))])[0].token_ids
        assert wide.counters["steps"] - before <= 17  # the prompt in one step
        wide.shutdown()
        assert engine.generate([Request(long_prompt, greedy(16))])[0].token_ids == expected
    finally:
        for each in (engine, fallback, dequantized):
            each.shutdown()


def test_live_serve_with_q8_0_decodes_greedily_as_the_engine(engine_checkpoint, tmp_path):
    prompt = "The quick brown fox"
    engine = Engine.from_checkpoint(str(engine_checkpoint), dtype="q8_0")
    try:
        assert engine.native is not None  # the server's engine is built the same way
        tokenizer = engine.tokenizer
        ids = tokenizer.encode((tokenizer.bos_token or "") + prompt)
        params = SamplingParams(max_tokens=24, temperature=0.0, stop_token_ids=list(engine.eos_token_ids))
        expected = engine.generate([Request(ids, params)])[0].text
    finally:
        engine.shutdown()
    port = free_port()
    env = {**os.environ, "NANOSEEK_DB_PATH": str(tmp_path / "web.sqlite3")}
    command = [sys.executable, "-m", "nanoseek.cli", "serve", "--model", str(engine_checkpoint), "--dtype", "q8_0"]
    process = subprocess.Popen(
        [*command, "--port", str(port)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(process, url, 90)
        body = {"model": "deepseek-chat", "prompt": prompt, "max_tokens": 24, "temperature": 0}
        response = httpx.post(f"{url}/beta/completions", json=body, timeout=60)
        assert response.status_code == 200, response.text
        assert response.json()["choices"][0]["text"] == expected
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
