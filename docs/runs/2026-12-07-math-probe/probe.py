"""The math probe's SFT: `nanoseek train` with the math suite's thought format and training wordings chosen by
name, so that every candidate trains through nanoseek's own code on the same items, steps and settings.

    python3 docs/runs/2026-12-07-math-probe/probe.py FORMAT sft --recipe smol --out runs/probe-FORMAT ...

FORMAT is one of
    current            the generator as run 7 trained on (nanoseek/tasks/math.py at commit 42b8036, read from git)
    restated           the candidate generator's thought (the question's quantities restated first, one
                       operation a line, a check undoing every step), with run 7's one training wording a kind
    restated_wordings  the candidate generator as it is: `restated` plus four more training wordings a kind
The rest of the command line goes to `nanoseek train` unchanged (README.md has the exact commands).

The candidate generator is nanoseek/tasks/math.py at commit ccaa1f0, where the probe ran; main kept run 7's (the
probe found no winner), so run this at ccaa1f0: on main `restated*` would train run 7's format.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import subprocess
import sys
from pathlib import Path

import nanoseek.tasks
from nanoseek.tasks import math as new_math
from nanoseek.train.cli import main as train

BASELINE_COMMIT = "42b8036"  # main before this probe: run 7's generator
REPO = Path(__file__).resolve().parents[3]


def baseline_math():
    """nanoseek/tasks/math.py as it was at BASELINE_COMMIT, loaded as a module of its own."""
    source = subprocess.run(
        ["git", "-C", str(REPO), "show", f"{BASELINE_COMMIT}:nanoseek/tasks/math.py"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    spec = importlib.util.spec_from_loader("nanoseek.tasks.math_baseline", loader=None)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    exec(compile(source, f"{BASELINE_COMMIT}:nanoseek/tasks/math.py", "exec"), module.__dict__)
    return module


def one_training_wording(module) -> None:
    for kind, phrasings in module.PHRASINGS.items():
        module.PHRASINGS[kind] = dataclasses.replace(phrasings, train=phrasings.train[:1])


def select(name: str) -> None:
    if name == "current":
        nanoseek.tasks.SUITES["math"] = baseline_math()
    elif name == "restated":
        one_training_wording(new_math)
    elif name != "restated_wordings":
        raise SystemExit(f"unknown format {name!r}: current, restated or restated_wordings")


if __name__ == "__main__":
    select(sys.argv[1])
    sys.exit(train(sys.argv[2:]))
