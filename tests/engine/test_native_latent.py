"""The native decode step of DeepSeek-V2/V3 models (nanoseek_latent_decode_step in native_decode.c, laid out by
native_latent.py) computes what the PyTorch model computes over the same latent cache.

Checked one step at a time (logits, and the latents the step stores, against the model's for sequences at
different positions in scattered slots) on shapes that take every branch: full and low-rank q, attention biases,
interleaved and half-split rotary with YaRN, latent widths that take the vector and the scalar attention loops,
V2 softmax routing greedy and group-limited, V3 sigmoid routing with its correction bias, renormalised or not,
no shared experts or two, one or two dense first layers; in bf16, no further from fp32 than the PyTorch bf16
model, and each row's logits independent of its batch; bit for bit the same on one, two or three threads. With
q8_0 or q4_1 feed-forward weights (dense MLPs, shared and routed experts): the model with the same dequantized
weights and int8-rounded inputs to float rounding, rows routed to different experts in one step the same bits as
each row alone, and within int8 rounding of fp32 inputs on both kernels. The engine over it:
tests/engine/test_engine_mla.py."""

from __future__ import annotations

import native_models
import pytest
import torch
from native_models import (
    LENGTHS,
    SLOTS,
    bf16_step_errors,
    bf16_with_exact_twin,
    decode_side_by_side,
    ggml_linear,
    model_step,
    prefill,
    rows_alone_too,
)

from nanoseek.engine.latent_cache import LatentKVCache
from nanoseek.engine.native import NativeUnavailable, load_library
from nanoseek.engine.native_latent import LatentNativeDecoder
from nanoseek.model.config import ModelConfig
from nanoseek.model.quantized import QuantizedExperts, QuantizedLinear, quantize_model
from nanoseek.model.transformer import Transformer

YARN = {
    "rope_type": "yarn",
    "factor": 4.0,
    "original_max_position_embeddings": 16,
    "mscale": 0.7,
    "mscale_all_dim": 0.7,
}
BASE = dict(
    hidden_size=64,
    intermediate_size=96,
    num_hidden_layers=3,
    num_attention_heads=3,
    n_routed_experts=8,
    num_experts_per_tok=2,
    moe_intermediate_size=32,
    first_k_dense_replace=1,
)
SHAPES = {
    # Latents 32 + 16 and values 32 wide: the vector attention loops; one full q projection. Every projection's
    # inputs are multiples of 32, so bf16 takes the AMX tiles where the CPU has them.
    "v3-vector": dict(
        model_type="deepseek_v3",
        kv_lora_rank=32,
        qk_nope_head_dim=32,
        qk_rope_head_dim=16,
        v_head_dim=32,
        n_shared_experts=1,
        n_group=4,
        topk_group=2,
        routed_scaling_factor=2.5,
    ),
    # Latents 20 + 6 and heads of 10 / 12: the scalar loops and the projections' leftover columns; a q LoRA,
    # attention biases, V2 softmax routing limited to the best 2 of 4 groups, two shared experts (width 50).
    "v2-qlora-biases-scalar": dict(
        model_type="deepseek_v2",
        hidden_size=40,
        intermediate_size=50,
        q_lora_rank=20,
        attention_bias=True,
        kv_lora_rank=20,
        qk_nope_head_dim=10,
        qk_rope_head_dim=6,
        v_head_dim=12,
        n_shared_experts=2,
        moe_intermediate_size=25,
        topk_method="group_limited_greedy",
        n_group=4,
        topk_group=2,
        routed_scaling_factor=2.0,
    ),
    # Half-split rotary under YaRN, no shared experts, weights not renormalised, one group (no limit in effect).
    "v3-halfsplit-yarn-unshared": dict(
        model_type="deepseek_v3",
        q_lora_rank=32,
        kv_lora_rank=16,
        qk_nope_head_dim=16,
        qk_rope_head_dim=8,
        v_head_dim=16,
        rope_interleave=False,
        rope_scaling=YARN,
        n_shared_experts=0,
        n_group=1,
        topk_group=1,
        norm_topk_prob=False,
    ),
    # V2 greedy routing over all experts, top-3, two dense first layers.
    "v2-greedy-two-dense": dict(
        model_type="deepseek_v2",
        kv_lora_rank=16,
        qk_nope_head_dim=16,
        qk_rope_head_dim=16,
        v_head_dim=16,
        n_shared_experts=1,
        num_experts_per_tok=3,
        first_k_dense_replace=2,
    ),
}


