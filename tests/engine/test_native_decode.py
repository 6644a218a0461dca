"""The native decode step (nanoseek/engine/native_decode.c) computes what the PyTorch model computes.

Checked directly (logits of one decode step against the model's over the same cache contents, for shapes
that take the vector and the scalar code paths, with biases, GQA and sequences at different positions in
scattered slots) and through the engine (greedy tokens equal to the PyTorch path; a weight change sends
decoding back to the model)."""

from __future__ import annotations

import shutil

import native_models
import pytest
import torch
from native_models import (
    LENGTHS,
    SLOTS,
    bf16_step_errors,
    bf16_with_exact_twin,
    decode_side_by_side,
    greedy,
    model_step,
    new_cache,
    prefill,
    rows_alone_too,
)

from nanoseek.engine import Engine, Request
from nanoseek.engine.kv_cache import SlotKVCache
from nanoseek.engine.native import NativeDecoder, load_library
from nanoseek.model.config import ModelConfig
from nanoseek.model.loader import load_checkpoint
from nanoseek.model.transformer import Transformer


@pytest.fixture(scope="module", autouse=True)
def compiler_present():
    # The machines nanoseek runs its tests on have a C compiler: there the library must build, not be skipped.
    assert shutil.which("cc") or shutil.which("gcc"), "no C compiler on this machine"
    assert load_library() is not None


SHAPES = {
    # head_dim 16: the vector attention path; output widths multiples of 32 (the blocked projections).
    "llama-gqa": dict(
        hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2
    ),
    # head_dim 10 and widths like 70 or 50: the scalar attention path and the projections' leftover columns,
    # with Qwen2's q/k/v biases.
    "qwen2-odd": dict(
        hidden_size=40,
        intermediate_size=50,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=1,
        model_type="qwen2",
        attention_bias=True,
        mlp_bias=True,
    ),
    # Six q heads per kv head: bf16 attention takes them in two passes (4 + 2) over the shared keys.
    "gqa-6-per-kv-head": dict(
        hidden_size=192, intermediate_size=64, num_hidden_layers=2, num_attention_heads=6, num_key_value_heads=1
    ),
}


def random_model(shape: str) -> Transformer:
    return native_models.random_model(**SHAPES[shape])


# Projection weights as a packed copy (the default), or read in place from the model's own (row-major) weights
# where the widths allow it (NANOSEEK_NATIVE_IN_PLACE=1): qwen2-odd's hidden 40 and MLP width 50 do not.
LAYOUTS = ["packed", "in-place"]


def choose_layout(monkeypatch: pytest.MonkeyPatch, layout: str) -> None:
    monkeypatch.setenv("NANOSEEK_NATIVE_IN_PLACE", "1" if layout == "in-place" else "0")


def check_copies(decoder: NativeDecoder, model: Transformer, shape: str, layout: str) -> None:
    """A packed decoder copies every projection; an in-place one none, where the shape's widths suit it. Either
    reads the embedding where the model keeps it (a bf16 one was copied to fp32)."""
    assert decoder._model.embed == model.embed_tokens.weight.data_ptr()
    if layout == "in-place" and shape != "qwen2-odd":
        assert decoder.copied_weight_bytes == 0
        for linear in (model.lm_head, model.layers[0].mlp.gate_up_proj, model.layers[1].self_attn.o_proj):
            assert linear.weight.is_contiguous()  # now row-major: the very tensor the step reads
    else:
        assert decoder.copied_weight_bytes >= sum(p.numel() * p.element_size() for p in model.layers.parameters()) // 2


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("shape", SHAPES)
def test_one_step_matches_the_model_for_sequences_at_different_positions_in_scattered_slots(shape, layout, monkeypatch):
    choose_layout(monkeypatch, layout)
    model = random_model(shape)
    config = model.config
    reference, native_cache = new_cache(config, torch.float32), new_cache(config, torch.float32)
    decoder = NativeDecoder.build(model, native_cache, max_batch=6)
    assert decoder is not None
    check_copies(decoder, model, shape, layout)
    prefill(model, reference)
    prefill(model, native_cache)
    for expected, got in decode_side_by_side(model_step(model, reference), decoder.step):
        torch.testing.assert_close(got, expected, atol=2e-5, rtol=1e-4)
    # The new keys and values landed where the PyTorch path put them.
    for layer in range(config.num_hidden_layers):
        for slot, end in zip(SLOTS, [length + 4 for length in LENGTHS]):
            torch.testing.assert_close(
                native_cache.keys[layer][slot, :, :end], reference.keys[layer][slot, :, :end], atol=2e-5, rtol=1e-4
            )
            torch.testing.assert_close(
                native_cache.values[layer][slot, :, :end], reference.values[layer][slot, :, :end], atol=2e-5, rtol=1e-4
            )
    with pytest.raises(ValueError, match="rows"):
        decoder.step([1] * 7, [0] * 7, list(range(7)))


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("allow_amx", [True, False], ids=["amx-where-available", "avx512-bf16"])
@pytest.mark.parametrize("shape", SHAPES)
def test_a_bf16_step_is_as_exact_as_the_bf16_model_and_rows_do_not_depend_on_the_batch(
    shape, allow_amx, layout, monkeypatch
):
    if not load_library().nanoseek_supports_bf16():
        pytest.skip("this CPU has no AVX512-BF16: bf16 models decode with PyTorch (next test)")
    choose_layout(monkeypatch, layout)
    model, exact = bf16_with_exact_twin(lambda: random_model(shape))
    native_cache = new_cache(model.config, torch.bfloat16)
    decoder = NativeDecoder.build(model, native_cache, max_batch=6, allow_amx=allow_amx)
    assert decoder is not None
    # The tile path needs projection inputs that are multiples of 32 (qwen2-odd's hidden 40 is not); it reads
    # the packed layout, in place or not.
    tiles = allow_amx and shape != "qwen2-odd" and bool(load_library().nanoseek_enable_amx())
    assert decoder.kernel == ("bf16 AMX tiles" if tiles else "bf16 AVX512-BF16")
    if not tiles:
        check_copies(decoder, model, shape, layout)
    native_error, torch_error, mean_logit = bf16_step_errors(model, exact, decoder, native_cache, new_cache)
    # bf16 weights, inputs and cache with an fp32 residual stream: no further from fp32 than PyTorch's bf16.
    # (Measured: a mean |error| of 0.9-1.4% of the mean |logit|, a third less than PyTorch's bf16 model.)
    assert native_error <= torch_error
    assert native_error < 0.03 * mean_logit


