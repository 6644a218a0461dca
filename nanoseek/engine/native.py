"""The native decode path: a whole decode step of the model in one C call (native_decode.c says why and how).

    decoder = NativeDecoder.build(model, cache, max_batch=32)   # None when the path does not apply
    logits = decoder.step(tokens, positions, slots)            # [B, vocab] fp32; writes the new k/v into cache

`build` compiles native_decode.c once per machine with the C compiler it finds (`cc`, or $CC) into the user's
cache directory (~/.cache/nanoseek/native on Linux, or $NANOSEEK_CACHE_DIR/native), named by a hash of the
source, the flags and the CPU's feature flags, and loads it with ctypes. A build can take minutes (364 s on a
2-core machine busy training), so it says so on stderr, may take NANOSEEK_NATIVE_COMPILE_TIMEOUT seconds (default
1800; 0: no limit), and processes starting at once build it once between them (a lock file beside it). It
applies to fp32 models of nanoseek's own Transformer (Llama and Qwen2 layers) on the CPU, and to bf16 ones where
the CPU has AVX512-BF16 (`serve --dtype bfloat16`: bf16 weights and KV cache, fp32 everywhere else; on the AMX
tile unit where the CPU has one and the layer widths are multiples of 32; native_decode.c), and to models whose
projections are quantized (`serve --dtype q8_0`, nanoseek/model/quantized.py: read in place, AVX512-VNNI where
the CPU has it); DeepSeek-V2/V3 models (MLA + MoE) have their own step, native_latent.py's LatentNativeDecoder.
Anything else -- another dtype, no compiler, a failed or timed-out build, a CPU without a feature the dtype needs
-- returns None (`build_or_raise` raises NativeUnavailable saying why), and the engine decodes with the PyTorch
model, warning why (runner.py); NANOSEEK_REQUIRE_NATIVE=1 makes that an error instead, so that a benchmark cannot
time the PyTorch path as if it were the native step. The C step reads the embedding where the model keeps it,
and fp32/bf16 projection weights as a copy packed in its own layout (`packed_projection`; quantized ones are
stored in the C step's layout already), so the path is only built for models up to `max_weight_bytes`. With
NANOSEEK_NATIVE_IN_PLACE=1 it reads the projections where the model keeps them too (`row_major`: one copy of the
weights, not one for PyTorch and one for the step), at a decode-speed cost (native_decode.c `project_rows`),
except where a projection's widths do not suit that kernel or on AMX tiles. The KV cache may store fp32, bf16
or fp16 (llama.cpp's cache type; the engine's `kv_cache_dtype`) whatever the model's dtype: the step rounds what
it stores and widens what it reads (`KV_TYPES`). The engine stops using the step as soon as any parameter
changes (RL training the served model).

The shared library links the same libgomp that PyTorch loaded (resolved by its soname), so the C step and
PyTorch's own operations share one OpenMP thread pool instead of oversubscribing the cores.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import hashlib
import logging
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Self

import platformdirs
import torch

from nanoseek.engine.kv_cache import SlotKVCache
from nanoseek.model.checkpoint import release_freed_memory
from nanoseek.model.layers import MLP
from nanoseek.model.quantized import QuantizedEmbedding, QuantizedLinear, swiglu_row_order
from nanoseek.model.transformer import Attention, Transformer

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("native_decode.c")
# -march=native: the library is built on the machine that runs it. -ffp-contract=fast: a*b+c as one FMA
# (ISO C modes turn that off by default). -fno-math-errno lets expf/sqrtf inline;
# no -ffast-math, so infinities and NaNs keep their meaning.
CFLAGS = ["-O3", "-march=native", "-ffp-contract=fast", "-fno-math-errno", "-fopenmp", "-fPIC", "-shared", "-std=c11"]

_library: ctypes.CDLL | None = None
_library_error: str | None = None
_library_lock = threading.Lock()

FloatPointer = ctypes.POINTER(ctypes.c_float)


class _DecodeModel(ctypes.Structure):
    # Mirrors `DecodeModel` in native_decode.c, field for field.
    _fields_ = (
        [
            (name, ctypes.c_int32)
            for name in (
                "hidden",
                "num_heads",
                "num_kv_heads",
                "head_dim",
                "intermediate",
                "vocab",
                "num_layers",
                "slot_capacity",
                "kv_type",
                "amx",
                "vnni",
                "embed_type",
            )
        ]
        + [("eps", ctypes.c_float)]
        + [
            (name, ctypes.c_void_p)
            for name in (
                "embed",
                "lm_head",
                "final_norm",
                "cos_table",
                "sin_table",
                "input_norm",
                "post_norm",
                "qkv_weight",
                "qkv_bias",
                "o_weight",
                "o_bias",
                "gate_up_weight",
                "gate_up_bias",
                "down_weight",
                "down_bias",
                "keys",
                "values",
                "weight_types",
            )
        ]
    )


class _Workspace(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_void_p) for name in ("x", "normed", "qkv", "attention", "activation", "scores", "input_pairs")
    ] + [("input_pairs_per_thread", ctypes.c_int32)]


def cache_dir() -> Path:
    root = os.environ.get("NANOSEEK_CACHE_DIR")
    return (Path(root) if root else Path(platformdirs.user_cache_dir("nanoseek", appauthor=False))) / "native"


def cpu_identity() -> str:
    """What -march=native compiles for: a library built on one CPU must not be loaded on another (a home
    directory shared between machines would otherwise hand an AVX-512 build to a CPU without it)."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            return next((line for line in cpuinfo if line.startswith(("flags", "Features"))), platform.processor())
    except OSError:
        return platform.machine() + platform.processor()


