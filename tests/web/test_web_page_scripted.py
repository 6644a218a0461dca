"""The chat page in headless Chromium against a scripted completions endpoint (the TEST DOUBLE in
web_fake_completions.py), for what needs answers we control: Markdown and thinking rendering while streaming,
edit and regenerate request bodies, rename/delete, the key prompt, errors in words, and a server process
SIGKILLed mid-answer (nothing the page showed is lost).

    nice -n 10 timeout 600 python3 -m pytest tests/web/test_web_page_scripted.py -q
"""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import expect
from web_fake_completions import ScriptedCompletions, make_app
from web_live_server import LiveServer, eventually

from nanoseek.web.store import ConversationStore

OWNER = ""  # the fake app's one owner


@pytest.fixture(scope="module")
def scripted_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, ScriptedCompletions]]:
    script = ScriptedCompletions()
    with LiveServer(make_app(tmp_path_factory.mktemp("web") / "chats.sqlite3", script)) as server:
        yield server, script


@pytest.fixture
def scripted(scripted_server) -> tuple[LiveServer, ScriptedCompletions]:
    """The module's server with an empty store and script (one server start per module keeps tests fast)."""
    server, script = scripted_server
    for conversation in server.app.state.web_store.list_conversations(OWNER):
        server.app.state.web_store.delete_conversation(OWNER, conversation["id"])
    script.replies.clear()
    script.requests.clear()
    return server, script


def send(page, text: str) -> None:
    page.fill("#input", text)
    page.press("#input", "Enter")


def test_streamed_markdown_and_thinking_render_live(page, scripted) -> None:
    server, script = scripted
    script.push(
        reasoning=["Let me ", "check ", "the list."],
        delay=0.05,
        content=["Here:\n\n", "```python\n", "print(sorted([3, 1, 2]))\n", "```\n", "\nDone **now**."],
    )
    page.goto(server.url)
    # remember every label the thought block shows: "Thinking…" may be on screen for only a moment
    page.evaluate("""() => {
        window.labels = new Set();
        new MutationObserver(() => document.querySelectorAll('.thinking summary')
            .forEach((summary) => window.labels.add(summary.textContent)))
            .observe(document.querySelector('#messages'), {subtree: true, childList: true, characterData: true});
    }""")
    page.click("#deep-thinking")
    expect(page.locator("#deep-thinking")).to_have_attribute("aria-pressed", "true")
    page.fill("#input", "sort a list\nplease")  # Shift+Enter makes newlines; fill sets them directly
    page.press("#input", "Shift+Enter")
    expect(page.locator("#input")).to_have_value("sort a list\nplease\n")
    page.press("#input", "Enter")
    answer = page.locator("article.message.assistant").last
    expect(answer.locator(".thinking .thought")).to_have_text("Let me check the list.")
    expect(answer.locator(".thinking summary")).to_have_text(re.compile(r"Thought for \d+ seconds?"))
    assert "Thinking…" in page.evaluate("[...window.labels]")
    expect(answer.locator("pre code.hljs .hljs-built_in").first).to_have_text("print")
    expect(answer.locator(".answer strong")).to_have_text("now")
    assert script.requests[0]["body"]["model"] == "deepseek-reasoner"
    assert script.requests[0]["body"]["messages"] == [{"role": "user", "content": "sort a list\nplease"}]


def wait_idle(page) -> None:
    """The answer has finished: Regenerate appears on the last answer and Send is back."""
    expect(page.locator("article.assistant").last.locator("button.regenerate")).to_be_enabled()
    expect(page.locator("#send")).to_be_visible()


def stored_messages(server: LiveServer) -> list[dict]:
    store = server.app.state.web_store
    [conversation] = store.list_conversations(OWNER)
    return store.get_conversation(OWNER, conversation["id"])["messages"]


def test_edit_an_earlier_message_and_regenerate(page, scripted) -> None:
    server, script = scripted
    page.goto(server.url)
    send(page, "first question")
    expect(page.locator("article.assistant .answer").last).to_have_text("You said: first question")
    send(page, "second question")
    expect(page.locator("article.assistant")).to_have_count(2)
    wait_idle(page)

    # edit the first question: the conversation continues from there, the old tail is gone
    page.locator("article.user").first.locator("button.edit").click()
    page.fill("article .edit-box", "first question, edited")
    page.click("article button.save-edit")
    expect(page.locator("article.assistant .answer")).to_have_text(["You said: first question, edited"])
    wait_idle(page)
    assert script.requests[-1]["body"]["messages"] == [{"role": "user", "content": "first question, edited"}]

    # regenerate the last answer: same prompt, the answer is replaced
    script.push(content=["A different ", "answer."])
    page.click("article.assistant button.regenerate")
    expect(page.locator("article.assistant .answer")).to_have_text(["A different answer."])
    wait_idle(page)
    assert script.requests[-1]["body"]["messages"] == [{"role": "user", "content": "first question, edited"}]

    def saved() -> None:
        assert [(m["role"], m["content"], m["status"]) for m in stored_messages(server)] == [
            ("user", "first question, edited", "complete"),
            ("assistant", "A different answer.", "complete"),
        ]

    eventually(saved)


