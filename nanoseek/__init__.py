"""nanoseek: train, serve and measure a small DeepSeek-style assistant end to end.

Subpackages: model (transformer + HF checkpoints), tokenizer (BPE + DeepSeek chat format),
engine (batched generation shared by serve/eval/RL), api (DeepSeek-compatible HTTP server),
web (chat page), train (data, loop, stages), eval (tasks, scorers, report card).
"""

from pathlib import Path

__version__ = "0.1.0"

# The embedded default model (trained by `nanoseek train all --recipe default`, see its README.md): what
# `nanoseek serve`, `nanoseek chat` and `nanoseek info` load when no model is named.
DEFAULT_MODEL_DIR = Path(__file__).resolve().parent / "default_model"