class NativeUnavailable(RuntimeError):
    """Why the native step does not serve a model. `failure` tells a broken or missing toolchain, a build that
    failed or timed out, or a CPU without a feature the model's dtype needs (worth a warning: the path should
    apply) from a model the step is not made for (another dtype or architecture, too many weights)."""

    def __init__(self, reason: str, failure: bool = False) -> None:
        super().__init__(reason)
        self.failure = failure


def native_required() -> bool:
    """NANOSEEK_REQUIRE_NATIVE=1: an engine (or `NativeDecoder.build`) that would decode with the PyTorch model
    because the native step does not apply raises NativeUnavailable instead (benchmarks of the native path)."""
    return os.environ.get("NANOSEEK_REQUIRE_NATIVE", "0") == "1"


def compile_timeout() -> float | None:
    """Seconds a build of native_decode.c may take (NANOSEEK_NATIVE_COMPILE_TIMEOUT, default 1800; 0: no limit):
    one took 364 s on a 2-core machine busy training a model, over the 300 s allowed then (issue 19)."""
    seconds = float(os.environ.get("NANOSEEK_NATIVE_COMPILE_TIMEOUT", "1800"))
    return seconds if seconds > 0 else None


def compiled_library() -> ctypes.CDLL:
    """The compiled native_decode.c, built on first use; raises NativeUnavailable when it cannot be (built or
    loaded), with the same reason every later time in the process, without trying again."""
    global _library, _library_error
    with _library_lock:
        if _library is None and _library_error is None:
            try:
                _library = _compile_and_load()
            except (OSError, subprocess.SubprocessError) as error:
                _library_error = str(error)
        if _library is None:
            raise NativeUnavailable(f"the native library cannot be built: {_library_error}", failure=True)
        return _library


