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
import dataclasses
import sys
from typing import TextIO

from nanoseek import DEFAULT_MODEL_DIR
from nanoseek.engine.engine import Engine
from nanoseek.engine.params import Request, SamplingParams
from nanoseek.tokenizer.output_parser import OutputParser, think_token_ids, tool_format_for_template

DIM, RESET = "\033[2m", "\033[0m"
COMMANDS_HELP = """commands while chatting:
  /reset     forget the conversation (the system prompt stays)
  /exit      quit (so does Ctrl-D); Ctrl-C while the model writes stops that answer"""


async def answer(
    engine: Engine, prompt_ids: list[int], params: SamplingParams, thinking: bool, out: TextIO = sys.stdout
) -> str:
    """Stream one reply to `out` (the thought, then a line break, then the answer); return the answer text."""
    parser = OutputParser(
        tool_format_for_template(engine.tokenizer.chat_template),
        thinking=thinking,
        tools_enabled=False,
        start_in_reasoning=thinking,
    )
    styled = thinking and out.isatty()
    in_reasoning = thinking
    if styled:
        out.write(DIM)
    text = ""
    special = engine.tokenizer.special_token_pattern  # format tokens the parser left are not answer text
    async for event in engine.stream(Request(prompt_ids, params)):
        pieces = [parser.feed(event.text)] + ([parser.finish()] if event.finish_reason is not None else [])
        for piece in pieces:
            piece.reasoning, piece.content = special.sub("", piece.reasoning), special.sub("", piece.content)
            out.write(piece.reasoning)
            if in_reasoning and not parser.in_reasoning:  # the thought ended
                in_reasoning = False
                out.write((RESET if styled else "") + "\n")
            out.write(piece.content)
            text += piece.content
        out.flush()
    out.write((RESET if styled and in_reasoning else "") + "\n")
    return text.strip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="nanoseek chat",
        description=__doc__.split("\n")[0],
        epilog=COMMANDS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--model", default=None, help="checkpoint directory, GGUF file, named model or adapter directory"
    )
    parser.add_argument("--thinking", action="store_true", help="deep thinking mode (reasoning before the answer)")
    parser.add_argument("--max-tokens", type=int, default=512)
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--top-p", type=float, default=0.95)
    parser.add_argument("--system", default=None, help="a system prompt")
    args = parser.parse_args(argv)
    if args.model is None:
        from nanoseek.model.default import default_adapter_path

        args.model = str(default_adapter_path() or DEFAULT_MODEL_DIR)
    try:
        params = SamplingParams(max_tokens=args.max_tokens, temperature=args.temperature, top_p=args.top_p)
        engine = Engine.from_checkpoint(args.model, max_batch=1)
    except ValueError as exc:  # bad sampling settings, or a CheckpointError naming what is wrong with --model
        print(f"nanoseek chat: {exc}", file=sys.stderr)
        return 2
    if not args.thinking:  # the think tokens are banned from replies, as the server bans them (api/thinking.py)
        params = dataclasses.replace(params, banned_token_ids=think_token_ids(engine.tokenizer))
    history: list[dict[str, str]] = [{"role": "system", "content": args.system}] if args.system else []
    interactive = sys.stdin.isatty()
    if interactive:
        print("Type a message and press Enter. /reset forgets the conversation, /exit quits.")
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
