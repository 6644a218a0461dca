"""The engine's model runner: the step's forward pass, a prefill chunk or a decode batch in, logits out.

It owns the model, the slot KV cache (of latents for MLA models, latent_cache.py; keys and values stored in the
model's dtype or in `kv_cache_dtype`'s, e.g. fp16 as llama.cpp keeps them: resolve_kv_cache_dtype) and the
fastest decode path that applies:
* the native step (native.py, native_decode.c; BENCHMARKS.md "fourth round"): the whole decode step of an
  fp32 nanoseek Transformer on the CPU (or a bf16 one with AVX512-BF16) in one C call, reading the cache in
  place; for MLA + MoE models native_latent.py's step over the latent cache. It takes precedence over the compiled step; the model (compiled or not) decodes what it does not.
  Short prefill chunks (at most `max_batch` tokens) go through it too, their tokens as rows of one sequence
  at consecutive positions (each row's keys and values are stored before any row attends): the PyTorch
  forward of a short chunk is mostly per-op overhead (a 1-token prompt took ~4 ms, the native step ~0.5).
* a compiled decode step (`compile_decode`): torch.compile (inductor, C++ wrapper) fuses the elementwise ops
  and calls the rest from C++, and with `freezing` folds the weights in as constants. On the default model
  (BENCHMARKS.md "third round") it decoded 1.8x the tokens/s of eager at batch 1 and at 16 concurrent
  requests. Shapes are dynamic, so a handful of graphs (batch 1 / batched, lengths equal or not) serve every
  step; prefill stays eager (compute-bound). Compiling costs ~15-140 s (less from inductor's on-disk cache):
  opt-in, and `Engine.warm_up()` pays it before traffic arrives.
* otherwise the model itself, given oneDNN-packed projection weights for calls of a few rows.

Frozen (compiled) and packed (native) weights are copies taken when the runner was set up, so both step
aside for the plain model once any parameter changes (`weights_unchanged`: RL training the served model).
"""

from __future__ import annotations

import logging

import torch

from nanoseek.engine.latent_cache import kv_cache_for
from nanoseek.engine.native import NativeDecoder, NativeUnavailable, native_required
from nanoseek.engine.native_latent import LatentNativeDecoder
from nanoseek.engine.scheduler import PrefillChunk
from nanoseek.model.config import KV_CACHE_DTYPES

log = logging.getLogger(__name__)


def resolve_kv_cache_dtype(model: torch.nn.Module, name: str = "auto") -> torch.dtype:
    """The dtype the engine's KV cache stores for `model`: `name` (KV_CACHE_DTYPES), "auto" being the model's own.
    float16 is llama.cpp's default cache type: half an fp32 model's cache, each key and value rounded as llama.cpp
    rounds its own (BENCHMARKS.md: on SmolLM2's GGUF it does not move top-1 agreement with llama.cpp beyond the
    spread of llama.cpp's own settings). MLA models cache latents, in the model's dtype."""
    if name not in KV_CACHE_DTYPES:
        raise ValueError(f"kv_cache_dtype must be one of {', '.join(KV_CACHE_DTYPES)}, got {name!r}")
    stored = getattr(torch, name, None) or model.dtype
    if model.config.is_mla and stored != model.dtype:
        raise ValueError(f"an MLA model caches latents in its own dtype ({model.dtype}), not {name}")
    return stored


