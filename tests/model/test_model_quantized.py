"""Quantized weights (nanoseek/model/quantized.py): the packed blocks hold exactly what llama.cpp's formats hold.

Checked against the `gguf` package's own quantize/dequantize (bit for bit), for weights read as GGUF blocks and
for weights quantized at load time; the PyTorch forward of a quantized model is the model with those weights, with
the feed-forward weights alone quantized too (a Llama's MLPs on request; a DeepSeek model's MLPs, shared and routed
experts always)."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import torch

from nanoseek.model.checkpoint import CheckpointError
from nanoseek.model.config import ModelConfig
from nanoseek.model.layers import Linear
from nanoseek.model.loader import load_model
from nanoseek.model.quantized import (
    GGML_Q4_0,
    GGML_Q4_1,
    GGML_Q8_0,
    QuantizationError,
    QuantizedEmbedding,
    QuantizedExperts,
    QuantizedLinear,
    quantize_model,
    swiglu_row_order,
)
from nanoseek.model.transformer import Transformer

gguf_quants = pytest.importorskip("gguf.quants")
FORMATS = {GGML_Q8_0: "q8_0", GGML_Q4_1: "q4_1"}


def weights(rows: int, inputs: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(rows, inputs)).astype(np.float32)


@pytest.mark.parametrize("ggml_type", [GGML_Q8_0, GGML_Q4_0, GGML_Q4_1], ids=["Q8_0", "Q4_0", "Q4_1"])
def test_gguf_blocks_dequantize_exactly_as_gguf_does(ggml_type):
    # 70 rows: the last column block is zero-padded and must not leak into the weight.
    matrix = weights(70, 96)
    blocks = gguf_quants.quantize(matrix, ggml_type)
    layer = QuantizedLinear.from_ggml(ggml_type, torch.from_numpy(blocks), 96)
    expected = torch.from_numpy(gguf_quants.dequantize(blocks, ggml_type))
    assert layer.qtype == ("q8_0" if ggml_type == GGML_Q8_0 else "q4_1")  # Q4_0 is kept as q4_1
    assert torch.equal(layer.dequantize(), expected)
    rows = torch.tensor([69, 0, 33, 33, 5])
    assert torch.equal(layer.dequantize_rows(rows), expected[rows])


@pytest.mark.parametrize("ggml_type", list(FORMATS), ids=list(FORMATS.values()))
def test_quantizing_at_load_time_gives_llama_cpp_blocks(ggml_type):
    matrix = weights(64, 128, seed=1)
    from_file = QuantizedLinear.from_ggml(ggml_type, torch.from_numpy(gguf_quants.quantize(matrix, ggml_type)), 128)
    ours = QuantizedLinear.from_float(torch.from_numpy(matrix), FORMATS[ggml_type])
    assert torch.equal(ours.packed, from_file.packed)
    # Stored in another row order (gate/up interleaved for the native SwiGLU epilogue): the same weight.
    order = swiglu_row_order(32)
    reordered = QuantizedLinear.from_float(torch.from_numpy(matrix), FORMATS[ggml_type], row_order=order)
    assert torch.equal(reordered.dequantize(), ours.dequantize())
    assert not torch.equal(reordered.packed, ours.packed)


def test_bad_shapes_and_types_are_named():
    with pytest.raises(QuantizationError, match="multiples of 32"):
        QuantizedLinear.from_float(torch.zeros(32, 40), "q8_0")
    with pytest.raises(QuantizationError, match="ggml type 12"):
        QuantizedLinear.from_ggml(12, torch.zeros(4, 144, dtype=torch.uint8), 256)
    with pytest.raises(QuantizationError, match="uint8 blocks"):
        QuantizedLinear.from_ggml(GGML_Q8_0, torch.zeros(4, 30, dtype=torch.uint8), 32)
    with pytest.raises(QuantizationError, match="unknown quantized type"):
        QuantizedLinear.from_float(torch.zeros(32, 32), "q2_k")
    odd = Transformer(
        ModelConfig(vocab_size=64, hidden_size=40, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
    )
    with pytest.raises(QuantizationError, match="hidden_size 40"):
        quantize_model(odd, "q8_0")


@pytest.mark.parametrize("tied", [True, False])
@pytest.mark.parametrize("qtype", ["q8_0", "q4_1"])
def test_a_quantized_model_computes_what_the_model_with_its_dequantized_weights_computes(qtype, tied):
    torch.manual_seed(0)
    config = ModelConfig(
        vocab_size=100,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=tied,
    )
    model = Transformer(config).eval()
    quantized = quantize_model(Transformer(config).eval(), qtype)
    # The reference: the same architecture holding the dequantized weights.
    with torch.no_grad():
        for block, ours in zip(model.layers, quantized.layers):
            block.self_attn.qkv_proj.weight.copy_(ours.self_attn.qkv_proj.dequantize())
            block.self_attn.o_proj.weight.copy_(ours.self_attn.o_proj.dequantize())
            block.mlp.gate_up_proj.weight.copy_(ours.mlp.gate_up_proj.dequantize())
            block.mlp.down_proj.weight.copy_(ours.mlp.down_proj.dequantize())
        model.lm_head.weight.copy_(quantized.lm_head.dequantize())
        if not tied:
            model.embed_tokens.weight.copy_(quantized.embed_tokens.table.dequantize())
    assert isinstance(quantized.embed_tokens, QuantizedEmbedding)
    assert (quantized.embed_tokens.table is quantized.lm_head) == tied  # tied blocks are stored once
    assert quantized.dtype == torch.float32
    ids = torch.randint(0, 100, (2, 9))
    with torch.no_grad():
        torch.testing.assert_close(quantized(ids), model(ids), atol=1e-5, rtol=1e-5)


def test_feed_forward_only_quantizes_a_llamas_mlps_and_nothing_else():
    torch.manual_seed(0)
    # Attention 3 x 20 wide: not a multiple of 32, which only the attention's quantization would need.
    config = ModelConfig(
        vocab_size=100, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=3, head_dim=20
    )
    model = Transformer(config).eval()
    quantized = quantize_model(copy.deepcopy(model), "q8_0", feed_forward_only=True)
    with torch.no_grad():
        for block, ours in zip(model.layers, quantized.layers):
            assert type(ours.self_attn.qkv_proj) is Linear and type(ours.self_attn.o_proj) is Linear
            block.mlp.gate_up_proj.weight.copy_(ours.mlp.gate_up_proj.dequantize())
            block.mlp.down_proj.weight.copy_(ours.mlp.down_proj.dequantize())
    assert type(quantized.lm_head) is Linear and not isinstance(quantized.embed_tokens, QuantizedEmbedding)
    ids = torch.randint(0, 100, (2, 9))
    with torch.no_grad():
        torch.testing.assert_close(quantized(ids), model(ids), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("qtype", ["q8_0", "q4_1"])
def test_a_deepseek_model_quantizes_its_mlps_and_experts_and_computes_what_their_dequantized_weights_compute(qtype):
    config = ModelConfig(
        model_type="deepseek_v3",
        vocab_size=100,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=3,
        num_attention_heads=2,
        kv_lora_rank=32,
        qk_nope_head_dim=16,  # not a multiple of 32: attention stays fp32 anyway
        qk_rope_head_dim=8,
        v_head_dim=16,
        n_routed_experts=8,
        num_experts_per_tok=2,
        moe_intermediate_size=32,
        n_shared_experts=2,
        first_k_dense_replace=1,
        n_group=4,
        topk_group=2,
    )
    torch.manual_seed(0)
    model = Transformer(config).eval()
    with torch.no_grad():
        for block in model.layers[1:]:
            block.mlp.gate.weight.normal_(0.0, 1.0)  # rows spread over the experts
    quantized = quantize_model(copy.deepcopy(model), qtype)  # the same attention, routers and norms
    with torch.no_grad():
        dense, ours = model.layers[0].mlp, quantized.layers[0].mlp
        dense.gate_up_proj.weight.copy_(ours.gate_up_proj.dequantize())
        dense.down_proj.weight.copy_(ours.down_proj.dequantize())
        for block, ours in zip(model.layers[1:], quantized.layers[1:]):
            experts = ours.mlp.experts
            assert isinstance(experts, QuantizedExperts) and experts.gate_up[0].qtype == qtype
            for e in range(8):
                block.mlp.experts.gate_up_proj[e].copy_(experts.gate_up[e].dequantize())
                block.mlp.experts.down_proj[e].copy_(experts.down[e].dequantize())
            shared = block.mlp.shared_experts
            shared.gate_up_proj.weight.copy_(ours.mlp.shared_experts.gate_up_proj.dequantize())
            shared.down_proj.weight.copy_(ours.mlp.shared_experts.down_proj.dequantize())
    assert all(type(b.self_attn.o_proj) is Linear for b in quantized.layers) and type(quantized.lm_head) is Linear
    ids = torch.randint(0, 100, (2, 9))
    with torch.no_grad():
        torch.testing.assert_close(quantized(ids), model(ids), atol=1e-5, rtol=1e-5)
    odd = Transformer(dataclasses.replace(config, moe_intermediate_size=40))
    with pytest.raises(QuantizationError, match="moe_intermediate_size 40"):
        quantize_model(odd, "q8_0")


def test_load_model_quantizes_at_load_time(tiny_checkpoint):
    exact = load_model(tiny_checkpoint)
    model = load_model(tiny_checkpoint, dtype="q8_0")
    assert isinstance(model.lm_head, QuantizedLinear) and model.lm_head.qtype == "q8_0"
    ids = torch.randint(0, 512, (1, 12))
    with torch.no_grad():
        expected, got = exact(ids), model(ids)
    # q8_0 weights: within a percent of the fp32 logits.
    assert (got - expected).abs().mean() < 0.01 * expected.abs().mean()
    with pytest.raises(CheckpointError, match="unsupported dtype"):
        load_model(tiny_checkpoint, dtype="q3_k")


@pytest.mark.parametrize("tensor_type", ["q8_0", "q4_0", "q4_1"])
def test_a_gguf_file_keeps_its_blocks_quantized_unless_a_dtype_is_asked_for(tiny_checkpoint, tmp_path, tensor_type):
    from nanoseek.model.gguf_checkpoint import save_gguf
    from nanoseek.model.loader import load_checkpoint
    from nanoseek.model.transformer import Linear

    source = load_checkpoint(tiny_checkpoint)
    path = save_gguf(source.model, source.tokenizer, tmp_path / f"tiny-{tensor_type}.gguf", tensor_type=tensor_type)
    quantized, dequantized = load_model(path), load_model(path, dtype="float32")
    # --dtype q8_0 over a GGUF file: dequantized, then quantized again (to q8_0 whatever the file holds).
    requantized = load_checkpoint(path, dtype="q8_0").model
    assert requantized.lm_head.qtype == "q8_0" and requantized.layers[0].mlp.down_proj.qtype == "q8_0"
    expected_type = "q8_0" if tensor_type == "q8_0" else "q4_1"
    layers = [quantized.lm_head] + [
        layer
        for block in quantized.layers
        for layer in (block.self_attn.qkv_proj, block.self_attn.o_proj, block.mlp.gate_up_proj, block.mlp.down_proj)
    ]
    assert all(isinstance(layer, QuantizedLinear) and layer.qtype == expected_type for layer in layers)
    assert quantized.embed_tokens.table is quantized.lm_head  # tied: one copy of the blocks
    assert isinstance(dequantized.lm_head, Linear)
    ids = torch.randint(0, 512, (2, 10))
    with torch.no_grad():
        torch.testing.assert_close(quantized(ids), dequantized(ids), atol=1e-5, rtol=1e-5)
