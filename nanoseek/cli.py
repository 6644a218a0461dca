"""The `nanoseek` command: one entry point that hands each subcommand to the module that owns it.

    nanoseek serve [--model PATH] ...      # DeepSeek-compatible API + web chat (nanoseek.api.serve)
    nanoseek chat  [--model PATH] ...      # terminal chat through the engine (nanoseek.engine.chat_cli)
    nanoseek train tokenizer|pretrain|sft|all --recipe NAME   (nanoseek.train.cli)
    nanoseek tokenizer train --corpus ... --vocab-size ...    (nanoseek.tokenizer.cli)
    nanoseek eval  --model PATH|--base-url URL --suite ...    (nanoseek.eval.cli)
    nanoseek merge CONFIG.yaml OUT_DIR     # merge fine-tuned models with mergekit (nanoseek.train.merge)
    nanoseek info  [--model PATH]          # model summary and a greedy sample (nanoseek.engine.info)
    nanoseek convert IN OUT [--type T]     # GGUF <-> Hugging Face folder (nanoseek.model.convert)

Subcommand modules are imported lazily so that `nanoseek --help` stays instant and one broken
subsystem cannot take the others down. Each module exposes `main(argv: list[str]) -> int | None`.
"""

from __future__ import annotations

import importlib
import sys

SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "serve": ("nanoseek.api.serve", "serve the DeepSeek-compatible API and the web chat"),
    "chat": ("nanoseek.engine.chat_cli", "chat with a model in the terminal"),
    "train": ("nanoseek.train.cli", "train a tokenizer or model (stages and recipes)"),
    "tokenizer": ("nanoseek.tokenizer.cli", "train or inspect a BPE tokenizer"),
    "eval": ("nanoseek.eval.cli", "run evaluation suites and write the report card"),
    "thinking-chart": ("nanoseek.eval.thinking_chart", "accuracy vs thinking length at equal compute (R1-Lite chart)"),
    "merge": ("nanoseek.train.merge", "merge fine-tuned models (a mergekit config: linear, TIES, SLERP, ...)"),
    "info": ("nanoseek.engine.info", "print a model's summary and a greedy sample"),
    "convert": ("nanoseek.model.convert", "convert between GGUF files and Hugging Face folders"),
}


def usage() -> str:
    lines = ["usage: nanoseek <command> [options]", "", "commands:"]
    lines += [f"  {name:<10} {help_text}" for name, (_, help_text) in SUBCOMMANDS.items()]
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
