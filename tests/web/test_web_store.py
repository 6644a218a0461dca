"""The conversation store on real SQLite files: CRUD, edit/regenerate tails, bad input, and a writer killed
with SIGKILL mid-stream that must leave every committed write intact and nothing half-written.

    nice -n 10 timeout 600 python3 -m pytest tests/web/test_web_store.py -q
"""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from nanoseek.web.store import ConversationStore, NotFound, StoreError, StoreFull, default_db_path

OWNER = "owner-a"


@pytest.fixture
def store(tmp_path: Path) -> ConversationStore:
    return ConversationStore(tmp_path / "chats.sqlite3")


def test_conversation_lifecycle(store: ConversationStore, tmp_path: Path) -> None:
    first = store.create_conversation(OWNER)
    second = store.create_conversation(OWNER, title="Named on purpose")
    store.append_message(OWNER, first["id"], role="user", content="How do I reverse a list in Python?\nThanks")
    store.append_message(
        OWNER,
        first["id"],
        role="assistant",
        content="Use `xs[::-1]`.",
        reasoning_content="Slicing works.",
        thinking_seconds=2.5,
        model="deepseek-reasoner",
    )
    # the first user message titles an untitled conversation; a given title is kept
    store.append_message(OWNER, second["id"], role="user", content="hello")
    assert store.get_conversation(OWNER, second["id"])["title"] == "Named on purpose"
    loaded = store.get_conversation(OWNER, first["id"])
    assert loaded["title"] == "How do I reverse a list in Python?"
    assert [(m["position"], m["role"]) for m in loaded["messages"]] == [(0, "user"), (1, "assistant")]
    assert loaded["messages"][1]["reasoning_content"] == "Slicing works."
    assert loaded["messages"][1]["thinking_seconds"] == 2.5

    # most recently updated first
    store.append_message(OWNER, first["id"], role="user", content="and a tuple?")
    assert [c["id"] for c in store.list_conversations(OWNER)] == [first["id"], second["id"]]

    assert store.rename_conversation(OWNER, first["id"], "  Lists  ")["title"] == "Lists"
    store.delete_conversation(OWNER, first["id"])
    assert [c["id"] for c in store.list_conversations(OWNER)] == [second["id"]]
    # deleting a conversation deletes its messages (foreign key cascade), checked in the file itself
    with sqlite3.connect(tmp_path / "chats.sqlite3") as conn:
        assert (
            conn.execute("SELECT COUNT(*) FROM messages WHERE conversation_id = ?", (first["id"],)).fetchone()[0] == 0
        )
    # a second store on the same file sees the same data
    assert (
        ConversationStore(tmp_path / "chats.sqlite3").get_conversation(OWNER, second["id"])["messages"][0]["content"]
        == "hello"
    )


def test_streaming_updates_and_edit_replaces_the_tail(store: ConversationStore) -> None:
    conv = store.create_conversation(OWNER)
    store.append_message(OWNER, conv["id"], role="user", content="one")
    store.append_message(OWNER, conv["id"], role="assistant", content="answer one")
    store.append_message(OWNER, conv["id"], role="user", content="two")
    reply = store.append_message(
        OWNER, conv["id"], role="assistant", content="", status="streaming", reasoning_content=""
    )
    for partial in ("Hel", "Hello", "Hello, world"):
        store.update_message(OWNER, reply["id"], content=partial)
    done = store.update_message(OWNER, reply["id"], status="stopped", thinking_seconds=1.0)
    assert (done["content"], done["status"], done["reasoning_content"]) == ("Hello, world", "stopped", "")

    # editing the second user message drops it and everything after, then appends the new text
    edited = store.append_message(OWNER, conv["id"], role="user", content="two, edited", replace_from=2)
    assert edited["position"] == 2
    contents = [m["content"] for m in store.get_conversation(OWNER, conv["id"])["messages"]]
    assert contents == ["one", "answer one", "two, edited"]
    # regenerating the first answer keeps only the first question
    store.append_message(OWNER, conv["id"], role="assistant", content="answer one, again", replace_from=1)
    assert [m["content"] for m in store.get_conversation(OWNER, conv["id"])["messages"]] == ["one", "answer one, again"]