@pytest.fixture(scope="module", autouse=True)
def library_built():
    assert load_library() is not None  # the test machines have a C compiler (test_native_decode.py)


def random_model(shape: str, dtype: torch.dtype = torch.float32) -> Transformer:
    """A model of SHAPES[shape] (native_models.random_model's perturbed parameters) with its routers spread
    (seeded), so that rows of one step route to different experts."""
    model = native_models.random_model(**{**BASE, **SHAPES[shape]})
    with torch.no_grad():
        for block in model.layers[model.config.first_k_dense_replace :]:
            block.mlp.gate.weight.normal_(0.0, 1.0)
            if block.mlp.gate.sigmoid:
                block.mlp.gate.e_score_correction_bias.normal_(0.0, 0.1)
    return model.to(dtype)


def new_cache(config: ModelConfig, dtype: torch.dtype) -> LatentKVCache:
    return LatentKVCache(config.num_hidden_layers, config.latent_dim, 6, 64, dtype)


@pytest.mark.parametrize("shape", SHAPES)
def test_one_step_matches_the_model_for_sequences_at_different_positions_in_scattered_slots(shape):
    model = random_model(shape)
    config = model.config
    reference, native_cache = new_cache(config, torch.float32), new_cache(config, torch.float32)
    decoder = LatentNativeDecoder.build(model, native_cache, max_batch=6)
    assert decoder is not None and decoder.kernel == "fp32"
    prefill(model, reference)
    prefill(model, native_cache)
    routed: list[torch.Tensor] = []
    hooks = [b.mlp.gate.register_forward_hook(lambda _, __, out: routed.append(out[1])) for b in model.layers[2:]]
    for expected, got in decode_side_by_side(model_step(model, reference), decoder.step):
        torch.testing.assert_close(got, expected, atol=2e-5, rtol=1e-4)
    for hook in hooks:
        hook.remove()
    # The rows of a step went to different experts (else a wrong row-to-expert mapping could pass unseen).
    assert any(len({tuple(sorted(row.tolist())) for row in step}) == 3 for step in routed)
    # The step stored the same latents (normed kv latent, rotated k_pe) where the model stores them.
    for layer in range(config.num_hidden_layers):
        for slot, end in zip(SLOTS, [length + 4 for length in LENGTHS]):
            torch.testing.assert_close(
                native_cache.keys[layer][slot, :, :end], reference.keys[layer][slot, :, :end], atol=2e-5, rtol=1e-4
            )
    with pytest.raises(ValueError, match="rows"):
        decoder.step([1] * 7, [0] * 7, list(range(7)))


@pytest.mark.parametrize("shape", SHAPES)
def test_a_step_computes_the_same_bits_on_one_two_and_three_threads(shape):
    # Every thread norms and routes every row itself, and adds the experts' outputs into the columns it projected
    # without a barrier before: a slip in that bookkeeping would make the result depend on the thread count.
    model = random_model(shape)
    prefilled = new_cache(model.config, torch.float32)
    prefill(model, prefilled)
    results = []
    threads_before = torch.get_num_threads()
    try:
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)  # the decoder's OpenMP team
            cache = new_cache(model.config, torch.float32)
            for ours, prefilled_keys in zip(cache.keys, prefilled.keys):
                ours.copy_(prefilled_keys)
            decoder = LatentNativeDecoder.build(model, cache, max_batch=6)
            tokens, positions, steps = [11, 22, 33], list(LENGTHS), []
            for _ in range(3):
                steps.append(decoder.step(tokens, positions, SLOTS))
                tokens, positions = steps[-1].argmax(-1).tolist(), [p + 1 for p in positions]
            results.append((steps, cache.keys))
    finally:
        torch.set_num_threads(threads_before)
    (one_thread, one_thread_keys), *others = results
    for steps, keys in others:
        assert all(torch.equal(a, b) for a, b in zip(steps, one_thread))
        assert all(torch.equal(a, b) for a, b in zip(keys, one_thread_keys))