def load_library() -> ctypes.CDLL | None:
    """compiled_library(), or None when it cannot be built."""
    try:
        return compiled_library()
    except NativeUnavailable:
        return None


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _compile_and_load() -> ctypes.CDLL:
    named = os.environ.get("CC")  # the cache key has the compiler as named, as it always had
    compiler = shutil.which(named) if named else shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise OSError(
            f"the C compiler {named!r} ($CC) is not on this machine" if named else "no C compiler (cc or gcc)"
        )
    source = SOURCE.read_bytes()
    key = hashlib.sha256(source + " ".join([named or compiler, *CFLAGS, cpu_identity()]).encode()).hexdigest()[:16]
    target = cache_dir() / f"native_decode-{key}.so"
    digest = target.with_suffix(".sha256")
    target.parent.mkdir(parents=True, exist_ok=True)
    # Processes starting together (a server and its tests, several benchmark runs) check and build under one lock:
    # the first builds, the others wait and load its library instead of each spending minutes on the same build.
    with open(target.with_suffix(".lock"), "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"nanoseek: waiting for another process building {target}", file=sys.stderr, flush=True)
            fcntl.flock(lock, fcntl.LOCK_EX)
        # A library is loaded only if it hashes to what its build recorded: a cached file truncated or damaged
        # since (disk full, a bad copy) would otherwise crash every start with SIGBUS when mapped; it is rebuilt.
        if not (target.exists() and digest.exists() and digest.read_text() == _sha256(target)):
            # Built under a temporary name and renamed: a killed build never leaves a torn library.
            with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
                built = Path(scratch) / target.name
                _compile(compiler, built)
                (Path(scratch) / digest.name).write_text(_sha256(built))
                os.replace(built, target)
                os.replace(Path(scratch) / digest.name, digest)
    library = ctypes.CDLL(str(target))
    library.nanoseek_supports_bf16.restype = ctypes.c_int
    library.nanoseek_enable_amx.restype = ctypes.c_int
    library.nanoseek_supports_vnni.restype = ctypes.c_int
    # Both steps take (model, workspace, rows, tokens, positions, slots, logits, threads); the structs are
    # passed as addresses (native_latent.py's extend these).
    for step in (library.nanoseek_decode_step, library.nanoseek_latent_decode_step):
        step.restype = None
        step.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, *[ctypes.c_void_p] * 4, ctypes.c_int]
    return library


