"""`nanoseek convert IN OUT [--type f32|f16|bf16|q8_0]`: between GGUF files and Hugging Face folders.

IN is anything `--model` takes (a checkpoint folder, a GGUF file, a named model). OUT ending in `.gguf` is
written as one GGUF file that llama.cpp reads (matrices in `--type`, default f32; norms F32); any other OUT is a
Hugging Face folder that `transformers.AutoModelForCausalLM` and nanoseek read (weights in `--type` f32, f16
or bf16, default f32). Quantized GGUF weights are dequantized on the way out: a folder holds what the
quantized file means, not its blocks.

    nanoseek convert smollm2-135m-instruct smollm2-hf/                 # GGUF -> Hugging Face folder
    nanoseek convert smollm2-hf/ smollm2-q8.gguf --type q8_0           # Hugging Face folder -> GGUF
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from nanoseek.model.checkpoint import CheckpointError, save_checkpoint
from nanoseek.model.gguf_checkpoint import WRITE_TYPES, save_gguf
from nanoseek.model.loader import load_checkpoint

FOLDER_DTYPES = {"f32": "float32", "f16": "float16", "bf16": "bfloat16"}


def convert(source: str, out: Path, tensor_type: str = "f32") -> Path:
    """Write `source` to `out` (a .gguf file or a folder); CheckpointError for anything it cannot do."""

    checkpoint = load_checkpoint(source, dtype="float32")
    if out.suffix.lower() == ".gguf":
        if tensor_type not in WRITE_TYPES:
            raise CheckpointError(f"--type {tensor_type} is not a GGUF tensor type nanoseek writes")
        return save_gguf(checkpoint.model, checkpoint.tokenizer, out, tensor_type, name=Path(str(source)).stem)
    if tensor_type not in FOLDER_DTYPES:
        raise CheckpointError(
            f"--type {tensor_type} exists only in GGUF files; a Hugging Face folder holds {', '.join(FOLDER_DTYPES)}"
        )
    return save_checkpoint(
        checkpoint.model,
        checkpoint.tokenizer,
        out,
        dtype=FOLDER_DTYPES[tensor_type],
        generation_config=checkpoint.generation_config,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="nanoseek convert", description=__doc__.split("\n")[0])
    parser.add_argument("source", help="checkpoint folder, GGUF file or named model")
    parser.add_argument("out", type=Path, help="OUT.gguf for a GGUF file, anything else for a Hugging Face folder")
    parser.add_argument("--type", default="f32", choices=["f32", "f16", "bf16", "q8_0"], help="weight format")
    args = parser.parse_args(argv)

    try:
        written = convert(args.source, args.out, args.type)
    except CheckpointError as exc:
        print(f"nanoseek convert: {exc}", file=sys.stderr)
        return 2
    print(f"nanoseek convert: wrote {written}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
