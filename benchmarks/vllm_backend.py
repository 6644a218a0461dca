"""nanoseek's own engine vs vLLM's CPU engine behind the same nanoseek API, on the same weights, in one run.

    python benchmarks/vllm_backend.py --vllm-python .venv-vllm/bin/python          # SmolLM2-135M-Instruct, bf16
    python benchmarks/vllm_backend.py --vllm-python .venv-vllm/bin/python --model HF_FOLDER --tokens 128 --rounds 3

Serves the model twice at once, each on 127.0.0.1 only: `nanoseek serve --dtype bfloat16` (the native engine) and
`nanoseek serve --backend vllm --dtype bfloat16` (vLLM's server, compiled as it runs by default, behind the same
API: prompts rendered and replies parsed by nanoseek). Then `--rounds` rounds, each measuring both backends one
after the other (the order alternating), so that a change in the machine's load falls on both; each figure is the
median over rounds. Through the API:

* batch 1: one streaming chat request at a time, greedy, `--tokens` tokens of a story (SmolLM2 writes stories to
  any length; asked to count, it mostly answers "1000." at once); decode tok/s = (tokens - 1) / (last token - first
  token), the median of 3;
* 16 concurrent: 16 such requests (each its own story) at once; tokens of all / wall time;
* TTFT cold and cached: a ~900-token prompt never sent before (a fresh nonce at its start), `max_tokens` 1, then
  the same prompt again (a prefix-cache hit), the median of 3 prompts.

Threads: the native server gets `--threads` OpenMP threads (default 1); vLLM binds its own (on a 2-core machine one
core for its model runner, the other reserved for its scheduler process). On a machine other work shares, one
thread each is the fair setting: two threads that meet at barriers wait on each other's time slices.

Prints one JSON line per backend and round and a table with the ratios (native / vLLM). Run it under
`flock /tmp/nanoseek-bench.lock ...` so that no other benchmark runs beside it; ratios measured in one run are what
counts.
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

STORY = "Write a long story, at least 500 words, about a {} and the year that changed their life."
# Each request its own story, so that no two share more than the prompt's prefix.
SUBJECTS = [
    *("lighthouse keeper", "clockmaker", "river pilot", "beekeeper", "glassblower", "mapmaker", "night baker"),
    *("train conductor", "violin maker", "shepherd", "astronomer", "ferryman", "potter", "librarian", "gardener"),
    "blacksmith",
]
BACKENDS = ("native", "vllm")
FILLER = (
    "The library keeps its maps in the long room on the second floor, where the windows face north and the light "
    "stays even through the afternoon. "
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve(model: Path, backend: str, args: argparse.Namespace) -> tuple[subprocess.Popen, str]:
    port = free_port()
    log = args.log
    command = [sys.executable, "-m", "nanoseek.cli", "serve", "--model", str(model), "--port", str(port)]
    command += ["--dtype", "bfloat16", "--log-level", "warning"]
    if backend == "vllm":
        command += ["--backend", "vllm", "--vllm-python", args.vllm_python, "--vllm-args", args.vllm_args]
    env = {
        **os.environ,
        "NANOSEEK_DB_PATH": str(Path(tempfile.mkdtemp()) / "web.sqlite3"),
        "OMP_NUM_THREADS": str(args.threads),
        # GiB of KV cache (16 x ~1k tokens need ~0.4): vLLM's CPU default sizes it from the machine's free memory
        "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1"),
    }
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
    for subject in SUBJECTS[:2]:  # warm-up: first requests, allocations
        stream_chat(url, STORY.format(subject), 16)
    singles = [stream_chat(url, STORY.format(subject), tokens) for subject in SUBJECTS[:3]]
    batch1 = statistics.median((r["tokens"] - 1) / max(1e-9, r["decode_seconds"]) for r in singles)

    started = time.perf_counter()
    with ThreadPoolExecutor(16) as pool:
        runs = list(pool.map(lambda subject: stream_chat(url, STORY.format(subject), tokens), SUBJECTS))
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


def medians(rounds: list[dict]) -> dict:
    """Each figure's median over the rounds; lists (token and cache-hit counts) joined."""
    return {
        key: sum((r[key] for r in rounds), [])
        if isinstance(rounds[0][key], list)
        else round(statistics.median(r[key] for r in rounds), 3)
        for key in rounds[0]
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2-135m-instruct", help="an HF folder, GGUF file or named model")
    parser.add_argument("--vllm-python", default=".venv-vllm/bin/python", help="the interpreter that has vLLM")
    parser.add_argument("--vllm-args", default="--max-model-len 4096", help="vLLM's own flags (e.g. --enforce-eager)")
    parser.add_argument("--tokens", type=int, default=128, help="tokens per decode request")
    parser.add_argument("--rounds", type=int, default=2, help="rounds over both backends, the order alternating")
    parser.add_argument("--threads", type=int, default=1, help="OpenMP threads of the native engine's server")
    parser.add_argument("--log", type=Path, default=Path(tempfile.gettempdir()) / "vllm_backend_bench.log")
    args = parser.parse_args()
    model = Path(args.model)
    if not model.is_dir():  # both engines load the same bf16 Hugging Face folder
        from nanoseek.api.app import hf_folder

        model = hf_folder(model, Path(tempfile.gettempdir()) / "nanoseek-bench-hf")
    servers: dict[str, tuple[subprocess.Popen, str]] = {}
    rounds: dict[str, list[dict]] = {backend: [] for backend in BACKENDS}
    try:
        for backend in BACKENDS:
            servers[backend] = serve(model, backend, args)
        for index in range(args.rounds):
            for backend in BACKENDS if index % 2 == 0 else BACKENDS[::-1]:
                rounds[backend].append(measure(servers[backend][1], args.tokens))
                print(json.dumps({"backend": backend, "round": index, **rounds[backend][-1]}), flush=True)
    finally:
        for process, _url in servers.values():
            process.terminate()
            process.wait(timeout=120)
    native, vllm = medians(rounds["native"]), medians(rounds["vllm"])
    print(json.dumps({"model": str(model), "threads": args.threads, "native": native, "vllm": vllm}))
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
