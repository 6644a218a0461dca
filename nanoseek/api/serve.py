"""`nanoseek serve`: run the DeepSeek-compatible API and the web chat under uvicorn.

    nanoseek serve                                  # the embedded default model on http://127.0.0.1:8000
    nanoseek serve --model path/to/ckpt --port 9000 --api-keys keys.txt
    nanoseek serve --backend vllm --model hf-folder --vllm-python .venv-vllm/bin/python --vllm-args "-tp 2"
    NANOSEEK_MODEL=ckpt NANOSEEK_API_KEYS=sk-1,sk-2 nanoseek serve --host 0.0.0.0

Every flag has a NANOSEEK_* environment variable (see settings.py); flags win. Binding an address other
machines can reach needs API keys, or the server refuses to start. Ctrl-C (SIGINT) or SIGTERM shuts down
gracefully: no new connections, in-flight requests get `--graceful-seconds` to finish, then the rest are
cancelled and the engine stops.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import uvicorn

from nanoseek.api.settings import DTYPE_CHOICES, Settings, SettingsError, parse_model_map, settings_from_env
from nanoseek.model.config import KV_CACHE_DTYPES


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="nanoseek serve", description="Serve the DeepSeek-compatible API.")
    parser.add_argument(
        "--model", type=Path, help="checkpoint directory, GGUF file or named model (default: the embedded model)"
    )
    parser.add_argument(
        "--serve-model",
        dest="model_map",
        action="append",
        metavar="NAME=PATH",
        help="serve another checkpoint under a model name (repeatable), e.g. deepseek-reasoner=ckpt",
    )
    parser.add_argument("--host", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (default 8000)")
    parser.add_argument(
        "--allowed-host",
        dest="allowed_hosts",
        action="append",
        metavar="NAME",
        help="a name the Host header may carry besides loopback names and --host (repeatable), e.g. a proxy's",
    )
    parser.add_argument(
        "--api-keys", dest="api_keys_file", type=Path, help="file of API keys, one per line: KEY [quota=TOKENS] [rpm=N]"
    )
    parser.add_argument("--rpm", dest="requests_per_minute", type=int, help="requests per minute per key")
    parser.add_argument("--max-queue", type=int, help="requests that may wait before new ones get 503")
    parser.add_argument(
        "--plan-seconds",
        type=float,
        help="longest a request's rendering and tokenizing may take (default 5)",
    )
    parser.add_argument(
        "--grammar-seconds",
        type=float,
        help="longest a request waits for its grammar to compile (default 60): then a 400, or for tool_choice auto "
        "the request is served without it, and its X-Nanoseek-Tool-Grammar header says so",
    )
    parser.add_argument(
        "--share-prefix-cache",
        action="store_true",
        default=None,
        help="let requests of different API keys share cached prompt prefixes (faster, but a key can then "
        "tell from cache hits what other keys' prompts begin with); off by default",
    )
    parser.add_argument("--max-batch", type=int, help="sequences decoded together")
    parser.add_argument(
        "--tool-parser",
        choices=["auto", "deepseek", "deepseek_v3", "hermes"],
        help="tool-call format of the model's output (default: read from the chat template)",
    )
    parser.add_argument(
        "--reasoning-parser",
        choices=["auto", "deepseek", "none"],
        help="how <think> output is split into reasoning_content",
    )
    parser.add_argument(
        "--dtype",
        choices=DTYPE_CHOICES,
        help="weights in memory (default auto: as the checkpoint stores them); the native C step "
        "decodes float32 models, and bfloat16 ones on CPUs with AVX512-BF16 (on AMX tiles "
        "where there are any: about 2x float32 at batch 1; BENCHMARKS.md); q8_0 / q4_1 quantize the "
        "projections at load time and decode from the quantized blocks (AVX512-VNNI where the CPU has it)",
    )
    parser.add_argument(
        "--kv-cache-dtype",
        choices=KV_CACHE_DTYPES,
        help="what the KV cache stores (default auto: the weights' dtype; float32 for a GGUF file's quantized "
        "blocks); float16 is llama.cpp's default, half the memory of float32; attention computes in the model's "
        "dtype either way (the native C step widens what it reads)",
    )
    parser.add_argument(
        "--no-native",
        dest="native_decode",
        action="store_false",
        default=None,
        help="decode with the PyTorch model instead of the native C step (which models use "
        "when the machine has a C compiler; BENCHMARKS.md)",
    )
    parser.add_argument(
        "--compile",
        dest="compile_decode",
        action="store_true",
        default=None,
        help="torch.compile the decode steps the native step does not serve (fp16 models, "
        "--no-native), with frozen weights: about 1.8x eager tokens/s after a compile at "
        "start-up (needs a C++ compiler)",
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        help="folder of the context cache's disk tier (default: the user cache folder, nanoseek/prefix-cache)",
    )
    parser.add_argument(
        "--disk-cache-gb",
        type=float,
        help="keep up to this many GB of 64-token prompt-prefix KV blocks on disk, found again after a restart "
        "(default 0: memory only)",
    )
    parser.add_argument("--no-web", dest="web", action="store_false", default=None, help="do not serve the web chat")
    parser.add_argument(
        "--graceful-seconds",
        type=float,
        default=30.0,
        help="how long in-flight requests may run on after a shutdown signal",
    )
    parser.add_argument(
        "--backend",
        choices=["native", "vllm"],
        help="the engine: nanoseek's own (default), or vLLM's server started on --model (docs/API.md, vLLM backend)",
    )
    parser.add_argument(
        "--backend-url",
        help="an OpenAI-compatible vLLM or SGLang server already serving --model (e.g. http://127.0.0.1:8100/v1)",
    )
    parser.add_argument("--vllm-python", help="the Python interpreter that has vLLM (default: this one)")
    parser.add_argument("--vllm-args", help='flags for vLLM\'s server, one string, e.g. "-tp 2 --max-model-len 8192"')
    parser.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(list(sys.argv[1:] if argv is None else argv))
    overrides = {k: v for k, v in vars(args).items() if k != "graceful_seconds"}
    try:
        if args.model_map:
            overrides["model_map"] = parse_model_map(args.model_map, "--serve-model")
        settings: Settings = settings_from_env(**overrides)
        from nanoseek.api.app import create_app

        app = create_app(settings)
    except SettingsError as exc:
        print(f"nanoseek serve: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    engine = app.state.registry.default.engine
    unavailable = f" (native step unavailable: {engine.native_unavailable})" if engine.native_unavailable else ""
    print(
        f"nanoseek serve: {app.state.model_label} on http://{settings.host}:{settings.port} "
        f"({'API keys required' if settings.api_keys else 'no API keys'}); decode: {engine.decode_path}{unavailable}",
        file=sys.stderr,
    )
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        timeout_graceful_shutdown=args.graceful_seconds,
        access_log=False,
    )
    uvicorn.Server(config).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
