"""Export a nanoseek (Hugging Face layout) checkpoint to GGUF with llama.cpp's own converter.

    python benchmarks/gguf_export.py CHECKPOINT_DIR OUT.gguf [--outtype f32|f16|bf16|q8_0]

The converter (`convert_hf_to_gguf.py` and its `conversion` package) ships in the llama-cpp-python source
distribution under vendor/llama.cpp; this wrapper fetches that sdist once with pip (into bench_out/) when
`--llama-cpp-src` is not given. Two things the converter needs on top:
* `sentencepiece` importable (it imports it even for byte-level BPE vocabularies: the `bench` extra has it);
* a known pre-tokenizer name: it fingerprints the tokenizer's pre-tokenization against a list of released
  models and refuses a freshly trained one ("BPE pre-tokenizer was not recognized"). nanoseek's tokenizer
  is GPT-2-style byte-level BPE, so the wrapper declares it as "gpt-2"; check the printed parity result of
  benchmarks/engine.py (same greedy tokens in llama.cpp as in transformers) before trusting a new tokenizer.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tarfile
from pathlib import Path

LLAMA_CPP_PYTHON_VERSION = "0.3.36"
DEFAULT_SRC_ROOT = Path(__file__).resolve().parent.parent / "bench_out" / "llama_cpp_src"


def converter_dir(src_root: Path = DEFAULT_SRC_ROOT) -> Path:
    """vendor/llama.cpp of the llama-cpp-python sdist, downloaded and unpacked on first use."""
    unpacked = src_root / f"llama_cpp_python-{LLAMA_CPP_PYTHON_VERSION}" / "vendor" / "llama.cpp"
    if (unpacked / "convert_hf_to_gguf.py").is_file():
        return unpacked
    src_root.mkdir(parents=True, exist_ok=True)
    archive = src_root / f"llama_cpp_python-{LLAMA_CPP_PYTHON_VERSION}.tar.gz"
    if not archive.is_file():
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-binary",
                ":all:",
                "--no-deps",
                f"llama-cpp-python=={LLAMA_CPP_PYTHON_VERSION}",
                "-d",
                str(src_root),
            ],
            check=True,
        )
    with tarfile.open(archive) as tar:
        tar.extractall(src_root, filter="data")
    return unpacked


def export(checkpoint: Path, out_file: Path, outtype: str = "f32", src: Path | None = None) -> Path:
    """Write `out_file` (GGUF) from `checkpoint`; returns the path. Runs the converter in this process."""
    llama_cpp_dir = src or converter_dir()
    out_file.parent.mkdir(parents=True, exist_ok=True)  # the converter opens the file without making its folder
    sys.path.insert(0, str(llama_cpp_dir))
    sys.path.insert(1, str(llama_cpp_dir / "gguf-py"))  # the converter's own gguf package, matching it
    import convert_hf_to_gguf
    from conversion.base import TextModel

    TextModel.get_vocab_base_pre = lambda self, tokenizer: "gpt-2"
    argv = sys.argv
    sys.argv = ["convert_hf_to_gguf.py", str(checkpoint), "--outfile", str(out_file), "--outtype", outtype]
    try:
        convert_hf_to_gguf.main()
    finally:
        sys.argv = argv
    return out_file


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("out_file", type=Path)
    parser.add_argument("--outtype", default="f32", choices=["f32", "f16", "bf16", "q8_0"])
    parser.add_argument("--llama-cpp-src", type=Path, default=None, help="an unpacked vendor/llama.cpp directory")
    args = parser.parse_args(argv)
    export(args.checkpoint, args.out_file, args.outtype, args.llama_cpp_src)
    print(f"wrote {args.out_file}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