def test_bad_input_is_refused_with_a_clear_message(store: ConversationStore, tmp_path: Path) -> None:
    conv = store.create_conversation(OWNER)
    with pytest.raises(StoreError, match="role must be one of"):
        store.append_message(OWNER, conv["id"], role="robot", content="x")
    with pytest.raises(StoreError, match="status must be one of"):
        store.append_message(OWNER, conv["id"], role="assistant", content="x", status="half-done")
    with pytest.raises(StoreError, match="replace_from=5 is outside"):
        store.append_message(OWNER, conv["id"], role="user", content="x", replace_from=5)
    with pytest.raises(NotFound, match="no conversation with id 'nope'"):
        store.append_message(OWNER, "nope", role="user", content="x")
    with pytest.raises(NotFound, match="no message with id"):
        store.update_message(OWNER, "nope", content="x")
    message = store.append_message(OWNER, conv["id"], role="user", content="x")
    with pytest.raises(StoreError, match=r"cannot update message field\(s\) \['position'\]"):
        store.update_message(OWNER, message["id"], position=3)
    with pytest.raises(StoreError, match="title cannot be empty"):
        store.rename_conversation(OWNER, conv["id"], "   ")
    with pytest.raises(StoreError, match="is a directory"):
        ConversationStore(tmp_path)
    # a refused write changed nothing
    assert [m["content"] for m in store.get_conversation(OWNER, conv["id"])["messages"]] == ["x"]


def test_default_path_is_in_the_user_data_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    assert default_db_path() == tmp_path / "data" / "nanoseek" / "web.sqlite3"
    store = ConversationStore()
    store.create_conversation(OWNER, title="kept")
    assert (tmp_path / "data" / "nanoseek" / "web.sqlite3").is_file()


WRITER = textwrap.dedent(
    """
    import sys
    from nanoseek.web.store import ConversationStore

    store = ConversationStore(sys.argv[1])
    OWNER = "writer"
    conv = store.create_conversation(OWNER)
    count = 0
    for turn in range(1_000_000):
        # every third turn edits the last question (delete the tail + append: one transaction)
        replace_from = count - 2 if turn % 3 == 2 else None
        question = store.append_message(OWNER, conv["id"], role="user", content=f"question {turn}", replace_from=replace_from)
        reply = store.append_message(OWNER, conv["id"], role="assistant", content="", reasoning_content="", status="streaming")
        text = ""
        for step in range(20):
            text += f"<{turn}:{step}>"
            store.update_message(OWNER, reply["id"], content=text, reasoning_content=text.upper())
            print(turn, step, reply["id"], len(text), flush=True)  # printed only after the commit returned
        store.update_message(OWNER, reply["id"], status="complete")
        count = question["position"] + 2
    """
)


def test_killed_writer_loses_no_committed_write(tmp_path: Path) -> None:
    db = tmp_path / "chats.sqlite3"
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(db)], stdout=subprocess.PIPE, text=True)
    acknowledged: dict[str, int] = {}
    try:
        for line in writer.stdout:
            _turn, step, message_id, length = line.split()
            acknowledged[message_id] = int(length)
            if len(acknowledged) >= 4 and int(step) >= 5:  # mid-answer of turn 3, after the edit in turn 2
                writer.send_signal(signal.SIGKILL)
                break
    finally:
        writer.kill()
        writer.wait(timeout=30)
    assert writer.returncode == -signal.SIGKILL

    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conversation = ConversationStore(db).list_conversations("writer")[0]
    messages = ConversationStore(db).get_conversation("writer", conversation["id"])["messages"]
    assert [m["position"] for m in messages] == list(range(len(messages)))  # no gap, no duplicate
    questions = [m["content"] for m in messages if m["role"] == "user"]
    assert questions[:3] == ["question 0", "question 2", "question 3"]  # turn 2's edit replaced question 1
    by_id = {m["id"]: m for m in messages}
    last_id = list(acknowledged)[-1]
    streaming = by_id[last_id]
    # everything acknowledged is on disk; what is on disk is a whole write, never a torn one
    assert len(streaming["content"]) >= acknowledged[last_id]
    assert streaming["content"].endswith(">") and streaming["reasoning_content"] == streaming["content"].upper()
    assert streaming["status"] == "streaming"
    for message in messages:
        if message["role"] == "assistant" and message["id"] != last_id:
            assert message["status"] == "complete" and message["content"].count("<") == 20


def test_a_store_from_before_finish_reason_is_upgraded_in_place(tmp_path: Path) -> None:
    db = tmp_path / "old.sqlite3"
    with sqlite3.connect(db) as conn:  # the first schema, without messages.finish_reason or owners
        conn.executescript(
            """
            CREATE TABLE conversations (id TEXT PRIMARY KEY, title TEXT NOT NULL, created_at REAL NOT NULL,
                                        updated_at REAL NOT NULL);
            CREATE TABLE messages (id TEXT PRIMARY KEY, conversation_id TEXT NOT NULL REFERENCES conversations(id)
                ON DELETE CASCADE, position INTEGER NOT NULL, role TEXT NOT NULL, content TEXT NOT NULL,
                reasoning_content TEXT, thinking_seconds REAL, model TEXT, status TEXT NOT NULL, error TEXT,
                created_at REAL NOT NULL, updated_at REAL NOT NULL, UNIQUE (conversation_id, position));
            INSERT INTO conversations VALUES ('c1', 'Old chat', 1.0, 1.0);
            INSERT INTO messages VALUES ('m1', 'c1', 0, 'user', 'kept', NULL, NULL, NULL, 'complete', NULL, 1.0, 1.0);
            """
        )
    store = ConversationStore(db)
    assert store.get_conversation("", "c1")["messages"][0]["content"] == "kept"  # now the no-key owner's
    reply = store.append_message("", "c1", role="assistant", content="cut", finish_reason="length")
    assert store.update_message("", reply["id"], content="cut off")["finish_reason"] == "length"