@pytest.mark.parametrize("stored", [torch.float16, torch.bfloat16], ids=["fp16-cache", "bf16-cache"])
@pytest.mark.parametrize("shape", SHAPES)
def test_a_cache_of_another_dtype_rounds_keys_and_values_as_the_pytorch_path_does(shape, stored):
    """An fp32 model over an fp16 (llama.cpp's default) or bf16 KV cache: the native step stores each key and value
    rounded as PyTorch rounds them, and attends over them as the PyTorch path over the same cache does (which
    widens them first): logits equal to float rounding, rows alone as in a batch. Against an fp32 cache the
    difference stays that of rounding the keys and values."""
    model = random_model(shape)
    config = model.config
    reference, native_cache = new_cache(config, stored, torch.float32), new_cache(config, stored, torch.float32)
    exact = new_cache(config, torch.float32)
    decoder = NativeDecoder.build(model, native_cache, max_batch=6)
    assert decoder is not None and decoder.kernel == f"fp32, {str(stored).removeprefix('torch.')} KV cache"
    for cache in (reference, native_cache, exact):
        prefill(model, cache)
    steps = decode_side_by_side(model_step(model, reference), rows_alone_too(decoder.step), model_step(model, exact))
    for expected, got, unrounded in steps:
        torch.testing.assert_close(got, expected, atol=2e-5, rtol=1e-4)
        assert 0 < (got - unrounded).abs().max() < (0.05 if stored == torch.float16 else 0.4)
    for layer in range(config.num_hidden_layers):
        assert native_cache.keys[layer].dtype == stored
        for slot, end in zip(SLOTS, [length + 4 for length in LENGTHS]):
            # the same fp32 key rounds to the same value; keys computed a last bit apart may round one step apart
            for ours, theirs in ((native_cache.keys, reference.keys), (native_cache.values, reference.values)):
                torch.testing.assert_close(
                    ours[layer][slot, :, :end].float(), theirs[layer][slot, :, :end].float(), atol=1e-4, rtol=8e-3
                )


def test_it_applies_to_fp32_models_and_to_bf16_ones_where_the_cpu_multiplies_bf16():
    config = ModelConfig(vocab_size=64, **SHAPES["llama-gqa"])
    bf16_supported = bool(load_library().nanoseek_supports_bf16())
    for dtype, applies in ((torch.float16, False), (torch.bfloat16, bf16_supported), (torch.float32, True)):
        model = Transformer(config).to(dtype)
        decoder = NativeDecoder.build(model, SlotKVCache(2, 2, 16, 2, 32, dtype), max_batch=2)
        assert (decoder is not None) == applies, dtype
    # The cache may store any of its dtypes whatever the model's (attention widens what it reads to fp32).
    model = Transformer(config)
    for stored in (torch.float16, torch.bfloat16):
        assert NativeDecoder.build(model, SlotKVCache(2, 2, 16, 2, 32, stored), max_batch=2) is not None
    assert NativeDecoder.build(model, SlotKVCache(2, 2, 16, 2, 32, torch.float64), max_batch=2) is None