@pytest.mark.parametrize("allow_amx", [True, False], ids=["amx-where-available", "avx512-bf16"])
@pytest.mark.parametrize("shape", ["v3-vector", "v2-qlora-biases-scalar"])
def test_a_bf16_step_is_as_exact_as_the_bf16_model_and_rows_do_not_depend_on_the_batch(shape, allow_amx):
    if not load_library().nanoseek_supports_bf16():
        pytest.skip("this CPU has no AVX512-BF16: bf16 models decode with PyTorch")
    model, exact = bf16_with_exact_twin(lambda: random_model(shape))  # routing biases rounded too
    native_cache = new_cache(model.config, torch.bfloat16)
    decoder = LatentNativeDecoder.build(model, native_cache, max_batch=6, allow_amx=allow_amx)
    # The tile path needs every projection input a multiple of 32 (v2-qlora-biases-scalar's are not).
    tiles = allow_amx and shape == "v3-vector" and bool(load_library().nanoseek_enable_amx())
    assert decoder is not None and decoder.kernel == ("bf16 AMX tiles" if tiles else "bf16 AVX512-BF16")
    native_error, torch_error, mean_logit = bf16_step_errors(model, exact, decoder, native_cache, new_cache)
    assert native_error <= torch_error
    assert native_error < 0.05 * mean_logit


def test_it_applies_to_fp32_and_bf16_models_over_a_latent_cache_only():
    bf16_supported = bool(load_library().nanoseek_supports_bf16())
    for dtype, applies in ((torch.float16, False), (torch.bfloat16, bf16_supported), (torch.float32, True)):
        model = random_model("v3-vector", dtype)
        decoder = LatentNativeDecoder.build(model, new_cache(model.config, dtype), max_batch=2)
        assert (decoder is not None) == applies, dtype
    model = random_model("v3-vector")
    assert LatentNativeDecoder.build(model, new_cache(model.config, torch.bfloat16), max_batch=2) is None  # cache dtype
    with_mlp_bias = ModelConfig(vocab_size=300, mlp_bias=True, **{**BASE, **SHAPES["v3-vector"]})
    biased = Transformer(with_mlp_bias)
    assert LatentNativeDecoder.build(biased, new_cache(with_mlp_bias, torch.float32), max_batch=2) is None


# The shapes whose feed-forward widths (hidden, MLP, experts, shared experts) are multiples of 32: quantizable.
QUANTIZABLE = ["v3-vector", "v3-halfsplit-yarn-unshared", "v2-greedy-two-dense"]


def routed_experts_recorder(model: Transformer) -> tuple[list[torch.Tensor], list]:
    """The experts each MoE layer's router picks per call (a list filled as the model runs), and the hooks."""
    routed: list[torch.Tensor] = []
    first_moe = model.config.first_k_dense_replace
    hooks = [
        b.mlp.gate.register_forward_hook(lambda _, __, out: routed.append(out[1])) for b in model.layers[first_moe:]
    ]
    return routed, hooks


