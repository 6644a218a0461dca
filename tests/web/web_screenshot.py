"""Take docs/screenshot-thinking.png: the web chat in headless Chromium showing a deep-thinking conversation.

    python3 tests/web/web_screenshot.py                      # the embedded default model, if it ships
    python3 tests/web/web_screenshot.py --no-thinking --out docs/screenshot-multiturn.png \
        --question "..." --question "..." --question "..."  # a multi-turn chat: each question asked in turn
    python3 tests/web/web_screenshot.py --model PATH         # any checkpoint
    python3 tests/web/web_screenshot.py --scripted           # the tiny random model rewired to a known
                                                             # thought and answer (web_scripted_model.py)

The real server (`create_app`) serves the model; the page is driven like a person would: Deep thinking on
(unless --no-thinking), a question typed, Enter, wait for the answer, the next question, ..., screenshot.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from playwright.sync_api import expect, sync_playwright

sys.path.insert(0, str(Path(__file__).parent))
from conftest import CHROMIUM, CHROMIUM_ARGS
from web_live_server import LiveServer
from web_scripted_model import make_scripted_checkpoint

from nanoseek.api.app import DEFAULT_MODEL_DIR, create_app
from nanoseek.api.settings import Settings

REPO = Path(__file__).resolve().parents[2]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, help="checkpoint directory (default: the embedded default model)")
    parser.add_argument("--scripted", action="store_true", help="use the rewired tiny random model")
    parser.add_argument(
        "--question", action="append", help="asked in turn, each after the previous answer (default: one math question)"
    )
    parser.add_argument("--no-thinking", action="store_true", help="leave Deep thinking off (deepseek-chat)")
    parser.add_argument("--max-tokens", type=int, default=400)
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "screenshot-thinking.png")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as work_dir:
        work = Path(work_dir)
        if args.scripted:
            from nanoseek.model.random_init import make_random_checkpoint

            tiny = make_random_checkpoint(work / "tiny", shape="tiny", vocab_size=512, seed=0)
            model = make_scripted_checkpoint(
                tiny, work / "scripted", reasoning="A friendly hi; I reply.", answer="Hello from nanoseek!"
            )
            questions, max_tokens = ["Hi! Who are you?"], 36
        else:
            model = args.model or DEFAULT_MODEL_DIR
            if not (model / "config.json").is_file():
                parser.error(f"no checkpoint at {model}; pass --model PATH or --scripted")
            questions = args.question or [
                "Mia is 12 years old and Leo is 3 times as old. What will the sum of their ages be in 4 years?"
            ]
            max_tokens = args.max_tokens
        settings = Settings(model=model, db_path=work / "chats.sqlite3").validate()
        with LiveServer(create_app(settings)) as server, sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1200, "height": 760}, device_scale_factor=1)
            page.add_init_script(f"localStorage.setItem('nanoseek.maxTokens', '{max_tokens}')")
            page.goto(server.url)
            if not args.no_thinking:
                page.click("#deep-thinking")
            for turn, question in enumerate(questions, start=1):
                page.fill("#input", question)
                page.press("#input", "Enter")
                # Regenerate shows on the newest answer only once it has finished streaming.
                expect(page.locator("article.assistant").nth(turn - 1).locator("button.regenerate")).to_be_visible(
                    timeout=300_000
                )
            page.mouse.move(0, 0)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(args.out))
            browser.close()
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
