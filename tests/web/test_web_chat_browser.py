"""End to end: the chat page in headless Chromium against the real nanoseek server (`create_app`) serving a
real model through the real engine. The model is the tiny random checkpoint rewired into a known bigram chain
(web_scripted_model.py), so deep thinking visibly thinks "A friendly hi; I reply." and then answers
"Hello from nanoseek!" (repeated until max_tokens).

    nice -n 10 timeout 600 python3 -m pytest tests/web/test_web_chat_browser.py -q
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import expect
from web_live_server import LiveServer, eventually
from web_scripted_model import make_scripted_checkpoint

from nanoseek.api.app import create_app
from nanoseek.api.settings import KeyPolicy, Settings

REASONING = "A friendly hi; I reply."
OWNER = ""  # the no-key server's conversations
ANSWER = "Hello from nanoseek!"


@pytest.fixture(scope="module")
def server(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    work = tmp_path_factory.mktemp("web_e2e")
    model = make_scripted_checkpoint(tiny_checkpoint, work / "scripted", reasoning=REASONING, answer=ANSWER)
    settings = Settings(model=model, db_path=work / "chats.sqlite3", keepalive_seconds=1.0).validate()
    with LiveServer(create_app(settings)) as live:
        yield live


def engine(server: LiveServer):
    return server.app.state.registry.default.engine


def set_max_tokens(page, max_tokens: int | None) -> None:
    """What the Settings dialog stores; set before the page loads."""
    value = "" if max_tokens is None else str(max_tokens)
    page.context.add_init_script(f"localStorage.setItem('nanoseek.maxTokens', '{value}')")


def send(page, text: str) -> None:
    page.fill("#input", text)
    page.press("#input", "Enter")


def wait_idle(page) -> None:
    # generous: seven engineers share two cores, and a busy CPU slows the engine to a few tokens a second
    expect(page.locator("article.assistant").last.locator("button.regenerate")).to_be_enabled(timeout=60_000)


def stored(server: LiveServer, conversation_id: str) -> list[dict]:
    return server.app.state.web_store.get_conversation(OWNER, conversation_id)["messages"]


def current_conversation_id(page) -> str:
    return re.fullmatch(r".*#/c/([0-9a-f]+)", page.url).group(1)


def test_send_and_see_a_streamed_answer_then_reload(page, server) -> None:
    set_max_tokens(page, 60)
    page.goto(server.url)
    # record every length the answer shows, to see it grow token by token rather than arrive at once
    page.evaluate("""() => {
        window.seenLengths = [];
        new MutationObserver(() => {
            const answer = document.querySelector('article.assistant .answer');
            if (answer) window.seenLengths.push(answer.textContent.length);
        }).observe(document.querySelector('#messages'), {subtree: true, childList: true, characterData: true});
    }""")
    # The tiny model writes 60 tokens in milliseconds on a quiet machine, faster than the page paints; throttle
    # the download (Chromium's own network emulation) so the stream arrives over seconds, as from a real model.
    network = page.context.new_cdp_session(page)
    network.send("Network.enable")
    network.send(
        "Network.emulateNetworkConditions",
        {"offline": False, "latency": 0, "downloadThroughput": 4000, "uploadThroughput": -1},
    )
    send(page, "Hi there, who are you?")
    answer = page.locator("article.assistant .answer")
    expect(answer).to_contain_text(ANSWER)
    wait_idle(page)
    network.send(
        "Network.emulateNetworkConditions",
        {"offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1},
    )
    text = answer.inner_text()
    assert text.startswith(ANSWER + ANSWER) and len(text) > 100  # 60 tokens of the 11-token chain
    partial = {n for n in page.evaluate("window.seenLengths") if 0 < n < len(text)}
    assert partial, "the answer did not stream: it was never shown partly written"
    assert page.locator("article.assistant .thinking").is_hidden()  # no deep thinking asked
    expect(page.locator("article.assistant .note")).to_have_text("Cut off at the token limit (max tokens in Settings).")

    conversation_id = current_conversation_id(page)
    eventually(lambda: _assert_saved(server, conversation_id, text))

    # reload: the conversation is in the list and open again, from the server's store
    page.reload()
    expect(page.locator("#conversation-list li.active .title")).to_have_text("Hi there, who are you?")
    expect(page.locator("article.user .text")).to_have_text(["Hi there, who are you?"])
    expect(page.locator("article.assistant .answer")).to_have_text(text)
    # and a fresh browser (no local state at all) finds it in the list
    other = page.context.browser.new_context()
    try:
        fresh = other.new_page()
        fresh.goto(server.url)
        fresh.locator("#conversation-list .title", has_text="Hi there, who are you?").click()
        expect(fresh.locator("article.assistant .answer")).to_have_text(text)
    finally:
        other.close()


def _assert_saved(server: LiveServer, conversation_id: str, text: str) -> None:
    messages = stored(server, conversation_id)
    assert [(m["role"], m["status"]) for m in messages] == [("user", "complete"), ("assistant", "complete")]
    assert messages[1]["content"] == text and messages[1]["model"] == "deepseek-chat"
    assert messages[1]["finish_reason"] == "length"


def test_deep_thinking_streams_a_thought_block_then_the_answer(page, server) -> None:
    set_max_tokens(page, 60)
    page.goto(server.url)
    page.click("#deep-thinking")
    send(page, "Hello!")
    reply = page.locator("article.assistant")
    expect(reply.locator(".thinking .thought")).to_have_text(REASONING)
    expect(reply.locator(".answer")).to_contain_text(ANSWER)
    expect(reply.locator(".thinking summary")).to_have_text(re.compile(r"^Thought for \d+ seconds?$"))
    wait_idle(page)
    # the thought is collapsible
    reply.locator(".thinking summary").click()
    expect(reply.locator(".thinking .thought")).to_be_hidden()

    conversation_id = current_conversation_id(page)

    def saved() -> None:
        [_, answer] = stored(server, conversation_id)
        assert answer["reasoning_content"] == REASONING and answer["content"].startswith(ANSWER)
        assert answer["model"] == "deepseek-reasoner" and answer["thinking_seconds"] > 0

    eventually(saved)
    page.reload()
    expect(page.locator("article.assistant .thinking summary")).to_have_text(re.compile(r"^Thought for \d+ seconds?$"))
    expect(page.locator("article.assistant .thinking .thought")).to_have_text(REASONING)


def test_stop_mid_stream_cancels_generation_on_the_server(page, server) -> None:
    set_max_tokens(page, 4000)  # long enough to be stopped well before the end
    page.goto(server.url)
    send(page, "Tell me everything.")
    answer = page.locator("article.assistant .answer")
    # each wait below is for an event, however slowly a busy machine gets there (its limit only stops a hang):
    # what is checked is the order of events, not how fast they come
    expect(answer).to_contain_text(ANSWER, timeout=60_000)
    conversation_id = current_conversation_id(page)

    # the page saves the answer while it streams, not only at the end
    def partial_saved() -> None:
        [_, reply] = stored(server, conversation_id)
        assert reply["status"] == "streaming" and reply["content"].startswith(ANSWER)

    eventually(partial_saved, timeout=60)
    page.click("#stop")
    expect(page.locator("#send")).to_be_visible(timeout=60_000)
    expect(page.locator("article.assistant .note")).to_have_text("Stopped.", timeout=60_000)
    shown = answer.inner_text()

    # the server cancelled the generation: nothing running, and the decoded tokens stop growing
    eventually(lambda: _assert_idle(engine(server)), timeout=60)
    decoded = engine(server).stats()["decode_tokens"]
    time.sleep(0.5)
    assert engine(server).stats()["decode_tokens"] == decoded

    def stopped_saved() -> None:
        [_, reply] = stored(server, conversation_id)
        assert reply["status"] == "stopped" and reply["content"] == shown

    eventually(stopped_saved, timeout=60)
    # stopped mid-way: far from the 4000 tokens asked for (11 tokens per ANSWER), which a busy machine only slows
    assert len(shown) < 4000 * len(ANSWER) // 11


def _assert_idle(engine) -> None:
    stats = engine.stats()
    assert stats["running"] == 0 and stats["waiting"] == 0, stats


CODE_ANSWER = """Here is a function:

