"""The engine benchmark's workloads on several revisions of nanoseek, in one run; prints each one's ratio to the first.

    python benchmarks/engine_revisions.py 5c43b18 880147b HEAD             # before a change, the change, now
    python benchmarks/engine_revisions.py 5c43b18 HEAD --rounds 6 --threads 1

Each revision is exported (`git archive`) to a temporary folder, and every measurement is a fresh process
whose PYTHONPATH is that folder: it imports that revision's nanoseek, loads the same checkpoint (this tree's
`bench_checkpoint()`, the embedded default model) and runs the same workloads, written here against the
public Engine API that every revision has. Rounds rotate the order of the sides, and each figure is the median
of the rounds: on a shared machine the load drifts between processes, so only ratios from the same run count.

Workloads (greedy, ignore_eos, fresh random 64-token prompts so the prefix cache never serves them):
* concurrency: 1 / 16 / 64 requests of 128 new tokens; decode rate = the 127 tokens after the first over the
  run's time minus that of the same requests stopped at their first token (as benchmarks/engine.py), in wall
  seconds and in the process's CPU seconds (all threads): CPU time counts the work done, not the time spent
  waiting for a core that other processes hold, so it is the steadier measure on a crowded machine.
* ttft: time to first token of the longest whole-block prompt up to 960 tokens, cold and fully cached.
* json: batch-1 decode rate of JSON-schema-constrained sampling (the grammar masks every step).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LEVELS = (1, 16, 64)
NEW_TOKENS = 128
SCHEMA = {
    "type": "object",
    "properties": {"items": {"type": "array", "items": {"type": "string"}}},
    "required": ["items"],
    "additionalProperties": False,
}


def export(revision: str, into: Path) -> tuple[str, Path]:
    """The revision's tracked files under `into`/<short sha> (no worktree: nothing is added to the repository)."""
    sha = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", revision], check=True, capture_output=True, text=True
    ).stdout.strip()
    tree = into / sha
    tree.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", sha], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    return sha, tree


def run_side(tree: Path, checkpoint: Path, threads: int, warm_up_only: bool = False) -> dict[str, float]:
    """One measurement in a fresh process importing the nanoseek of `tree`; its figures by name."""
    env = dict(os.environ, PYTHONPATH=str(tree))
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", str(checkpoint), "--threads", str(threads)]
    if warm_up_only:
        command.append("--warm-up-only")
    out = subprocess.run(command, env=env, cwd=tree, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def worker(checkpoint: Path, threads: int, warm_up_only: bool) -> dict[str, float]:
    """The workloads, run inside the side's process (its nanoseek is whatever PYTHONPATH names)."""
    import torch

    import nanoseek
    from nanoseek.engine import Constraint, Engine, Request, SamplingParams

    assert Path(nanoseek.__file__).resolve().is_relative_to(Path.cwd().resolve()), nanoseek.__file__
    torch.set_num_threads(threads)
    engine = Engine.from_checkpoint(str(checkpoint), max_batch=64, kv_budget_tokens=64 * 1024)
    seeds = iter(range(10**6))

    def prompt(length: int) -> list[int]:
        generator = torch.Generator().manual_seed(next(seeds))
        return torch.randint(3, engine.vocab_size, (length,), generator=generator).tolist()

    def timed(requests: list[Request]) -> tuple[float, float]:
        wall, cpu = time.perf_counter(), time.process_time()
        engine.generate(requests)
        return time.perf_counter() - wall, time.process_time() - cpu

    def greedy(max_tokens: int) -> SamplingParams:
        return SamplingParams(max_tokens=max_tokens, temperature=0, ignore_eos=True)

    figures: dict[str, float] = {"native": float(engine.native is not None)}
    timed([Request(prompt(64), greedy(16))])  # builds the native step and the OpenMP pool
    if warm_up_only:
        engine.shutdown()
        return figures
    for concurrent in LEVELS:
        full = timed([Request(prompt(64), greedy(NEW_TOKENS)) for _ in range(concurrent)])
        first = timed([Request(prompt(64), greedy(1)) for _ in range(concurrent)])
        decoded = concurrent * (NEW_TOKENS - 1)
        figures[f"decode tok/s, {concurrent} concurrent"] = decoded / (full[0] - first[0])
        figures[f"decode tok/CPU-s, {concurrent} concurrent"] = decoded / max(full[1] - first[1], 1e-9)
    length = min(960, (engine.cache.slot_capacity - 1) // 64 * 64)
    cached_prompt = prompt(length)
    figures["TTFT cold ms"] = 1e3 * timed([Request(cached_prompt, greedy(1))])[0]
    figures["TTFT cached ms"] = 1e3 * timed([Request(cached_prompt, greedy(1))])[0]
    constraint = Constraint.json_schema(SCHEMA)
    json_params = [SamplingParams(max_tokens=256, temperature=1.0, seed=seed, constraint=constraint) for seed in (1, 2)]
    engine.generate([Request(prompt(64), json_params[0])])  # the grammar's compile outside the timing
    tokens, seconds = 0, 0.0
    for params in json_params * 4:
        started = time.perf_counter()
        [completion] = engine.generate([Request(prompt(64), params)])
        seconds += time.perf_counter() - started
        tokens += len(completion.token_ids)
    figures["JSON-constrained tok/s, batch 1"] = tokens / seconds
    engine.shutdown()
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("revisions", nargs="*", help="git revisions; ratios are to the first")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)  # a side's process: the checkpoint
    parser.add_argument("--warm-up-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, args.threads, args.warm_up_only)))
        return 0
    if len(args.revisions) < 2:
        parser.error("name at least two revisions")
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from engine import bench_checkpoint

    checkpoint = bench_checkpoint()
    with tempfile.TemporaryDirectory(prefix="nanoseek-revisions-") as into:
        sides = dict(export(revision, Path(into)) for revision in args.revisions)
        for tree in sides.values():  # compiles each revision's native step once, outside the rounds
            run_side(tree, checkpoint, args.threads, warm_up_only=True)
        results: dict[str, list[dict[str, float]]] = {sha: [] for sha in sides}
        names = list(sides)
        for round_ in range(args.rounds):
            order = names[round_ % len(names) :] + names[: round_ % len(names)]
            for sha in order:
                results[sha].append(run_side(sides[sha], checkpoint, args.threads))
                print(f"round {round_ + 1}, {sha}: {json.dumps(results[sha][-1])}", flush=True)
    base = names[0]
    print(f"\nmedians of {args.rounds} rounds, {args.threads} threads, checkpoint {checkpoint}")
    print("| measure | " + " | ".join(names) + " | " + " | ".join(f"{sha} / {base}" for sha in names[1:]) + " |")
    print("|---" * (2 * len(names)) + "|")
    for measure in results[base][0]:
        medians = {sha: statistics.median(run[measure] for run in results[sha]) for sha in names}
        ratios = [medians[sha] / medians[base] if medians[base] else float("nan") for sha in names[1:]]
        print(
            f"| {measure} | "
            + " | ".join(f"{medians[sha]:.1f}" for sha in names)
            + " | "
            + " | ".join(f"{ratio:.2f}" for ratio in ratios)
            + " |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