def _compile(compiler: str, built: Path) -> None:
    """Build native_decode.c into `built`, saying so on stderr (and again each minute it lasts), within
    compile_timeout(). The compiler runs in a process group of its own, killed whole (the driver and the cc1 and as
    it started) when the build times out or is interrupted."""
    limit = compile_timeout()
    print(
        f"nanoseek: compiling the native decode step ({SOURCE.name}, once per machine and source) with {compiler}; "
        "this can take minutes",
        file=sys.stderr,
        flush=True,
    )
    started = time.monotonic()
    command = [compiler, *CFLAGS, str(SOURCE), "-o", str(built), "-lm"]
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    try:
        while True:
            elapsed = time.monotonic() - started
            if limit is not None and elapsed >= limit:
                raise OSError(
                    f"compiling {SOURCE.name} took over {limit:g} s and was stopped (NANOSEEK_NATIVE_COMPILE_TIMEOUT "
                    "allows more: a busy machine compiles slowly)"
                )
            try:
                output, _ = process.communicate(timeout=60 if limit is None else min(60, limit - elapsed))
                break
            except subprocess.TimeoutExpired:
                if time.monotonic() - started >= 60:
                    print(f"nanoseek: still compiling ({time.monotonic() - started:.0f} s)", file=sys.stderr)
    finally:
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
    if process.returncode != 0:
        raise OSError(f"{compiler} failed to build {SOURCE.name}: {output.strip()[-2000:]}")
    print(f"nanoseek: compiled {SOURCE.name} in {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)


COLUMN_BLOCK = 32  # as in native_decode.c
TILE_ROWS, TILE_INPUTS = 16, 32  # an AMX bf16 tile of inputs: 16 rows of 32
HEADS_PER_PASS = 4  # as in native_decode.c: a thread's attention scores are this many rows of slot_capacity


def packed_projection(weight: torch.Tensor) -> torch.Tensor:
    """A [out, in] projection weight in native_decode.c's layout: blocks of 32 output columns, each block
    [in, 32] contiguous, the last block zero-padded ([ceil(out / 32), in, 32]). A bf16 weight keeps its dtype
    and pairs its inputs: [ceil(out / 32), in / 2, 32, 2], inputs 2p and 2p+1 of a column side by side, what
    one VDPBF16PS lane multiplies."""
    out_features, in_features = weight.shape
    blocks = -(-out_features // COLUMN_BLOCK)
    padded = torch.zeros(blocks * COLUMN_BLOCK, in_features, dtype=weight.dtype)
    padded[:out_features] = weight.detach()
    if weight.dtype == torch.bfloat16:
        return padded.view(blocks, COLUMN_BLOCK, in_features // 2, 2).permute(0, 2, 1, 3).contiguous()
    return padded.view(blocks, COLUMN_BLOCK, in_features).transpose(1, 2).contiguous()


def padded_intermediate(intermediate_size: int) -> int:
    """The MLP width the C step works with: a multiple of 32 (zero rows and columns fill it up)."""
    return -(-intermediate_size // COLUMN_BLOCK) * COLUMN_BLOCK


def swiglu_blocks(gate_up: torch.Tensor | None, padded: int) -> torch.Tensor | None:
    """A gate/up projection's weight [2I, in] (or bias [2I]), gate rows then up rows, reordered for the C step's
    SWIGLU epilogue: each block of 32 rows is 16 gate rows and the same 16 up rows, both zero-padded to
    `padded` rows."""
    if gate_up is None:
        return None
    gate, up = gate_up.detach().chunk(2, dim=0)
    halves = torch.zeros(2, padded, *gate.shape[1:], dtype=gate.dtype)
    halves[0, : len(gate)], halves[1, : len(up)] = gate, up
    half_block = COLUMN_BLOCK // 2
    return (
        halves.view(2, padded // half_block, half_block, *gate.shape[1:])
        .transpose(0, 1)
        .reshape(2 * padded, *gate.shape[1:])
    )


def padded_inputs(weight: torch.Tensor, in_features: int) -> torch.Tensor:
    """A [out, in] weight widened to `in_features` inputs by zero columns."""
    widened = torch.zeros(weight.shape[0], in_features, dtype=weight.dtype)
    widened[:, : weight.shape[1]] = weight.detach()
    return widened


def fp32_vector(tensor: torch.Tensor | None) -> torch.Tensor | None:
    """A norm's weight or a bias as the C step reads it: fp32 whatever the model's dtype."""
    return None if tensor is None else tensor.detach().float().contiguous()


def bf16_tiles(library: ctypes.CDLL, input_widths: list[int], allow_amx: bool) -> bool:
    """For a bf16 model whose projections take inputs of `input_widths`: whether its step runs on AMX tiles
    (the CPU has them and every width is a multiple of 32). Raises NativeUnavailable when bf16 cannot run natively
    at all (no AVX512-BF16, or an odd width: the step pairs inputs)."""
    if not library.nanoseek_supports_bf16():
        raise NativeUnavailable("bfloat16 weights need AVX512-BF16, which this CPU lacks", failure=True)
    if any(width % 2 for width in input_widths):
        raise NativeUnavailable(f"bfloat16 weights with an odd input width ({input_widths})")
    return allow_amx and all(width % TILE_INPUTS == 0 for width in input_widths) and bool(library.nanoseek_enable_amx())


def check_cpu_transformer(model: torch.nn.Module) -> None:
    """Raises NativeUnavailable unless `model` is nanoseek's own Transformer on the CPU."""
    if not isinstance(model, Transformer):
        raise NativeUnavailable(f"a {type(model).__name__}, not nanoseek's Transformer")
    if model.device.type != "cpu":
        raise NativeUnavailable(f"a model on {model.device}, not the CPU")


def check_weight_bytes(weight_bytes: int, max_weight_bytes: int) -> None:
    """Raises NativeUnavailable when the step would read more than `max_weight_bytes` of weights."""
    if weight_bytes > max_weight_bytes:
        raise NativeUnavailable(
            f"{weight_bytes / 2**20:.0f} MiB of weights, over its {max_weight_bytes / 2**20:.0f} MiB"
        )


def _pointers(tensors: list[torch.Tensor | None]) -> ctypes.Array:
    return (ctypes.c_void_p * len(tensors))(*[t.data_ptr() if t is not None else None for t in tensors])


# How each projection weight is stored, as native_decode.c's WEIGHT_* codes: a packed copy, quantized blocks, or
# (IN_PLACE_TYPES) the model's own row-major weight.
WEIGHT_TYPES = {torch.float32: 0, torch.bfloat16: 1, "q8_0": 2, "q4_1": 3}
IN_PLACE_TYPES = {torch.float32: 4, torch.bfloat16: 5}
KERNEL_NAMES = {0: "fp32", 1: "bf16", 2: "q8_0", 3: "q4_1", 4: "fp32", 5: "bf16"}
# How the KV cache stores keys and values, as native_decode.c's KV_* codes: any of these for any model the step
# serves (attention widens what it reads to fp32).
KV_TYPES = {torch.float32: 0, torch.bfloat16: 1, torch.float16: 2}
# Inputs per step of native_decode.c's in-place kernels (`project_rows`): a projection read in place takes a
# multiple of this many inputs.
IN_PLACE_INPUT_STEP = {torch.float32: 16, torch.bfloat16: 32}


def vnni_allowed() -> bool:
    """NANOSEEK_NATIVE_VNNI=0 keeps quantized projections on the portable loops (tests and benchmarks)."""
    return os.environ.get("NANOSEEK_NATIVE_VNNI", "1") != "0"


def in_place_requested() -> bool:
    """NANOSEEK_NATIVE_IN_PLACE=1: fp32/bf16 projections are read from the model's own weights instead of a packed
    copy, which halves the memory of an fp32/bf16 model served natively and slows its steps (native_decode.c
    `project_rows` has the figures)."""
    return os.environ.get("NANOSEEK_NATIVE_IN_PLACE", "0") == "1"


@torch.no_grad()
def row_major(weight: torch.nn.Parameter) -> torch.Tensor:
    """The model's own [out, in] weight, row-major, as the C step reads it in place. transformer.py keeps its
    matrices column-major, which speeds up PyTorch's batch-1 GEMV, a call a model served by the native step no
    longer makes; each is re-laid out here once (one matrix at a time: no second copy of the model), and the
    PyTorch forward, training, copies and saves see the same values. The tensor returned shares the weight's
    storage: kept by the decoder, it stays valid even if the parameter is later given new data."""
    if not weight.is_contiguous():
        weight.data = weight.data.contiguous()
    return weight.detach()


class NativeDecoder:
    """Decode steps of one model over one SlotKVCache, through the compiled C step."""

    # Prompts of at most this many steps of max_batch tokens are prefilled through the step rather than the
    # PyTorch forward (the engine's prefill; a quantized model's prompts always are).
    short_prompt_steps = 0

    def __init__(
        self, library: ctypes.CDLL, model: Transformer, cache: SlotKVCache, max_batch: int, amx: bool, vnni: bool
    ) -> None:
        config = model.config
        self._library, self.max_batch = library, max_batch
        self._function = library.nanoseek_decode_step
        self._threads = torch.get_num_threads()
        layers = list(model.layers)
        intermediate = padded_intermediate(config.intermediate_size)
        # The MLP's weights are read in place only when the C step's padded width is the model's own.
        mlp_in_place = intermediate == config.intermediate_size
        self.copied_weight_bytes = 0  # bytes of packed copies beside the model's weights (tests, benchmarks)
        in_place = in_place_requested()

        def weight(
            layer: torch.nn.Module, widths_suit: bool = True, copy=packed_projection
        ) -> tuple[torch.Tensor, int]:
            """What the C step reads for a projection, and its WEIGHT_* code: a quantized layer's own blocks
            (stored in the C step's layout), the model's own weight in place where the layout and widths allow
            it, else `copy(weight)`, a packed copy."""
            if isinstance(layer, QuantizedLinear):
                return layer.packed, WEIGHT_TYPES[layer.qtype]
            dtype = layer.weight.dtype
            if (
                widths_suit
                and in_place
                and not (amx and dtype == torch.bfloat16)  # the tiles read the packed layout
                and layer.in_features % IN_PLACE_INPUT_STEP[dtype] == 0
            ):
                return row_major(layer.weight), IN_PLACE_TYPES[dtype]
            packed = copy(layer.weight)
            self.copied_weight_bytes += packed.numel() * packed.element_size()
            return packed, WEIGHT_TYPES[dtype]

        # Every array the C step reads is kept alive here; the struct only holds their addresses.
        if isinstance(model.embed_tokens, QuantizedEmbedding):
            embed, embed_type = model.embed_tokens.table.packed, WEIGHT_TYPES[model.embed_tokens.table.qtype]
        else:  # the model's own table: [vocab, hidden] rows, or transformer.py's column-major one as [hidden, vocab]
            table = row_major(model.embed_tokens.weight) if in_place else model.embed_tokens.weight.detach()
            if table.dtype not in IN_PLACE_TYPES:
                table = table.float()
            if table.is_contiguous():
                embed, embed_type = table, IN_PLACE_TYPES[table.dtype]
            else:
                embed, embed_type = table.t().contiguous(), WEIGHT_TYPES[table.dtype]
        tables: dict[str, list[torch.Tensor | None]] = {
            name: [] for name in ("qkv_weight", "o_weight", "gate_up_weight", "down_weight")
        }
        types = []
        for b in layers:
            for name, stored in (
                ("qkv_weight", weight(b.self_attn.qkv_proj)),
                ("o_weight", weight(b.self_attn.o_proj)),
                (
                    "gate_up_weight",
                    weight(
                        b.mlp.gate_up_proj, mlp_in_place, lambda w: packed_projection(swiglu_blocks(w, intermediate))
                    ),
                ),
                (
                    "down_weight",
                    weight(b.mlp.down_proj, mlp_in_place, lambda w: packed_projection(padded_inputs(w, intermediate))),
                ),
            ):
                tables[name].append(stored[0])
                types.append(stored[1])
        lm_head, lm_head_type = weight(model.lm_head)
        types.append(lm_head_type)
        if in_place:
            release_freed_memory()  # the column-major matrices row_major replaced
        weight_types = torch.tensor(types, dtype=torch.int32)
        # Which multiplies the projections use, for logs and benchmarks.
        kernels = []
        for code in dict.fromkeys(types):
            name = KERNEL_NAMES[code]
            if name == "bf16":
                name += " AMX tiles" if amx else " AVX512-BF16"
            elif code in (WEIGHT_TYPES["q8_0"], WEIGHT_TYPES["q4_1"]):
                name += " AVX512-VNNI" if vnni else " portable"
            kernels.append(name)
        self.kernel = ", ".join(dict.fromkeys(kernels))
        if cache.dtype != model.dtype:
            self.kernel += f", {str(cache.dtype).removeprefix('torch.')} KV cache"
        self.quantized = any(code in (WEIGHT_TYPES["q8_0"], WEIGHT_TYPES["q4_1"]) for code in types)
        for name, get in (
            ("input_norm", lambda b: fp32_vector(b.input_layernorm.weight)),
            ("post_norm", lambda b: fp32_vector(b.post_attention_layernorm.weight)),
            ("qkv_bias", lambda b: fp32_vector(b.self_attn.qkv_proj.bias)),
            ("o_bias", lambda b: fp32_vector(b.self_attn.o_proj.bias)),
            ("gate_up_bias", lambda b: fp32_vector(swiglu_blocks(b.mlp.gate_up_proj.bias, intermediate))),
            ("down_bias", lambda b: fp32_vector(b.mlp.down_proj.bias)),
        ):
            tables[name] = [get(block) for block in layers]
        tables["keys"], tables["values"] = cache.keys, cache.values
        self._keep: list = []
        self._model = self._decode_model(
            model,
            cache,
            tables,
            embed=embed,
            embed_type=embed_type,
            lm_head=lm_head,
            weight_types=weight_types,
            amx=amx,
            vnni=vnni,
            num_heads=config.num_attention_heads,
            num_kv_heads=config.num_key_value_heads,
            head_dim=config.head_dim,
            intermediate=intermediate,
        )
        qkv_width = (config.num_attention_heads + 2 * config.num_key_value_heads) * config.head_dim
        widths = {
            "x": config.hidden_size,
            "normed": config.hidden_size,
            "qkv": qkv_width,
            "attention": config.num_attention_heads * config.head_dim,
            "activation": intermediate,
        }
        self._buffers = {name: torch.empty(max_batch * width) for name, width in widths.items()}
        pairs_per_thread = self._add_thread_buffers(
            max_batch, max(widths["attention"], config.hidden_size, intermediate), cache.slot_capacity
        )
        self._workspace = _Workspace(
            **{name: buffer.data_ptr() for name, buffer in self._buffers.items()},
            input_pairs_per_thread=pairs_per_thread,
        )
        self._logits = torch.empty(max_batch, config.vocab_size)

    def _decode_model(
        self,
        model: Transformer,
        cache: SlotKVCache,
        tables: dict[str, list[torch.Tensor | None]],
        *,
        embed: torch.Tensor,
        embed_type: int,
        lm_head: torch.Tensor,
        weight_types: torch.Tensor,
        amx: bool,
        vnni: bool,
        **widths: int,
    ) -> _DecodeModel:
        """native_decode.c's DecodeModel, the part both steps read: the model's sizes and attention and MLP
        `widths` (num_heads, num_kv_heads, head_dim, intermediate), the embedding (`embed` [hidden, vocab] fp32,
        or a quantized table of `embed_type`), output head, final norm and rotary tables, and the per-layer
        `tables` (a tensor, or None, per layer). Every tensor is kept alive in self._keep: the struct only holds
        addresses."""
        config = model.config
        final_norm = fp32_vector(model.norm.weight)
        cos, sin = (
            table.contiguous() for table in model.rotary.get(cache.position_limit, torch.float32, torch.device("cpu"))
        )
        arrays = {name: _pointers(tensors) for name, tensors in tables.items()}
        self._keep += [embed, lm_head, final_norm, cos, sin, weight_types, tables, arrays]
        return _DecodeModel(
            hidden=config.hidden_size,
            vocab=config.vocab_size,
            num_layers=config.num_hidden_layers,
            slot_capacity=cache.slot_capacity,
            kv_type=KV_TYPES[cache.dtype],
            amx=int(amx),
            vnni=int(vnni),
            embed_type=embed_type,
            eps=config.rms_norm_eps,
            embed=embed.data_ptr(),
            lm_head=lm_head.data_ptr(),
            final_norm=final_norm.data_ptr(),
            cos_table=cos.data_ptr(),
            sin_table=sin.data_ptr(),
            weight_types=weight_types.data_ptr(),
            **widths,
            **{name: ctypes.cast(array, ctypes.c_void_p) for name, array in arrays.items()},
        )

    def _add_thread_buffers(self, max_batch: int, widest_input: int, slot_capacity: int) -> int:
        """Each thread's scratch, into self._buffers: its attention scores (HEADS_PER_PASS rows of
        `slot_capacity`), and one projection's input rows as bf16, two per int32, rows rounded up to whole AMX
        tiles; or quantized to int8 with a scale and a sum per 32 inputs (native_decode.c `quantize_rows`),
        which fits in the same bytes. Returns the int32s per thread of the latter."""
        self._buffers["scores"] = torch.empty(self._threads * HEADS_PER_PASS * slot_capacity)
        padded_batch = -(-max_batch // TILE_ROWS) * TILE_ROWS
        pairs_per_thread = padded_batch * widest_input // 2 + 16
        self._buffers["input_pairs"] = torch.empty(self._threads * pairs_per_thread, dtype=torch.int32)
        return pairs_per_thread

    @classmethod
    def build(cls, model: torch.nn.Module, cache: SlotKVCache, max_batch: int, **options: Any) -> Self | None:
        """build_or_raise(...), or None when the native path does not apply (see the module docstring); under
        NANOSEEK_REQUIRE_NATIVE=1 it raises NativeUnavailable instead."""
        try:
            return cls.build_or_raise(model, cache, max_batch, **options)
        except NativeUnavailable:
            if native_required():
                raise
            return None

    @classmethod
    def build_or_raise(
        cls,
        model: torch.nn.Module,
        cache: SlotKVCache,
        max_batch: int,
        max_weight_bytes: int = 1 << 30,
        allow_amx: bool = True,
        allow_vnni: bool = True,
    ) -> NativeDecoder:
        """A decoder for `model`; raises NativeUnavailable saying why when the native path does not apply to it.
        `allow_amx=False` keeps a bf16 model off the tile unit, `allow_vnni=False` (or NANOSEEK_NATIVE_VNNI=0)
        a quantized one off VPDPBUSD (tests and benchmarks compare them)."""
        check_cpu_transformer(model)
        if model.dtype not in (torch.float32, torch.bfloat16) or cache.dtype not in KV_TYPES:
            raise NativeUnavailable(f"{model.dtype} weights or a {cache.dtype} KV cache (it takes float32 or bfloat16)")
        if not all(type(b.self_attn) is Attention and type(b.mlp) is MLP for b in model.layers):
            raise NativeUnavailable("layers other than nanoseek's Llama/Qwen2 attention and MLP")
        projections = [model.lm_head] + [
            layer
            for b in model.layers
            for layer in (b.self_attn.qkv_proj, b.self_attn.o_proj, b.mlp.gate_up_proj, b.mlp.down_proj)
        ]
        weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
        weight_bytes += sum(layer.weight_bytes for layer in projections if isinstance(layer, QuantizedLinear))
        check_weight_bytes(weight_bytes, max_weight_bytes)
        config = model.config
        for b in model.layers:  # quantized gate/up blocks must be interleaved for the SwiGLU epilogue
            gate_up = b.mlp.gate_up_proj
            if isinstance(gate_up, QuantizedLinear) and (
                gate_up.row_order is None
                or not torch.equal(gate_up.row_order, swiglu_row_order(config.intermediate_size))
            ):
                raise NativeUnavailable("a quantized gate/up projection whose rows are not in SwiGLU block order")
        library = compiled_library()
        dtypes = {layer.weight.dtype for layer in projections if not isinstance(layer, QuantizedLinear)}
        amx = False
        if torch.bfloat16 in dtypes:
            input_widths = [
                config.hidden_size,
                config.num_attention_heads * config.head_dim,
                padded_intermediate(config.intermediate_size),
            ]
            amx = bf16_tiles(library, input_widths, allow_amx)
        vnni = allow_vnni and vnni_allowed() and bool(library.nanoseek_supports_vnni())
        return cls(library, model, cache, max_batch, amx, vnni)

    def step(self, tokens: list[int], positions: list[int], slots: list[int]) -> torch.Tensor:
        """Logits [len(tokens), vocab] for one new token per sequence; writes its k/v at `positions` of `slots`."""
        rows = len(tokens)
        if not 0 < rows <= self.max_batch:
            raise ValueError(f"a native decode step takes 1..{self.max_batch} rows, not {rows}")
        arguments = torch.tensor([tokens, positions, slots], dtype=torch.int64)
        self._function(
            ctypes.addressof(self._model),
            ctypes.addressof(self._workspace),
            rows,
            arguments[0].data_ptr(),
            arguments[1].data_ptr(),
            arguments[2].data_ptr(),
            self._logits.data_ptr(),
            self._threads,
        )
        return self._logits[:rows].clone()  # the buffer is reused by the next step