def test_conversations_new_rename_delete(page, scripted) -> None:
    server, _ = scripted
    page.on("dialog", lambda dialog: dialog.accept())  # the delete confirmation
    page.goto(server.url)
    send(page, "alpha")
    wait_idle(page)
    page.click("#new-chat")
    expect(page.locator("article")).to_have_count(0)
    send(page, "beta")
    wait_idle(page)
    titles = page.locator("#conversation-list .title")
    expect(titles).to_have_text(["beta", "alpha"])

    alpha = page.locator("#conversation-list li", has_text="alpha")
    alpha.hover()  # the rename and delete buttons show on hover
    alpha.locator(".rename").click()
    page.fill(".rename-input", "Renamed alpha")
    page.press(".rename-input", "Enter")
    expect(titles).to_have_text(["Renamed alpha", "beta"])  # renaming touched it: most recent first
    beta = page.locator("#conversation-list li", has_text="beta")
    beta.hover()
    beta.locator(".delete").click()
    expect(titles).to_have_text(["Renamed alpha"])
    assert [c["title"] for c in server.app.state.web_store.list_conversations(OWNER)] == ["Renamed alpha"]
    page.click("#conversation-list .title")
    expect(page.locator("article.user .text")).to_have_text(["alpha"])


def test_model_output_is_sanitized(page, scripted) -> None:
    server, script = scripted
    script.push(
        content=[
            '<img src="x" onerror="window.pwned = 1"> <script>window.pwned = 2</script>',
            "[link](javascript:window.pwned=3) **safe**",
        ]
    )
    page.goto(server.url)
    send(page, "attack")
    answer = page.locator("article.assistant .answer")
    expect(answer.locator("strong")).to_have_text("safe")
    assert answer.locator("script").count() == 0
    assert answer.locator("img").get_attribute("onerror") is None
    page.locator("article.assistant .answer a").click()
    assert page.evaluate("window.pwned") is None


@pytest.mark.parametrize(
    ("status", "server_message", "words"),
    [
        (429, "Rate Limit Reached", "Rate limited: too many requests right now"),
        (
            400,
            "This model's maximum context length is 512 tokens; the prompt has 900",
            "too long for the model's context window",
        ),
        (503, "queue full", "The server is overloaded right now"),
    ],
)
def test_errors_are_shown_in_words(page, scripted, status, server_message, words) -> None:
    server, script = scripted
    script.push(status=status, error_message=server_message)
    page.goto(server.url)
    send(page, "hello")
    note = page.locator("article.assistant .note.error")
    expect(note).to_contain_text(words)
    expect(note).to_contain_text(server_message)

    def saved() -> None:
        [_, answer] = stored_messages(server)
        assert answer["status"] == "error" and words in answer["error"]

    eventually(saved)


def test_broken_connection_and_unreachable_server(page, tmp_path) -> None:
    script = ScriptedCompletions()
    server = LiveServer(make_app(tmp_path / "chats.sqlite3", script)).__enter__()
    script.push(content=["Partial ", "answer ", "never finished"], drop_connection_after=2)
    page.goto(server.url)
    send(page, "hello")
    expect(page.locator("article.assistant .note.error")).to_contain_text("broke off mid-answer")
    expect(page.locator("article.assistant .answer")).to_have_text("Partial answer")

    def saved() -> None:
        assert stored_messages(server)[1]["content"] == "Partial answer "

    eventually(saved)
    server.__exit__(None, None, None)  # the server goes away
    send(page, "anyone there?")
    expect(page.locator("#banner")).to_contain_text("Cannot reach the nanoseek server")
    expect(page.locator("#input")).to_have_value("anyone there?")  # the words are given back, not lost


def test_api_key_is_asked_for_and_sent(page, tmp_path) -> None:
    script = ScriptedCompletions(api_key="sk-test-key")
    with LiveServer(make_app(tmp_path / "chats.sqlite3", script)) as server:
        page.goto(server.url)
        expect(page.locator("#settings-dialog")).to_be_visible()
        expect(page.locator("#key-reason")).to_contain_text("needs an API key")
        page.fill("#api-key", "sk-test-key")
        page.click("#settings-save")
        expect(page.locator("#banner")).to_be_hidden()
        send(page, "hello with a key")
        expect(page.locator("article.assistant .answer")).to_have_text("You said: hello with a key")
        assert script.requests[-1]["authorization"] == "Bearer sk-test-key"


def start_server_process(db: Path, port: int) -> subprocess.Popen:
    """The scripted server as its own process (so that it can be SIGKILLed): 400 words, 20 ms apart."""
    script = Path(__file__).with_name("web_fake_completions.py")
    process = subprocess.Popen([sys.executable, str(script), str(db), str(port), "400", "0.02"])
    deadline = time.monotonic() + 60
    while True:
        try:
            httpx.get(f"http://127.0.0.1:{port}/web/api/conversations", timeout=1)
            return process
        except httpx.TransportError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise RuntimeError("the scripted server process did not start") from None
            time.sleep(0.1)


