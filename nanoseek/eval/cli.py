"""`nanoseek eval`: run suites against a model in this process or an OpenAI-compatible server, then write the
report card.

    nanoseek eval --model path/to/checkpoint --suite all --n 20 --out runs/eval
    nanoseek eval --model ckpt_a --model ckpt_b --suite math,code --out runs/eval      # side by side
    nanoseek eval --model ckpt --suite tools --tool-grammar none --name ckpt-free --out runs/eval  # free-text calls
    nanoseek eval --base-url http://127.0.0.1:8000/v1 --api-key sk-x --suite all --out runs/eval
    nanoseek eval --base-url https://api.deepseek.com/beta --api-key $KEY --model-name deepseek-chat ...  # FIM: /beta
    nanoseek eval --report-only --out runs/eval [--judge-base-url URL --judge-model NAME]
    nanoseek eval --rescore --out runs/eval     # stored HumanEval and knowledge replies, scored by today's scorers
    nanoseek eval --rescore --suite knowledge --out runs/eval   # only the knowledge records

Every suite is asked in each of its splits (`--split`, default all three): held-out values in the training
wordings (`heldout`), held-out values in wordings never trained on (`phrasing`), and hand-written items
(`handwritten`). Results go to OUT/<name>/<suite>.jsonl for `heldout` and OUT/<name>/<suite>.<split>.jsonl for
the others (one line per item; rerunning resumes), the report to OUT/report.md.
Every run that evaluates adds its command line and the models it evaluates to OUT/commands.json, which the report
quotes, and `nanoseek compare` and a model card per model: the figures name the commands that produced them.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from nanoseek.eval.backends import TOOL_GRAMMARS
from nanoseek.eval.runner import EVAL_SPLITS, RunConfig, rescore_humaneval, rescore_knowledge, results_path, run_suite
from nanoseek.tasks import SUITES, splits


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="nanoseek eval", description=__doc__.split("\n\n")[0])
    target = parser.add_argument_group("what to evaluate")
    target.add_argument(
        "--model", action="append", default=[], help="checkpoint directory, GGUF file or named model (repeatable)"
    )
    target.add_argument("--base-url", help="OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1")
    target.add_argument("--api-key", default=None, help="key for --base-url")
    target.add_argument(
        "--model-name", default=None, help="model id to request from --base-url (default: first listed)"
    )
    target.add_argument(
        "--name", action="append", default=[], help="result name for each target (default: directory or model id)"
    )
    parser.add_argument("--suite", default="all", help=f"comma-separated from {','.join(SUITES)}, or all")
    parser.add_argument("--n", type=int, default=20, help="items per suite and split")
    parser.add_argument(
        "--split",
        default=",".join(EVAL_SPLITS),
        help="comma-separated from heldout (held-out values), phrasing (held-out wordings), handwritten",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--samples", type=int, default=4, help="k for code pass@k and math majority@k")
    parser.add_argument("--budgets", default="16,64,256", help="math thinking budgets in tokens, comma-separated")
    parser.add_argument("--max-tokens", type=int, default=128, help="answer tokens per reply")
    parser.add_argument("--code-max-tokens", type=int, default=384, help="tokens per code reply")
    parser.add_argument("--concurrency", type=int, default=4, help="items in flight at once")
    parser.add_argument(
        "--tool-grammar",
        choices=TOOL_GRAMMARS,
        default=None,
        help="in process (--model): lazy (default) applies the server's tool-call grammar for tool_choice auto, so "
        "the figures are what the server delivers; none measures the model's own free-text calls. A server "
        "(--base-url) applies its own",
    )
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    parser.add_argument("--report-only", action="store_true", help="only rebuild the report from OUT")
    parser.add_argument(
        "--rescore",
        action="store_true",
        help="score the HumanEval and knowledge replies stored under OUT again with the current scorers (--suite code "
        "or knowledge: only those), then rebuild the report",
    )
    parser.add_argument(
        "--judge-base-url", default=None, help="OpenAI-compatible judge for the arena (default: reference judge)"
    )
    parser.add_argument("--judge-model", default=None)
    parser.add_argument("--judge-api-key", default=None)
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument(
        "--unsafe-exec",
        action="store_true",
        help="where generated code cannot be sandboxed (no bubblewrap or user namespaces), run it as a plain "
        "child process anyway instead of refusing (it can then read and write your files)",
    )
    args = parser.parse_args(argv)

    suites = list(SUITES) if args.suite == "all" else [s.strip() for s in args.suite.split(",") if s.strip()]
    unknown = [s for s in suites if s not in SUITES]
    if unknown:
        parser.error(f"unknown suite(s) {', '.join(unknown)}; choose from {', '.join(SUITES)} or all")
    args.suites = suites
    args.splits = [s.strip() for s in args.split.split(",") if s.strip()]
    if not args.splits or any(s not in EVAL_SPLITS for s in args.splits):
        parser.error(f"--split must be comma-separated from {', '.join(EVAL_SPLITS)}, got {args.split!r}")
    try:
        args.budget_list = sorted({int(b) for b in args.budgets.split(",") if b.strip()})
    except ValueError:
        parser.error(f"--budgets must be comma-separated integers, got {args.budgets!r}")
    if not args.budget_list or min(args.budget_list) < 1:
        parser.error("--budgets needs at least one budget >= 1")
    for flag in ("n", "samples", "max_tokens", "code_max_tokens", "concurrency"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag.replace('_', '-')} must be >= 1")
    args.report_only = args.report_only or args.rescore
    if not args.report_only and not args.model and not args.base_url:
        parser.error("give --model PATH (in process) or --base-url URL (a server), or --report-only")
    if args.rescore and (args.model or args.base_url):
        parser.error("--rescore reads stored replies: give it without --model or --base-url")
    if args.model and args.base_url:
        parser.error("give either --model or --base-url, not both (run twice into the same --out to compare)")
    if args.tool_grammar is not None and not args.model:
        parser.error("--tool-grammar applies to a model in process (--model); a server applies its own grammar")
    from nanoseek.model.named import named_models

    for path in args.model:
        if not Path(path).exists() and path not in named_models():
            parser.error(f"--model {path}: no such checkpoint directory, GGUF file or named model")
    targets = len(args.model) or (1 if args.base_url else 0)
    if args.name and len(args.name) != targets:
        parser.error(f"--name given {len(args.name)} times for {targets} target(s)")
    return args


def sandbox_ready(unsafe_exec: bool) -> bool:
    """Whether generated code can be run (sandboxed, or unsandboxed when allowed); says why not on stderr."""
    from nanoseek.eval.sandbox import SandboxUnavailable, check_sandbox

    if unsafe_exec:
        os.environ["NANOSEEK_UNSAFE_EXEC"] = "1"  # read by the sandbox in every scoring thread
    try:
        check_sandbox()
    except SandboxUnavailable as error:
        print(f"nanoseek eval: {error}", file=sys.stderr)
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    from nanoseek.eval.backends import EngineBackend, OpenAIBackend
    from nanoseek.eval.report import build_report, record_command

    config = RunConfig(
        n=args.n,
        seed=args.seed,
        samples=args.samples,
        budgets=args.budget_list,
        max_tokens=args.max_tokens,
        code_max_tokens=args.code_max_tokens,
        concurrency=args.concurrency,
    )
    backends = []
    names: list[str] | None = []  # the result folders this run writes (None: not known before the server answers)
    if not args.report_only:
        if args.base_url:
            backends.append(
                lambda: OpenAIBackend(
                    args.base_url, api_key=args.api_key, model=args.model_name, name=args.name[0] if args.name else None
                )
            )
            given = args.name[0] if args.name else args.model_name
            names = [given.replace("/", "_")] if given else None
        for index, path in enumerate(args.model):
            name = args.name[index] if args.name else Path(path).resolve().name
            backends.append(
                lambda path=path, name=name: EngineBackend.from_checkpoint(
                    path, name=name, tool_grammar=args.tool_grammar or "lazy"
                )
            )
            names.append(name)
    if "code" in args.suites and (backends or args.rescore) and not sandbox_ready(args.unsafe_exec):
        return 2
    if backends:
        record_command(args.out, argv, names)
    elif args.rescore and args.out.is_dir():
        record_command(args.out, argv)  # a rescore changes every model's figures too: the report names it
    for make_backend in backends:
        try:
            backend = make_backend()
        except Exception as error:  # a bad checkpoint or an unreachable server: say which, without a traceback
            print(f"nanoseek eval: cannot open the model: {type(error).__name__}: {error}", file=sys.stderr)
            return 2
        try:
            for suite in args.suites:
                for split in [s for s in args.splits if s in splits(suite)]:  # e.g. fim has no phrasing split
                    run_suite(backend, suite, args.out / backend.name, config, not args.no_progress, split)
        finally:
            backend.close()
    if args.rescore:
        for model_dir in sorted(p for p in args.out.iterdir() if p.is_dir()) if args.out.is_dir() else []:
            for split in EVAL_SPLITS:
                path = results_path(model_dir, "code", split)
                if "code" in args.suites and path.exists():
                    changed, seen = rescore_humaneval(path)
                    print(f"{path}: {changed} of {seen} HumanEval records scored differently now")
                path = results_path(model_dir, "knowledge", split)
                if "knowledge" in args.suites and path.exists():
                    changed, seen = rescore_knowledge(path)
                    print(f"{path}: {changed} of {seen} knowledge records scored differently now")
    judge = None
    if args.judge_base_url:
        from nanoseek.eval.arena_judge import OpenAIJudge

        judge = OpenAIJudge(args.judge_base_url, model=args.judge_model, api_key=args.judge_api_key)
    try:
        build_report(args.out, judge=judge)
    except FileNotFoundError as error:
        print(f"nanoseek eval: {error}", file=sys.stderr)
        return 2
    print(f"report: {args.out / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