def test_engine_decodes_natively_with_the_same_greedy_tokens_and_follows_weight_changes(checkpoint, make_engine):
    prompts = [[3, 1, 4, 1, 5, 9, 2, 6], [2, 7, 1, 8, 2], [1, 4, 1, 4, 2, 1, 3, 5]]
    plain = make_engine(native_decode=False)
    assert plain.native is None
    expected = [c.token_ids for c in plain.generate([Request(p, greedy(40)) for p in prompts])]
    native = make_engine()
    assert native.native is not None
    assert [c.token_ids for c in native.generate([Request(p, greedy(40)) for p in prompts])] == expected
    assert native.generate([Request(prompts[2], greedy(40))])[0].token_ids == expected[2]
    # Once a weight changes (RL training the served model), decoding follows the model again.
    with torch.no_grad():
        checkpoint.model.lm_head.weight.mul_(-1.0)
    try:
        flipped_native = native.generate([Request(prompts[1], greedy(12))])[0].token_ids
        flipped_plain = plain.generate([Request(prompts[1], greedy(12))])[0].token_ids
    finally:
        with torch.no_grad():
            checkpoint.model.lm_head.weight.mul_(-1.0)
    assert flipped_native == flipped_plain != expected[1][:12]


def test_an_fp16_kv_cache_engine_decodes_natively_as_its_pytorch_fallback_does_in_half_the_cache(make_engine):
    """`kv_cache_dtype="float16"` (llama.cpp's cache type): the native step and the PyTorch path over the same
    fp16 cache decode the same greedy tokens, batched, with prefix-cache hits (the second round), in half the
    bytes per token of the fp32 cache."""
    prompts = [[3, 1, 4, 1, 5, 9, 2, 6] * 9, [2, 7, 1, 8, 2], [1, 4, 1, 4, 2, 1, 3, 5]]
    fallback = make_engine(native_decode=False, kv_cache_dtype="float16")
    assert fallback.native is None and fallback.cache.dtype == torch.float16
    expected = [c.token_ids for c in fallback.generate([Request(p, greedy(24)) for p in prompts])]
    native = make_engine(kv_cache_dtype="float16")
    assert native.native is not None and native.native.kernel.endswith("float16 KV cache")
    for _ in range(2):
        assert [c.token_ids for c in native.generate([Request(p, greedy(24)) for p in prompts])] == expected
    assert native.stats()["cached_tokens"] >= 64  # the long prompt's first block came from the prefix cache
    assert 2 * native.stats()["kv_bytes_per_token"] == make_engine().stats()["kv_bytes_per_token"]
    with pytest.raises(ValueError, match="kv_cache_dtype must be one of"):
        make_engine(kv_cache_dtype="fp8")


def test_an_engine_reading_the_weights_in_place_decodes_the_same_greedy_tokens(
    checkpoint, make_engine, engine_checkpoint, monkeypatch
):
    prompts = [[3, 1, 4, 1, 5, 9, 2, 6], [2, 7, 1, 8, 2], [1, 4, 1, 4, 2, 1, 3, 5]]
    expected = [c.token_ids for c in make_engine().generate([Request(p, greedy(24)) for p in prompts])]
    monkeypatch.setenv("NANOSEEK_NATIVE_IN_PLACE", "1")
    own = load_checkpoint(engine_checkpoint)  # not the shared model: the engine re-lays out its weights
    engine = Engine(own.model, own.tokenizer)
    try:
        assert engine.native is not None and engine.native.copied_weight_bytes == 0
        assert [c.token_ids for c in engine.generate([Request(p, greedy(24)) for p in prompts])] == expected
    finally:
        engine.shutdown()


def test_a_bf16_engine_decodes_natively_and_batched_greedy_equals_one_at_a_time(engine_checkpoint):
    if not load_library().nanoseek_supports_bf16():
        pytest.skip("this CPU has no AVX512-BF16: bf16 models decode with PyTorch")
    engine = Engine.from_checkpoint(str(engine_checkpoint), dtype="bfloat16", max_batch=8)
    try:
        assert engine.model.dtype == torch.bfloat16 and engine.native is not None
        prompts = [[3, 1, 4, 1, 5, 9, 2, 6], [2, 7, 1, 8, 2], [1, 4, 1, 4, 2, 1, 3, 5], [9, 9, 8]]
        alone = [engine.generate([Request(p, greedy(32))])[0].token_ids for p in prompts]
        # Requests leaving at different steps: the batch shrinks, and no row's tokens change with it.
        batched = [
            c.token_ids for c in engine.generate([Request(p, greedy(32 - 6 * i)) for i, p in enumerate(prompts)])
        ]
        assert batched == [tokens[: 32 - 6 * i] for i, tokens in enumerate(alone)]
    finally:
        engine.shutdown()