def test_server_killed_mid_answer_loses_nothing_shown(page, tmp_path) -> None:
    db = tmp_path / "chats.sqlite3"
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    first = start_server_process(db, port)
    second = None
    try:
        page.goto(f"http://127.0.0.1:{port}/")
        send(page, "count for me")
        answer = page.locator("article.assistant .answer")
        expect(answer).to_contain_text("word20 ")
        first.send_signal(signal.SIGKILL)  # the server dies mid-answer, without any chance to clean up
        first.wait(timeout=10)
        expect(page.locator("article.assistant .note.error")).to_contain_text("broke off mid-answer")
        shown = answer.inner_text().strip()
        assert shown.startswith("word0 word1 word2") and "word399" not in shown

        # whatever reached the disk is a prefix of what was shown; the rest is retried by the page
        [conversation] = ConversationStore(db).list_conversations(OWNER)
        on_disk = ConversationStore(db).get_conversation(OWNER, conversation["id"])["messages"][1]["content"]
        assert shown.startswith(on_disk.strip())

        second = start_server_process(db, port)  # the server comes back: the page's pending saves land

        def everything_shown_is_saved() -> None:
            [_, reply] = ConversationStore(db).get_conversation(OWNER, conversation["id"])["messages"]
            assert reply["content"].strip() == shown and reply["status"] == "error"

        eventually(everything_shown_is_saved, timeout=20)
        page.reload()
        expect(page.locator("article.assistant .answer")).to_have_text(shown)
    finally:
        for process in (first, second):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait(timeout=10)


def test_leaving_the_page_mid_answer_keeps_what_was_shown(page, scripted) -> None:
    server, script = scripted
    script.push(content=[f"word{i} " for i in range(300)], delay=0.02)
    page.goto(server.url)
    send(page, "count slowly")
    answer = page.locator("article.assistant .answer")
    expect(answer).to_contain_text("word40 ")
    address = page.url
    # the person leaves mid-answer (what was on screen at that instant is `shown`); on the way out the page
    # sends its unsaved text with keepalive requests
    with page.expect_navigation():
        shown = page.evaluate("""() => {
            const text = document.querySelector('article.assistant .answer').textContent;
            location.href = 'about:blank';
            return text;
        }""").strip()

    def kept() -> None:
        [_, reply] = stored_messages(server)
        assert reply["content"].strip().startswith(shown) and reply["status"] == "streaming"

    eventually(kept)
    page.goto(address)
    expect(page.locator("article.assistant .note")).to_have_text("Interrupted: the answer stopped before it finished.")
    expect(page.locator("article.assistant .answer")).to_contain_text(shown)


def test_a_thought_without_an_answer_is_said_in_words(page, scripted) -> None:
    server, script = scripted
    script.push(reasoning=["Hmm, ", "tricky."], content=[])
    page.goto(server.url)
    page.click("#deep-thinking")
    send(page, "?")
    reply = page.locator("article.assistant")
    expect(reply.locator(".thinking .thought")).to_have_text("Hmm, tricky.")
    expect(reply.locator(".note")).to_have_text("The model finished thinking without writing an answer.")


def test_latex_renders_with_katex_and_code_and_prices_stay_text(page, scripted) -> None:
    server, script = scripted
    script.push(
        content=[
            "So $x_1 + x_2 = 5$, and\n\n$$\\frac{a}{b}$$\n\nThe answer is \\boxed{53}. ",
            "It costs $5 and $6. `$not_math$` stays code.",
        ]
    )
    fonts: list[tuple[str, int]] = []
    page.on("response", lambda r: fonts.append((r.url, r.status)) if "/katex/fonts/" in r.url else None)
    page.goto(server.url)
    send(page, "what is it?")
    answer = page.locator("article.message.assistant").last.locator(".answer")
    expect(answer.locator(".katex")).to_have_count(3)
    expect(answer.locator(".katex-display")).to_have_count(1)
    expect(answer.locator(".katex-display .mfrac")).to_have_count(1)
    expect(answer).to_contain_text("It costs $5 and $6.")
    expect(answer.locator("code")).to_have_text("$not_math$")
    assert "\\boxed" not in answer.inner_text()

    # KaTeX's own fonts, vendored and served by nanoseek (woff2: the only files shipped)
    def fonts_served() -> None:
        assert fonts and all(url.endswith(".woff2") and status == 200 for url, status in fonts), fonts

    eventually(fonts_served)


def test_effort_choice_is_sent_as_reasoning_effort_while_thinking(page, scripted) -> None:
    server, script = scripted
    script.push(content=["plain"])
    script.push(reasoning=["hm"], content=["thought"])
    page.goto(server.url)
    expect(page.locator("#effort")).to_be_hidden()  # no effort without deep thinking
    send(page, "one")
    wait_idle(page)
    page.click("#deep-thinking")
    page.select_option("#effort", "low")
    send(page, "two")
    wait_idle(page)
    first, second = (request["body"] for request in script.requests)
    assert "reasoning_effort" not in first and first["model"] == "deepseek-chat"
    assert second["reasoning_effort"] == "low" and second["model"] == "deepseek-reasoner"
    page.reload()
    expect(page.locator("#effort")).to_have_value("low")  # remembered like the other settings