```python
def greet(name: str) -> str:
    return f"Hello, {name}!"
```

Call it with `greet("nanoseek")`."""


def test_code_block_is_highlighted_and_copyable(page, server) -> None:
    # A random model writes no code, so the answer is stored through the store API; a stored answer renders
    # through the same Markdown path as a streamed one (app.js renderAssistantBody).
    api = httpx.Client(base_url=server.url + "/web/api")
    conversation = api.post("/conversations", json={"title": "Code"}).json()
    api.post(f"/conversations/{conversation['id']}/messages", json={"role": "user", "content": "greet in Python"})
    api.post(f"/conversations/{conversation['id']}/messages", json={"role": "assistant", "content": CODE_ANSWER})

    page.goto(f"{server.url}/#/c/{conversation['id']}")
    block = page.locator("article.assistant pre code")
    expect(block).to_have_class(re.compile(r"\bhljs\b.*|.*\bhljs\b"))
    expect(block.locator(".hljs-keyword").first).to_have_text("def")
    expect(block.locator(".hljs-title.function_")).to_have_text("greet")
    expect(page.locator("article.assistant .code-header span")).to_have_text("python")
    copy = page.locator("article.assistant .code-header button.copy")
    copy.click()
    expect(copy).to_have_text("Copied!")
    clipboard = page.evaluate("navigator.clipboard.readText()")
    assert clipboard == 'def greet(name: str) -> str:\n    return f"Hello, {name}!"\n'
    expect(page.locator("article.assistant .answer p code")).to_have_text('greet("nanoseek")')


def test_context_too_long_is_explained_in_words(page, server) -> None:
    page.goto(server.url)
    # about 4 characters a token at best with this 512-id tokenizer: 40k characters overflow 4096 positions
    page.fill("#input", " ".join(f"item{i}" for i in range(6000)))
    page.press("#input", "Enter")
    note = page.locator("article.assistant .note.error")
    expect(note).to_contain_text("too long for the model's context window")
    expect(note).to_contain_text("maximum context length")  # the server's own words follow


def test_api_key_is_asked_for_and_used(page, server, tmp_path) -> None:
    # a second app with keys configured, serving the same engine (an app does not own an engine it is given)
    settings = Settings(
        model=Path("scripted"), db_path=tmp_path / "chats.sqlite3", api_keys=[KeyPolicy(key="sk-web")]
    ).validate()
    with LiveServer(create_app(settings, engine=engine(server))) as keyed:
        set_max_tokens(page, 22)
        page.goto(keyed.url)
        expect(page.locator("#key-reason")).to_contain_text("needs an API key")
        page.fill("#api-key", "sk-wrong")
        page.click("#settings-save")
        expect(page.locator("#key-reason")).to_contain_text("refused the one entered")  # asked again
        page.fill("#api-key", "sk-web")
        page.click("#settings-save")
        expect(page.locator("#settings-dialog")).to_be_hidden()
        send(page, "hello with a key")
        expect(page.locator("article.assistant .answer")).to_have_text(ANSWER * 2)


def test_follow_up_edit_and_regenerate_against_the_real_api(page, server) -> None:
    set_max_tokens(page, 11)  # exactly one ANSWER
    page.goto(server.url)
    send(page, "first")
    expect(page.locator("article.assistant .answer")).to_have_text([ANSWER])
    wait_idle(page)
    send(page, "second")  # the history now holds an assistant turn: the API must take it back
    expect(page.locator("article.assistant .answer")).to_have_text([ANSWER, ANSWER])
    wait_idle(page)

    page.locator("article.user").first.locator("button.edit").click()
    page.fill("article .edit-box", "first, edited")
    page.click("article button.save-edit")
    expect(page.locator("article.user .text")).to_have_text(["first, edited"])
    expect(page.locator("article.assistant .answer")).to_have_text([ANSWER])
    wait_idle(page)
    before = page.locator("article.assistant").get_attribute("data-id")
    page.click("article.assistant button.regenerate")
    expect(page.locator("article.assistant")).not_to_have_attribute("data-id", before)  # a new answer
    wait_idle(page)
    conversation_id = current_conversation_id(page)

    def saved() -> None:
        messages = stored(server, conversation_id)
        assert [(m["role"], m["content"], m["status"]) for m in messages] == [
            ("user", "first, edited", "complete"),
            ("assistant", ANSWER, "complete"),
        ]
        assert messages[1]["id"] != before

    eventually(saved)
