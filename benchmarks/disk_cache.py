"""Time to first token of a 960-token prompt after a server restart (the prefix cache's disk tier) vs cold.

    flock /tmp/nanoseek-bench.lock python benchmarks/disk_cache.py            # the embedded default model
    python benchmarks/disk_cache.py --model PATH --prompts 5

Each phase runs in a process of its own, as a restarted server would: `cold` builds an engine over an empty
cache folder and times each prompt's first token (a full prefill), then shuts the engine down, which leaves
the prompts' 64-token blocks on disk; `restart` is a new process with an empty memory cache over the same
folder, timing the same prompts, whose blocks now come from disk. Both processes first warm up on a short
prompt (no whole block, so nothing on disk). The files were just written, so they sit in the OS page cache:
this measures nanoseek's read, check and copy path, not a cold disk.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL = ROOT / "nanoseek" / "default_model"


def run_phase(model: Path, cache_dir: Path, prompts: int, length: int, threads: int) -> list[float]:
    import torch

    from nanoseek.engine import Engine, Request, SamplingParams
    from nanoseek.model.loader import load_checkpoint

    torch.set_num_threads(threads)
    checkpoint = load_checkpoint(str(model))
    engine = Engine(checkpoint.model, checkpoint.tokenizer, cache_dir=cache_dir, disk_cache_bytes=1 << 30)
    params = SamplingParams(max_tokens=1, temperature=0, ignore_eos=True)
    vocab = checkpoint.model.config.vocab_size
    engine.generate([Request(list(range(3, 13)), params)])  # warm-up: no whole block
    times, cached = [], []
    for seed in range(prompts):
        prompt = torch.randint(3, vocab, (length,), generator=torch.Generator().manual_seed(seed)).tolist()
        started = time.perf_counter()
        [completion] = engine.generate([Request(prompt, params)])
        times.append(time.perf_counter() - started)
        cached.append(completion.usage.cached_tokens)
    engine.shutdown()
    print(json.dumps({"times": times, "cached": cached}))
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--prompts", type=int, default=5)
    parser.add_argument("--length", type=int, default=960)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--phase", choices=["cold", "restart"], help=argparse.SUPPRESS)
    parser.add_argument("--cache-dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        run_phase(args.model, args.cache_dir, args.prompts, args.length, args.threads)
        return
    with tempfile.TemporaryDirectory() as folder:
        results = {}
        for phase in ("cold", "restart"):
            command = [sys.executable, __file__, "--phase", phase, "--cache-dir", folder, "--model", str(args.model)]
            command += ["--prompts", str(args.prompts), "--length", str(args.length), "--threads", str(args.threads)]
            output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
            results[phase] = json.loads(output.strip().splitlines()[-1])
    assert all(c == 0 for c in results["cold"]["cached"]), results["cold"]
    assert all(c == args.length for c in results["restart"]["cached"]), results["restart"]
    cold = statistics.median(results["cold"]["times"]) * 1e3
    warm = statistics.median(results["restart"]["times"]) * 1e3
    print(
        f"| TTFT, {args.length}-token prompt, cold vs after a restart (disk tier) | cold {cold:.1f} ms | "
        f"after restart {warm:.2f} ms | **{100 * warm / cold:.1f}% of cold** (goal <= 15%) |"
    )


if __name__ == "__main__":
    main()
