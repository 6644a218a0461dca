"""The `nanoseek` command: one entry point that hands each subcommand to the module that owns it.

    nanoseek serve [--model PATH] ...      # DeepSeek-compatible API + web chat (nanoseek.api.serve)
    nanoseek chat  [--model PATH] ...      # terminal chat through the engine (nanoseek.engine.chat_cli)
    nanoseek train tokenizer|pretrain|sft|all --recipe NAME   (nanoseek.train.cli)
    nanoseek tokenizer train --corpus ... --vocab-size ...    (nanoseek.tokenizer.cli)
    nanoseek eval  --model PATH|--base-url URL --suite ...    (nanoseek.eval.cli)
    nanoseek compare base=OUT/base chat=OUT/chat --out DIR    # the V2.5 table (nanoseek.eval.compare)
    nanoseek merge CONFIG.yaml OUT_DIR     # merge fine-tuned models with mergekit (nanoseek.train.merge)
    nanoseek info  [--model PATH]          # model summary and a greedy sample (nanoseek.engine.info)
    nanoseek convert IN OUT [--type T]     # GGUF <-> Hugging Face folder (nanoseek.model.convert)

Subcommand modules are imported lazily so that `nanoseek --help` stays instant and one broken
subsystem cannot take the others down. Each module exposes `main(argv: list[str]) -> int | None`.
"""

from __future__ import annotations

import importlib
import sys

# (group, command, module, what it does, one example): `nanoseek --help` prints them group by group
COMMANDS: list[tuple[str, str, str, str, str]] = [
    (
        "use a model",
        "serve",
        "nanoseek.api.serve",
        "serve the DeepSeek-compatible API and the web chat",
        "nanoseek serve --port 8000",
    ),
    (
        "use a model",
        "chat",
        "nanoseek.engine.chat_cli",
        "chat with a model in the terminal (/reset, /exit)",
        "nanoseek chat --thinking",
    ),
    (
        "use a model",
        "info",
        "nanoseek.engine.info",
        "print a model's summary and a greedy sample",
        "nanoseek info --model path/to/checkpoint",
    ),
    (
        "build a model",
        "train",
        "nanoseek.train.cli",
        "train a tokenizer or model (stages and recipes)",
        "nanoseek train all --recipe default --out runs/mine",
    ),
    (
        "build a model",
        "tokenizer",
        "nanoseek.tokenizer.cli",
        "train or inspect a BPE tokenizer",
        "nanoseek tokenizer train --corpus texts/ --vocab-size 8192 --out tok/",
    ),
    (
        "build a model",
        "merge",
        "nanoseek.train.merge",
        "merge fine-tuned models (mergekit: linear, TIES, SLERP, ...)",
        "nanoseek merge merge.yaml merged/",
    ),
    (
        "build a model",
        "convert",
        "nanoseek.model.convert",
        "convert between GGUF files and Hugging Face folders",
        "nanoseek convert model.gguf model/",
    ),
    (
        "measure",
        "eval",
        "nanoseek.eval.cli",
        "run evaluation suites and write the report card",
        "nanoseek eval --base-url http://127.0.0.1:8000/v1 --suite math --n 20 --out eval_out",
    ),
    (
        "measure",
        "thinking-chart",
        "nanoseek.eval.thinking_chart",
        "accuracy vs thinking length at equal compute (R1-Lite chart)",
        "nanoseek thinking-chart --model PATH --out chart_out --budgets 32,64,128",
    ),
    (
        "measure",
        "compare",
        "nanoseek.eval.compare",
        "base, specialists and merges side by side from saved evals (V2.5 table)",
        "nanoseek compare base=eval_out/base chat=eval_out/chat --out table_out",
    ),
]
SUBCOMMANDS = {command: (module, what) for _, command, module, what, _ in COMMANDS}


def usage() -> str:
    lines = ["usage: nanoseek <command> [options]      (nanoseek <command> --help for its options)"]
    for group in dict.fromkeys(group for group, *_ in COMMANDS):
        lines += ["", f"{group}:"]
        for _, command, _, what, example in (c for c in COMMANDS if c[0] == group):
            lines += [f"  {command:<14} {what}", f"  {'':<14}   e.g. {example}"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    command, rest = argv[0], argv[1:]
    if command not in SUBCOMMANDS:
        print(f"nanoseek: unknown command {command!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(SUBCOMMANDS[command][0])
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
