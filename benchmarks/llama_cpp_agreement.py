"""Top-1 agreement with llama.cpp on a GGUF file (issue 19's goal: >= 99% over 256 positions), against each of
llama.cpp's own attention settings, and what limits it.

    python benchmarks/llama_cpp_agreement.py                  # smollm2-135m-instruct, the test's 256 positions

Prints, for the 256 positions of tests/model/test_model_smollm2.py (`positions`), the share of positions whose
argmax agrees:
* between llama.cpp (llama-cpp-python) runs with an f16 or f32 KV cache and flash attention on or off: the
  reference's own spread (its default on the CPU: f16 cache, flash attention on);
* of nanoseek's native step on the file's own blocks (`--model FILE.gguf`, no --dtype: what serve runs) with
  each of them, over an fp32 KV cache (the default) and an fp16 one (`--kv-cache-dtype float16`, llama.cpp's);
* of nanoseek's PyTorch model with the projections computed as ggml computes them (int8 activations,
  tests/engine/test_native_quantized.py `ggml_linear`), its keys and values kept in fp32 or rounded to fp16 first:
  llama.cpp's flash attention casts K and V to f16 whatever the cache type (so f16 and f32 caches give the same
  logits with it on), while its queries stay fp32 on a prompt.
One thread everywhere; every side evaluates the 256 tokens as one prompt. Then, for the same pairs, the mean
per-position RMS of the logit difference (how far apart two sides are, beyond the argmax), and the largest top-2
margin of the first llama.cpp setting at a position where a nanoseek side disagrees with it: what separates a
disagreement on a near-tie from one on a clear choice.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests" / "model"), str(ROOT / "tests" / "engine")]


def llama_cpp_logits(path: str, ids: list[int], f16_cache: bool, flash: bool) -> np.ndarray:
    import llama_cpp

    cache_type = 1 if f16_cache else 0  # GGML_TYPE_F16, GGML_TYPE_F32
    llm = llama_cpp.Llama(
        model_path=path,
        n_ctx=len(ids) + 8,
        logits_all=True,
        verbose=False,
        n_threads=1,
        type_k=cache_type,
        type_v=cache_type,
        flash_attn=flash,
    )
    try:
        llm.eval(ids)
        return np.array(llm.scores[: len(ids)])
    finally:
        llm.close()


def native_logits(model: torch.nn.Module, ids: list[int], kv_dtype: torch.dtype = torch.float32) -> np.ndarray:
    """The native step's logits over a KV cache storing `kv_dtype`, the prompt in steps of 16 rows (as the engine
    prefills a quantized model)."""
    from nanoseek.engine.kv_cache import SlotKVCache
    from nanoseek.engine.native import NativeDecoder

    config = model.config
    cache = SlotKVCache(config.num_hidden_layers, config.num_key_value_heads, config.head_dim, 1, 512, kv_dtype)
    decoder = NativeDecoder.build(model, cache, max_batch=16)
    rows = [
        decoder.step(ids[s : s + 16], list(range(s, min(s + 16, len(ids)))), [0] * len(ids[s : s + 16]))
        for s in range(0, len(ids), 16)
    ]
    return torch.cat(rows).numpy()


class RoundedKV:
    """An attention cache protocol for one prompt: causal attention with keys and values rounded to fp16 first."""

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        k, v = k.half().float(), v.half().float()
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)


def ggml_model_logits(model: torch.nn.Module, ids: list[int], fp16_kv: bool) -> np.ndarray:
    from test_native_quantized import ggml_linear

    from nanoseek.model.quantized import QuantizedLinear

    forward = QuantizedLinear.forward
    QuantizedLinear.forward = ggml_linear
    try:
        with torch.no_grad():
            tokens, positions = torch.tensor([ids]), torch.arange(len(ids))[None]
            return model(tokens, positions, cache=RoundedKV() if fp16_kv else None)[0].numpy()
    finally:
        QuantizedLinear.forward = forward


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2-135m-instruct", help="a GGUF file or a named model")
    args = parser.parse_args(argv)
    os.environ.setdefault("NANOSEEK_REQUIRE_NATIVE", "1")  # measure the native step or stop
    torch.set_num_threads(1)
    import test_model_smollm2 as smol

    from nanoseek.model.loader import load_checkpoint
    from nanoseek.model.named import resolve_model

    path = str(resolve_model(args.model))
    checkpoint = load_checkpoint(path)  # the file's own blocks
    tokenizer = checkpoint.tokenizer
    prompt = tokenizer.encode_chat([{"role": "user", "content": smol.QUESTIONS[0]}])
    ids = (prompt + tokenizer.encode(" ".join(smol.QUESTIONS) + "\n\n" + smol.PASSAGE))[:256]
    references = {
        f"llama.cpp {'f16' if f16 else 'f32'} cache, flash {'on' if flash else 'off'}": llama_cpp_logits(
            path, ids, f16, flash
        )
        for f16 in (True, False)
        for flash in (True, False)
    }
    ours = {
        "nanoseek native step (gguf blocks)": native_logits(checkpoint.model, ids),
        "nanoseek native step (gguf blocks), fp16 KV cache": native_logits(checkpoint.model, ids, torch.float16),
        "nanoseek PyTorch, ggml projections, fp32 K/V": ggml_model_logits(checkpoint.model, ids, fp16_kv=False),
        "nanoseek PyTorch, ggml projections, K/V rounded to fp16": ggml_model_logits(checkpoint.model, ids, True),
    }
    names = list(references)
    print(f"{path}: top-1 agreement over {len(ids)} positions (max |logit difference|)")
    print("| | " + " | ".join(names) + " |")
    print("|---" * (len(names) + 1) + "|")
    for name, logits in {**references, **ours}.items():
        cells = [
            f"{(logits.argmax(-1) == references[other].argmax(-1)).mean():.1%} "
            f"({np.abs(logits - references[other]).max():.2f})"
            for other in names
        ]
        print(f"| {name} | " + " | ".join(cells) + " |", flush=True)
    print("\nmean per-position RMS of the logit difference")
    for name, logits in {**references, **ours}.items():
        cells = [f"{np.sqrt(((logits - references[other]) ** 2).mean(-1)).mean():.3f}" for other in names]
        print(f"| {name} | " + " | ".join(cells) + " |")
    default = references[names[0]]
    top2 = np.sort(default, -1)[:, -2:]
    margin = top2[:, 1] - top2[:, 0]
    print(f"\n{names[0]}: top-2 margin under 0.4 at {(margin < 0.4).sum()} of {len(ids)} positions")
    for name, logits in ours.items():
        disagree = logits.argmax(-1) != default.argmax(-1)
        worst = margin[disagree].max() if disagree.any() else 0.0
        print(f"{name}: {disagree.sum()} disagreements, the largest llama.cpp margin among them {worst:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