def test_concurrent_writers_get_distinct_positions(store: ConversationStore) -> None:
    conv = store.create_conversation(OWNER)

    def writer(name: str) -> None:
        for index in range(25):
            store.append_message(OWNER, conv["id"], role="user", content=f"{name}-{index}")

    threads = [threading.Thread(target=writer, args=(f"w{n}",)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    messages = store.get_conversation(OWNER, conv["id"])["messages"]
    assert [m["position"] for m in messages] == list(range(100))
    assert sorted(m["content"] for m in messages) == sorted(f"w{n}-{i}" for n in range(4) for i in range(25))


def test_owners_see_only_their_own_conversations(store: ConversationStore) -> None:
    mine = store.create_conversation(OWNER, title="payroll")
    message = store.append_message(OWNER, mine["id"], role="user", content="secret")
    other = "owner-b"
    assert store.list_conversations(other) == []
    for attempt in (
        lambda: store.get_conversation(other, mine["id"]),
        lambda: store.rename_conversation(other, mine["id"], "mine now"),
        lambda: store.delete_conversation(other, mine["id"]),
        lambda: store.append_message(other, mine["id"], role="user", content="x"),
        lambda: store.update_message(other, message["id"], content="overwritten"),
    ):
        with pytest.raises(NotFound):
            attempt()
    kept = store.get_conversation(OWNER, mine["id"])
    assert kept["title"] == "payroll" and [m["content"] for m in kept["messages"]] == ["secret"]
    assert "owner" not in kept  # the owner id stays inside the store


def test_each_owner_has_a_cap_on_conversations_and_text(tmp_path: Path) -> None:
    store = ConversationStore(tmp_path / "capped.sqlite3", max_conversations=2, max_chars=100)
    first = store.create_conversation(OWNER)
    store.create_conversation(OWNER)
    with pytest.raises(StoreFull, match="2 conversations"):
        store.create_conversation(OWNER)
    store.create_conversation("owner-b")  # the cap is per owner
    reply = store.append_message(OWNER, first["id"], role="assistant", content="x" * 60)
    with pytest.raises(StoreFull, match="at most 100"):
        store.append_message(OWNER, first["id"], role="user", content="y" * 41)
    with pytest.raises(StoreFull):
        store.update_message(OWNER, reply["id"], content="x" * 60, reasoning_content="z" * 41)
    store.update_message(OWNER, reply["id"], content="x" * 100)  # growing up to the cap is fine


def test_updating_one_field_counts_the_text_the_other_fields_keep(tmp_path: Path) -> None:
    store = ConversationStore(tmp_path / "capped.sqlite3", max_chars=100)
    conversation = store.create_conversation(OWNER)
    reply = store.append_message(
        OWNER, conversation["id"], role="assistant", content="x" * 30, reasoning_content="z" * 30
    )
    store.update_message(OWNER, reply["id"], content="x" * 70)  # 70 + the 30 of reasoning kept: the cap
    with pytest.raises(StoreFull, match="at most 100"):
        store.update_message(OWNER, reply["id"], content="x" * 71)
    store.update_message(OWNER, reply["id"], reasoning_content="", content="x" * 100)


def test_an_edit_at_the_cap_replaces_the_text_it_drops(tmp_path: Path) -> None:
    store = ConversationStore(tmp_path / "capped.sqlite3", max_chars=100)
    conversation = store.create_conversation(OWNER)
    store.append_message(OWNER, conversation["id"], role="user", content="q" * 50)
    store.append_message(OWNER, conversation["id"], role="assistant", content="a" * 50)
    with pytest.raises(StoreFull):
        store.append_message(OWNER, conversation["id"], role="user", content="r" * 51, replace_from=1)
    assert len(store.get_conversation(OWNER, conversation["id"])["messages"]) == 2  # the refusal deleted nothing
    store.append_message(OWNER, conversation["id"], role="user", content="e" * 100, replace_from=0)
    [edited] = store.get_conversation(OWNER, conversation["id"])["messages"]
    assert edited["content"] == "e" * 100
