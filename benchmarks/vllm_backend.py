"""nanoseek's own engine vs vLLM's CPU engine behind the same nanoseek API, on the same weights, in one run.

    python benchmarks/vllm_backend.py --vllm-python .venv-vllm/bin/python          # SmolLM2-135M-Instruct, bf16
    python benchmarks/vllm_backend.py --vllm-python .venv-vllm/bin/python --model HF_FOLDER --tokens 128

Serves the model twice, one after the other, each on 127.0.0.1 only: `nanoseek serve --dtype bfloat16` (the native
engine) and `nanoseek serve --backend vllm --dtype bfloat16` (vLLM's server, compiled as it runs by default, behind
the same API: prompts rendered and replies parsed by nanoseek). Against each, through the API:

* batch 1: one streaming chat request at a time, greedy, `--tokens` tokens of a counting task (long and
  deterministic, so both engines decode the same amount); decode tok/s = (tokens - 1) / (last token - first token),
  the median of 3;
* 16 concurrent: 16 such requests (each counting from its own number) at once; tokens of all / wall time;
* TTFT cold and cached: a ~900-token prompt never sent before (a fresh nonce at its start), `max_tokens` 1, then
  the same prompt again (a prefix-cache hit), the median of 3 prompts.

Prints one JSON line per backend and a table with the ratios (native / vLLM). Run it alone on the machine
(`flock /tmp/nanoseek-bench.lock ...`): ratios measured in one run are what counts.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

COUNTING = "Count from {start} to 1000, one number after another, separated by commas. Do not stop early."
FILLER = (
    "The library keeps its maps in the long room on the second floor, where the windows face north and the light "
    "stays even through the afternoon. "
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve(model: Path, backend: str, vllm_python: str, log: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    command = [sys.executable, "-m", "nanoseek.cli", "serve", "--model", str(model), "--port", str(port)]
    command += ["--dtype", "bfloat16", "--log-level", "warning"]
    if backend == "vllm":
        command += ["--backend", "vllm", "--vllm-python", vllm_python, "--vllm-args", "--max-model-len 4096"]
    env = {**os.environ, "NANOSEEK_DB_PATH": str(Path(tempfile.mkdtemp()) / "web.sqlite3")}
    process = subprocess.Popen(command, env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 3600
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"{backend} server exited ({process.returncode}); see {log}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return process, url
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"{backend} server did not come up; see {log}")
        time.sleep(1)


def stream_chat(url: str, content: str, max_tokens: int) -> dict:
    """One greedy streaming chat request: time to the first and the last token, and the tokens it produced."""
    body = {
        "model": "deepseek-chat",
        "messages": [{"role": "user", "content": content}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    started = time.perf_counter()
    first = last = None
    usage: dict = {}
    with httpx.stream("POST", f"{url}/chat/completions", json=body, timeout=3600) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                usage = chunk["usage"]
            if any(c["delta"].get("content") for c in chunk.get("choices", [])):
                first = first or time.perf_counter()
                last = time.perf_counter()
    return {
        "ttft": (first or time.perf_counter()) - started,
        "decode_seconds": (last or first or started) - (first or started),
        "tokens": usage.get("completion_tokens", 0),
        "cached": usage.get("prompt_cache_hit_tokens", 0),
        "prompt_tokens": usage.get("prompt_tokens", 0),
        "end": last or time.perf_counter(),
    }


def measure(url: str, tokens: int) -> dict:
    for start in (1, 2):  # warm-up: first requests, grammar-free paths, allocations
        stream_chat(url, COUNTING.format(start=start), 16)
    singles = [stream_chat(url, COUNTING.format(start=100 + i), tokens) for i in range(3)]
    batch1 = statistics.median((r["tokens"] - 1) / max(1e-9, r["decode_seconds"]) for r in singles)

    started = time.perf_counter()
    with ThreadPoolExecutor(16) as pool:
        runs = list(pool.map(lambda i: stream_chat(url, COUNTING.format(start=200 + 7 * i), tokens), range(16)))
    concurrent = sum(r["tokens"] for r in runs) / (max(r["end"] for r in runs) - started)

    cold, cached, hits, prompt_tokens = [], [], [], 0
    for _ in range(3):
        prompt = f"Note {uuid.uuid4().hex}. " + FILLER * 28 + "\nIn one word: which way do the windows face?"
        first, again = stream_chat(url, prompt, 1), stream_chat(url, prompt, 1)
        cold.append(first["ttft"])
        cached.append(again["ttft"])
        hits.append(again["cached"])
        prompt_tokens = again["prompt_tokens"]
    return {
        "batch1_decode_tok_s": round(batch1, 1),
        "batch1_tokens": [r["tokens"] for r in singles],
        "concurrent16_tok_s": round(concurrent, 1),
        "concurrent16_tokens": sum(r["tokens"] for r in runs),
        "ttft_cold_s": round(statistics.median(cold), 3),
        "ttft_cached_s": round(statistics.median(cached), 3),
        "ttft_prompt_tokens": prompt_tokens,
        "ttft_cache_hit_tokens": hits,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2-135m-instruct", help="an HF folder, GGUF file or named model")
    parser.add_argument("--vllm-python", default=".venv-vllm/bin/python", help="the interpreter that has vLLM")
    parser.add_argument("--tokens", type=int, default=128, help="tokens per decode request")
    parser.add_argument("--log", type=Path, default=Path(tempfile.gettempdir()) / "vllm_backend_bench.log")
    args = parser.parse_args()
    model = Path(args.model)
    if not model.is_dir():  # both engines load the same bf16 Hugging Face folder
        from nanoseek.api.app import hf_folder

        model = hf_folder(model, Path(tempfile.gettempdir()) / "nanoseek-bench-hf")
    results = {}
    for backend in ("native", "vllm"):
        process, url = serve(model, backend, args.vllm_python, args.log)
        try:
            results[backend] = measure(url, args.tokens)
        finally:
            process.terminate()
            process.wait(timeout=120)
        print(json.dumps({"backend": backend, "model": str(model), **results[backend]}), flush=True)
    native, vllm = results["native"], results["vllm"]
    print("\n| measure | native | vLLM | native / vLLM |\n| --- | --- | --- | --- |")
    for key, label, higher_better in [
        ("batch1_decode_tok_s", "batch-1 decode tok/s", True),
        ("concurrent16_tok_s", "16 concurrent tok/s", True),
        ("ttft_cold_s", f"TTFT cold, {native['ttft_prompt_tokens']}-token prompt (s)", False),
        ("ttft_cached_s", "TTFT cached, same prompt again (s)", False),
    ]:
        ratio = native[key] / vllm[key] if higher_better else vllm[key] / native[key]
        print(f"| {label} | {native[key]} | {vllm[key]} | {ratio:.2f}x {'faster' if ratio >= 1 else 'slower'} |")


if __name__ == "__main__":
    main()
