"""Bounded loopback load test of `nanoseek serve`: many concurrent streaming clients for a fixed time.

    python benchmarks/load_test.py                       # 64 clients, 60 s, the embedded default model
    python benchmarks/load_test.py --model ckpt --clients 96 --seconds 120

Starts the server as a subprocess on 127.0.0.1 (never anything else), runs `--clients` asyncio clients that
each send streaming chat requests back to back until `--seconds` have passed, and reports: requests, status
codes, 5xx count, streams that ended with `data: [DONE]`, streams that did not, keep-alive comments seen,
and the server's RSS after warm-up vs at the end. Exit status 1 if any 5xx, any stream without [DONE], or
RSS grew more than 10% after warm-up. This is a robustness check, not a speed claim.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx
import psutil

PROMPTS = ["hi", "Write a function that adds two numbers.", "What is 2+2?", "Explain recursion briefly."]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(model: Path, port: int, max_batch: int) -> subprocess.Popen:
    env = {**os.environ, "NANOSEEK_DB_PATH": str(Path(tempfile.mkdtemp()) / "web.sqlite3")}
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "nanoseek.cli",
            "serve",
            "--model",
            str(model),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--max-batch",
            str(max_batch),
            "--log-level",
            "warning",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_until_up(url: str, process: subprocess.Popen, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"server exited: {process.stderr.read()}")
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise SystemExit("server did not come up")


class Tally:
    def __init__(self) -> None:
        self.status: Counter[int] = Counter()
        self.done = 0
        self.unfinished = 0
        self.keepalives = 0
        self.transport_errors = 0


async def client_loop(index: int, url: str, stop_at: float, max_tokens: int, tally: Tally) -> None:
    async with httpx.AsyncClient(timeout=httpx.Timeout(120.0)) as http:
        turn = 0
        while time.monotonic() < stop_at:
            body = {
                "model": "deepseek-chat",
                "stream": True,
                "max_tokens": max_tokens,
                "messages": [{"role": "user", "content": PROMPTS[(index + turn) % len(PROMPTS)]}],
                "stream_options": {"include_usage": True},
            }
            turn += 1
            try:
                async with http.stream("POST", f"{url}/chat/completions", json=body) as response:
                    tally.status[response.status_code] += 1
                    if response.status_code != 200:
                        await response.aread()
                        continue
                    finished = False
                    async for line in response.aiter_lines():
                        if line == ": keep-alive":
                            tally.keepalives += 1
                        elif line == "data: [DONE]":
                            finished = True
                    if finished:
                        tally.done += 1
                    else:
                        tally.unfinished += 1
            except httpx.TransportError:
                tally.transport_errors += 1


async def run_clients(
    url: str, clients: int, seconds: float, max_tokens: int, tally: Tally, server: psutil.Process, warmup: float
) -> tuple[float, float]:
    stop_at = time.monotonic() + seconds
    tasks = [asyncio.create_task(client_loop(i, url, stop_at, max_tokens, tally)) for i in range(clients)]
    await asyncio.sleep(warmup)
    rss_warm = server.memory_info().rss
    await asyncio.gather(*tasks)
    return rss_warm, server.memory_info().rss


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model",
        type=Path,
        help="checkpoint (default: the embedded default model, else a random tiny one made in a temp dir)",
    )
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--warmup", type=float, default=10.0)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--max-batch", type=int, default=16)
    args = parser.parse_args(argv)
    if not (1 <= args.clients <= 512 and 1 <= args.seconds <= 1800 and args.warmup < args.seconds):
        raise SystemExit("bounded by design: 1..512 clients, 1..1800 s, warm-up shorter than the run")
    model = args.model
    if model is None:
        from nanoseek.api.app import DEFAULT_MODEL_DIR

        if (DEFAULT_MODEL_DIR / "config.json").is_file():
            model = DEFAULT_MODEL_DIR
        else:  # no trained model in this install: a random one loads the server the same way
            from nanoseek.model.random_init import make_random_checkpoint

            model = make_random_checkpoint(Path(tempfile.mkdtemp()) / "tiny", shape="tiny", vocab_size=512, seed=0)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = start_server(model, port, args.max_batch)
    try:
        wait_until_up(url, process)
        tally = Tally()
        started = time.monotonic()
        rss_warm, rss_end = asyncio.run(
            run_clients(
                url, args.clients, args.seconds, args.max_tokens, tally, psutil.Process(process.pid), args.warmup
            )
        )
        elapsed = time.monotonic() - started
    finally:
        process.terminate()
        process.wait(timeout=60)
    server_errors = sum(n for code, n in tally.status.items() if code >= 500)
    growth = rss_end / rss_warm - 1
    rows = [
        ("clients", args.clients),
        ("duration (s)", f"{elapsed:.1f}"),
        ("requests", sum(tally.status.values())),
        ("status codes", dict(sorted(tally.status.items()))),
        ("5xx responses", server_errors),
        ("streams ended with [DONE]", tally.done),
        ("streams without [DONE]", tally.unfinished),
        ("transport errors", tally.transport_errors),
        ("keep-alive comments", tally.keepalives),
        ("server RSS after warm-up (MiB)", f"{rss_warm / 2**20:.1f}"),
        ("server RSS at end (MiB)", f"{rss_end / 2**20:.1f}"),
        ("RSS growth after warm-up", f"{growth:+.1%}"),
    ]
    print("| measure | value |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")
    ok = server_errors == 0 and tally.unfinished == 0 and tally.transport_errors == 0 and growth <= 0.10
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