@pytest.mark.parametrize(
    ("shape", "qtype"), [(shape, "q8_0") for shape in QUANTIZABLE] + [("v2-greedy-two-dense", "q4_1")]
)
def test_quantized_feed_forward_equals_the_model_with_int8_inputs_and_rows_routed_apart_equal_each_alone(
    shape, qtype, monkeypatch
):
    model = quantize_model(random_model(shape), qtype)
    assert all(isinstance(b.mlp.experts, QuantizedExperts) for b in model.layers[model.config.first_k_dense_replace :])
    monkeypatch.setattr(QuantizedLinear, "forward", ggml_linear)  # the PyTorch model rounds inputs as the C step
    reference, native_cache = new_cache(model.config, torch.float32), new_cache(model.config, torch.float32)
    decoder = LatentNativeDecoder.build(model, native_cache, max_batch=6)
    vnni = bool(load_library().nanoseek_supports_vnni())
    assert decoder.kernel == f"fp32, {qtype} {'AVX512-VNNI' if vnni else 'portable'} feed-forward"
    assert decoder.quantized
    prefill(model, reference)
    prefill(model, native_cache)
    routed, hooks = routed_experts_recorder(model)
    # rows_alone_too: every row of every step decoded alone too, with the very same logits.
    results = decode_side_by_side(model_step(model, reference), rows_alone_too(decoder.step))
    for hook in hooks:
        hook.remove()
    # The step's inputs differ from the model's in the last float bits, so an input within that of an int8 rounding
    # boundary (or a router score within it of a tie) can round (or route) the other way: one row of one step may
    # then differ by a quantization step (measured: row 1 of the first step of v2-greedy-two-dense, 0.03 of a mean
    # |logit| of 1.4, the next steps within 3e-5 again). Every other row agrees to float rounding.
    rows_apart = [
        not torch.allclose(got_row, expected_row, atol=1e-4, rtol=1e-4)
        for expected, got in results
        for expected_row, got_row in zip(expected, got)
    ]
    assert sum(rows_apart) <= 1
    for expected, got in results:
        assert (got - expected).abs().mean() < 0.01 * expected.abs().mean()
    assert any(len({tuple(sorted(row.tolist())) for row in step}) == 3 for step in routed)


def test_quantized_feed_forward_stays_within_int8_rounding_of_fp32_inputs_on_both_kernels():
    qtype = "q8_0"
    model = quantize_model(random_model("v3-vector"), qtype)
    logits = {}
    for kernel, vnni in {"vnni": True, "portable": False}.items():
        if vnni and not load_library().nanoseek_supports_vnni():
            continue
        reference, native_cache = new_cache(model.config, torch.float32), new_cache(model.config, torch.float32)
        decoder = LatentNativeDecoder.build(model, native_cache, max_batch=6, allow_vnni=vnni)
        assert decoder.kernel.endswith(f"{qtype} {'AVX512-VNNI' if vnni else 'portable'} feed-forward")
        prefill(model, reference)
        prefill(model, native_cache)
        results = decode_side_by_side(model_step(model, reference), decoder.step)
        # The model's own forward dequantizes the weights and keeps its inputs fp32: the int8 rounding of the
        # feed-forward inputs is the only difference (the Llama step's bound, test_native_quantized.py).
        for expected, got in results:
            assert (got - expected).abs().mean() < 0.06 * expected.abs().mean()
        logits[kernel] = torch.stack([got for _, got in results])
    if len(logits) == 2:  # the same exact int32 sums, added in another order
        torch.testing.assert_close(logits["vnni"], logits["portable"], atol=1e-5, rtol=1e-5)


def test_quantized_layers_outside_the_feed_forward_or_mixed_in_a_layer_keep_the_pytorch_step():
    model = quantize_model(random_model("v3-vector"), "q8_0")
    cache = new_cache(model.config, torch.float32)
    attention = model.layers[0].self_attn
    attention.o_proj = QuantizedLinear.from_float(attention.o_proj.weight, "q8_0")
    # build_or_raise with the reason: `build(...) is None` would hold for any reason, a missing compiler included
    with pytest.raises(NativeUnavailable, match="quantized or LoRA-wrapped projection outside the feed-forward"):
        LatentNativeDecoder.build_or_raise(model, cache, max_batch=2)
    model = quantize_model(random_model("v3-vector"), "q8_0")
    model.layers[1].mlp.experts.down[3] = QuantizedLinear.from_float(
        model.layers[1].mlp.experts.down[3].dequantize(), "q4_1"
    )
    with pytest.raises(NativeUnavailable, match="mix storage types"):
        LatentNativeDecoder.build_or_raise(model, cache, max_batch=2)