class ModelRunner:
    def __init__(
        self,
        model: torch.nn.Module,
        *,
        max_batch: int,
        kv_budget_tokens: int,
        compile_decode: bool,
        native_decode: bool,
        kv_cache_dtype: str = "auto",
    ) -> None:
        self.model = model.eval()
        config = model.config
        self.max_batch = max_batch
        # MLA models (DeepSeek-V2/V3) cache compressed latents instead of keys and values (latent_cache.py).
        capacity = min(config.max_position_embeddings, kv_budget_tokens)
        stored = resolve_kv_cache_dtype(model, kv_cache_dtype)
        self.cache = kv_cache_for(config, max_batch, capacity, stored, attention_dtype=model.dtype)
        self.compile_decode = compile_decode
        self.decode_model = self.model
        self.weight_versions: list[tuple[torch.Tensor, int]] = []
        if compile_decode:
            self.decode_model = torch.compile(self.model, dynamic=True, options={"cpp_wrapper": True, "freezing": True})
        self.native_decode = native_decode
        self.native: NativeDecoder | None = None
        self.packed_weights = False
        # Which step decodes, and why not the native one (logs, `nanoseek info`, the server's start line, /health).
        self.decode_path = "not set up yet"
        self.native_unavailable: str | None = None

    def setup(self) -> None:
        """Build the native step and pack weights; called in the engine thread (see engine.in_fresh_thread).
        Without the native step it warns why (a broken toolchain or a missing CPU feature; a model the step is not
        made for only at info level), or raises NativeUnavailable under NANOSEEK_REQUIRE_NATIVE=1."""
        self.decode_path = "compiled PyTorch model" if self.compile_decode else "PyTorch model"
        if self.native_decode:
            # DeepSeek-V2/V3 models (MLA + MoE) have a step of their own (native_latent.py).
            decoder = LatentNativeDecoder if self.model.config.is_mla else NativeDecoder
            try:
                self.native = decoder.build_or_raise(self.model, self.cache, self.max_batch)
                self.decode_path = f"native C step, {self.native.kernel}"
            except NativeUnavailable as why:
                if native_required():
                    message = f"the native decode step is required (NANOSEEK_REQUIRE_NATIVE=1) but unavailable: {why}"
                    raise NativeUnavailable(message, why.failure) from None
                self.native_unavailable = str(why)
                level = logging.WARNING if why.failure else logging.INFO
                log.log(level, "native decode path unavailable, decoding with the %s: %s", self.decode_path, why)
            log.info("decode steps: %s", self.decode_path)
        # Packed weights speed up decode steps of a few rows, which the native step and a compiled step (it
        # packs its frozen weights itself and cannot trace oneDNN's packed linear) do not run through the model.
        if hasattr(self.model, "pack_for_inference") and not self.compile_decode and self.native is None:
            self.packed_weights = self.model.pack_for_inference()
        if self.compile_decode:  # the rotary table must not grow inside a traced step
            self.model.rotary.get(self.cache.position_limit, self.model.dtype, self.model.device)
        if self.compile_decode or self.native is not None:
            self.weight_versions = [(p, p._version) for p in self.model.parameters()]

    def weights_unchanged(self) -> bool:
        return all(param._version == version for param, version in self.weight_versions)

    def native_rows(self) -> int:
        """How many tokens one native step takes now (0: the native step does not apply)."""
        return self.native.max_batch if self.native is not None and self.weights_unchanged() else 0

    def prefill(self, chunk: PrefillChunk) -> torch.Tensor:
        """Logits [groups, vocab] at the last position of the chunk, for each of its prompts."""
        start, length = chunk.start, chunk.length
        chunks = [group.prompt_ids[start : start + length] for group in chunk.groups]
        if chunk.native:
            positions = list(range(start, start + length))
            rows = self.native.step(
                [token for tokens in chunks for token in tokens],
                positions * len(chunk.groups),
                [group.sequences[0].slot for group in chunk.groups for _ in positions],
            )
            return rows[length - 1 :: length]
        # Positions start.. come from cache.seq_len.
        self.cache.begin_prefill([group.sequences[0].slot for group in chunk.groups], start, length)
        return self.model(torch.tensor(chunks), cache=self.cache, last_only=True)[:, -1].float()

    def decode(self, tokens: list[int], positions: list[int], slots: list[int]) -> torch.Tensor:
        """Logits [rows, vocab] of one new token per sequence (token at position, KV in slot)."""
        unchanged = self.weights_unchanged()
        if self.native is not None and unchanged:
            return self.native.step(tokens, positions, slots)
        self.cache.begin_decode(slots, positions)
        # Sequences in lock-step share one position: the model reads it from cache.seq_len (a slice).
        position_ids = None if self.cache.seq_len is not None else torch.tensor(positions).unsqueeze(1)
        model = self.decode_model if unchanged else self.model
        input_ids = torch.tensor([[token] for token in tokens])
        return model(input_ids, position_ids, cache=self.cache)[:, 0].float()
