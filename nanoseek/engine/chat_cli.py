"""`nanoseek chat`: a terminal chat over `Engine.stream`, for trying a model without the server.

    nanoseek chat                                  # the embedded default model
    nanoseek chat --model path/to/checkpoint --thinking --temperature 0.6
    echo "hello" | nanoseek chat --max-tokens 64   # one turn per input line, also from a pipe

Type a message and press Enter; `/reset` forgets the conversation, `/exit` (or Ctrl-D) quits, Ctrl-C
while the model writes stops that answer (closing the stream cancels the request in the engine).
In thinking mode the chain of thought is printed dimmed and is not fed back in later turns.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from nanoseek import DEFAULT_MODEL_DIR
from nanoseek.engine.engine import Engine
from nanoseek.engine.params import Request, SamplingParams

THINK_END = "</think>"
DIM, RESET = "\033[2m", "\033[0m"


async def answer(engine: Engine, prompt_ids: list[int], params: SamplingParams, thinking: bool, out=sys.stdout) -> str:
    """Stream one reply to `out`; return the answer text without its reasoning."""
    styled = thinking and out.isatty()
    in_reasoning = thinking
    if styled:
        out.write(DIM)
    text = ""
    async for event in engine.stream(Request(prompt_ids, params)):
        piece = event.text
        text += piece
        if in_reasoning and THINK_END in text:
            in_reasoning = False
            before, _, after = piece.partition(THINK_END)
            piece = before + (RESET if styled else "") + "\n" + after
        out.write(piece)
        out.flush()
    out.write((RESET if styled and in_reasoning else "") + "\n")
    return text.split(THINK_END, 1)[-1].strip() if thinking else text.strip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="nanoseek chat", description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL_DIR, help="checkpoint directory")
    parser.add_argument("--thinking", action="store_true", help="deep thinking mode (reasoning before the answer)")
    parser.add_argument("--max-tokens", type=int, default=512)
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--top-p", type=float, default=0.95)
    parser.add_argument("--system", default=None, help="a system prompt")
    args = parser.parse_args(argv)
    if not (args.model / "config.json").is_file():
        print(f"nanoseek chat: no checkpoint at {args.model} (config.json missing); pass --model PATH", file=sys.stderr)
        return 2
    try:
        params = SamplingParams(max_tokens=args.max_tokens, temperature=args.temperature, top_p=args.top_p)
    except ValueError as exc:
        print(f"nanoseek chat: {exc}", file=sys.stderr)
        return 2
    engine = Engine.from_checkpoint(str(args.model), max_batch=1)
    history: list[dict[str, str]] = [{"role": "system", "content": args.system}] if args.system else []
    interactive = sys.stdin.isatty()
    try:
        while True:
            try:
                line = input("you> " if interactive else "")
            except EOFError:
                break
            if not line.strip():
                continue
            if line.strip() == "/exit":
                break
            if line.strip() == "/reset":
                history = history[:1] if args.system else []
                continue
            history.append({"role": "user", "content": line})
            prompt_ids = engine.tokenizer.encode_chat(history, thinking=args.thinking)
            try:
                reply = asyncio.run(answer(engine, prompt_ids, params, args.thinking))
            except KeyboardInterrupt:  # asyncio.run closes the stream, which cancels the request
                print("\n[stopped]")
                reply = ""
            history.append({"role": "assistant", "content": reply})
    finally:
        engine.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
