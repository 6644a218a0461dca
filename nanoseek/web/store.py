"""The web chat's conversation store: conversations and their messages (with reasoning) in SQLite.

    store = ConversationStore(Path("chats.sqlite3"))     # or ConversationStore() for the user data dir
    conv = store.create_conversation(owner)
    store.append_message(owner, conv["id"], role="user", content="hi")
    reply = store.append_message(owner, conv["id"], role="assistant", content="", status="streaming")
    store.update_message(owner, reply["id"], content="Hel")  # called again and again while the answer streams

Every conversation has an owner (the server passes a hash of the API key, "" without keys) and every call
names one: a conversation or message of another owner does not exist for it (NotFound, a 404). An owner may
hold at most `max_conversations` conversations and `max_chars` characters of message text (StoreFull).

Durability: the database runs in WAL mode with synchronous=FULL and every public method is one transaction,
so a process killed at any instant leaves either the old or the new state, never half of a write. The page
saves a streaming answer as it arrives (see routes.py and static/server.js), which is how a crash or kill
mid-answer loses nothing already shown.

Messages are ordered by `position` (0, 1, 2, ... without gaps). Editing an earlier user message or regenerating
an answer replaces the tail of the conversation: `append_message(..., replace_from=p)` deletes positions >= p
and appends, atomically. The stdlib sqlite3 module is enough here: an ORM would be a dependency for two tables.
"""

from __future__ import annotations

import sqlite3
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import platformdirs

ROLES = ("system", "user", "assistant")
STATUSES = ("complete", "streaming", "stopped", "error")
TITLE_CHARS = 60

SCHEMA = """
CREATE TABLE IF NOT EXISTS conversations (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL DEFAULT '',
    title TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS messages (
    id TEXT PRIMARY KEY,
    conversation_id TEXT NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    role TEXT NOT NULL,
    content TEXT NOT NULL,
    reasoning_content TEXT,
    thinking_seconds REAL,
    model TEXT,
    status TEXT NOT NULL,
    finish_reason TEXT,
    error TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    UNIQUE (conversation_id, position)
);
CREATE INDEX IF NOT EXISTS conversations_by_update ON conversations(updated_at);
"""
OWNER_INDEX = "CREATE INDEX IF NOT EXISTS conversations_by_owner ON conversations(owner, updated_at)"
CONVERSATION_COLUMNS = "id, title, created_at, updated_at"  # the owner stays inside the store

MESSAGE_COLUMNS = (
    "id, conversation_id, position, role, content, reasoning_content, thinking_seconds, model, status, finish_reason, "
    "error, created_at, updated_at"
)


class StoreError(ValueError):
    """Bad input to the store (unknown id, bad role or status, bad position); the message names the problem."""


class NotFound(StoreError):
    """The conversation or message id does not exist (any more), or belongs to another owner."""


class StoreFull(StoreError):
    """The owner already holds as many conversations or as much text as the store allows."""


def default_db_path() -> Path:
    """Where conversations live when no path is configured: the user's data directory, per platform."""
    return Path(platformdirs.user_data_dir("nanoseek", appauthor=False)) / "web.sqlite3"


def make_title(text: str) -> str:
    """A conversation title from its first user message: the first line, shortened at a word boundary."""
    first_line = text.strip().splitlines()[0] if text.strip() else ""
    if len(first_line) <= TITLE_CHARS:
        return first_line or "New chat"
    cut = first_line[:TITLE_CHARS].rsplit(" ", 1)[0] or first_line[:TITLE_CHARS]
    return cut + "…"


class ConversationStore:
    """Thread-safe SQLite store; one short-lived connection per call so that FastAPI's worker threads never
    share a connection and every call is its own transaction."""

    def __init__(
        self, path: Path | str | None = None, *, max_conversations: int = 10_000, max_chars: int = 100_000_000
    ) -> None:
        self.max_conversations, self.max_chars = max_conversations, max_chars
        self.path = Path(path) if path is not None else default_db_path()
        if self.path.is_dir():
            raise StoreError(f"conversation store path {self.path} is a directory; give a file path")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = self._connect()
        try:
            conn.executescript(SCHEMA)
            # stores written before finish_reason existed gain the column (SQLite adds it without a rewrite)
            columns = {row["name"] for row in conn.execute("PRAGMA table_info(messages)")}
            if "finish_reason" not in columns:
                conn.execute("ALTER TABLE messages ADD COLUMN finish_reason TEXT")
            # stores written before owners existed: their conversations belong to the no-key owner
            if "owner" not in {row["name"] for row in conn.execute("PRAGMA table_info(conversations)")}:
                conn.execute("ALTER TABLE conversations ADD COLUMN owner TEXT NOT NULL DEFAULT ''")
            conn.execute(OWNER_INDEX)
        finally:
            conn.close()

    def _connect(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        except sqlite3.OperationalError as error:
            raise StoreError(f"cannot open conversation store {self.path}: {error}") from error
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")  # survive power loss too, not just a killed process
        conn.execute("PRAGMA foreign_keys=ON")
        return conn

    @contextmanager
    def transaction(self, write: bool = True) -> Iterator[sqlite3.Connection]:
        """One transaction. Writers take the write lock up front (IMMEDIATE) so that two writers never deadlock
        upgrading a read lock; readers see one consistent snapshot and never block writers (WAL)."""
        conn = self._connect()
        try:
            conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        finally:
            conn.close()

    # -- conversations ------------------------------------------------------------------------------------

    def create_conversation(self, owner: str, title: str = "") -> dict[str, Any]:
        now = time.time()
        conversation = {"id": uuid.uuid4().hex, "title": title.strip(), "created_at": now, "updated_at": now}
        with self.transaction() as conn:
            count = conn.execute("SELECT COUNT(*) FROM conversations WHERE owner = ?", (owner,)).fetchone()[0]
            if count >= self.max_conversations:
                raise StoreFull(f"this key already has {count} conversations, the most the store keeps; delete some")
            conn.execute(
                "INSERT INTO conversations (id, owner, title, created_at, updated_at) "
                "VALUES (:id, :owner, :title, :created_at, :updated_at)",
                {**conversation, "owner": owner},
            )
        return conversation

    def list_conversations(self, owner: str) -> list[dict[str, Any]]:
        """The owner's conversations, most recently updated first."""
        with self.transaction(write=False) as conn:
            rows = conn.execute(
                f"SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE owner = ? "
                "ORDER BY updated_at DESC, created_at DESC",
                (owner,),
            ).fetchall()
        return [dict(row) for row in rows]

    def get_conversation(self, owner: str, conversation_id: str) -> dict[str, Any]:
        """The conversation with its messages in order."""
        with self.transaction(write=False) as conn:
            conversation = self._conversation_row(conn, owner, conversation_id)
            messages = conn.execute(
                f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE conversation_id = ? ORDER BY position",
                (conversation_id,),
            ).fetchall()
        return {**conversation, "messages": [dict(row) for row in messages]}

    def rename_conversation(self, owner: str, conversation_id: str, title: str) -> dict[str, Any]:
        title = title.strip()
        if not title:
            raise StoreError("a conversation title cannot be empty")
        with self.transaction() as conn:
            self._conversation_row(conn, owner, conversation_id)
            conn.execute(
                "UPDATE conversations SET title = ?, updated_at = ? WHERE id = ?", (title, time.time(), conversation_id)
            )
            return self._conversation_row(conn, owner, conversation_id)

    def delete_conversation(self, owner: str, conversation_id: str) -> None:
        with self.transaction() as conn:
            self._conversation_row(conn, owner, conversation_id)
            conn.execute("DELETE FROM conversations WHERE id = ?", (conversation_id,))

    # -- messages -----------------------------------------------------------------------------------------

    def append_message(
        self,
        owner: str,
        conversation_id: str,
        *,
        role: str,
        content: str,
        reasoning_content: str | None = None,
        thinking_seconds: float | None = None,
        model: str | None = None,
        status: str = "complete",
        finish_reason: str | None = None,
        error: str | None = None,
        replace_from: int | None = None,
    ) -> dict[str, Any]:
        """Append a message; with `replace_from=p`, first drop the messages at positions >= p (edit/regenerate).
        The first user message of an untitled conversation becomes its title."""
        self._check_role_status(role, status)
        now = time.time()
        with self.transaction() as conn:
            conversation = self._conversation_row(conn, owner, conversation_id)
            count = conn.execute(
                "SELECT COUNT(*) FROM messages WHERE conversation_id = ?", (conversation_id,)
            ).fetchone()[0]
            if replace_from is not None:
                if not 0 <= replace_from <= count:
                    raise StoreError(f"replace_from={replace_from} is outside this conversation's 0..{count} messages")
                conn.execute(
                    "DELETE FROM messages WHERE conversation_id = ? AND position >= ?", (conversation_id, replace_from)
                )
                count = replace_from
            # after the replaced messages are gone (a refusal rolls their deletion back): an edit at the cap fits
            self._check_room(conn, owner, len(content) + len(reasoning_content or "") + len(error or ""))
            message = {
                "id": uuid.uuid4().hex,
                "conversation_id": conversation_id,
                "position": count,
                "role": role,
                "content": content,
                "reasoning_content": reasoning_content,
                "thinking_seconds": thinking_seconds,
                "model": model,
                "status": status,
                "finish_reason": finish_reason,
                "error": error,
                "created_at": now,
                "updated_at": now,
            }
            conn.execute(
                f"INSERT INTO messages ({MESSAGE_COLUMNS}) VALUES (:id, :conversation_id, :position, :role, :content, "
                ":reasoning_content, :thinking_seconds, :model, :status, :finish_reason, :error, :created_at, :updated_at)",
                message,
            )
            title = conversation["title"] or (make_title(content) if role == "user" else "")
            conn.execute(
                "UPDATE conversations SET title = ?, updated_at = ? WHERE id = ?", (title, now, conversation_id)
            )
        return message

    def update_message(self, owner: str, message_id: str, **fields: Any) -> dict[str, Any]:
        """Overwrite some of a message's fields (content, reasoning_content, thinking_seconds, status, finish_reason,
        error, model);
        the page calls this with the whole text so far while an answer streams in."""
        allowed = {"content", "reasoning_content", "thinking_seconds", "status", "finish_reason", "error", "model"}
        unknown = set(fields) - allowed
        if unknown:
            raise StoreError(f"cannot update message field(s) {sorted(unknown)}; allowed: {sorted(allowed)}")
        if fields.get("content", "") is None:
            raise StoreError("message content cannot be null; use an empty string")
        if "status" in fields:
            self._check_role_status("assistant", fields["status"])
        now = time.time()
        with self.transaction() as conn:
            row = conn.execute(
                "SELECT m.conversation_id, length(m.content) AS content, "
                "coalesce(length(m.reasoning_content), 0) AS reasoning_content, coalesce(length(m.error), 0) AS error "
                "FROM messages m JOIN conversations c ON c.id = m.conversation_id WHERE m.id = ? AND c.owner = ?",
                (message_id, owner),
            ).fetchone()
            if row is None:
                raise NotFound(f"no message with id {message_id!r}")
            # only the fields given are replaced: the others keep their text, which still counts
            texts = [name for name in ("content", "reasoning_content", "error") if name in fields]
            self._check_room(conn, owner, sum(len(fields[name] or "") - row[name] for name in texts))
            if fields:
                assignments = ", ".join(f"{name} = :{name}" for name in fields)
                conn.execute(
                    f"UPDATE messages SET {assignments}, updated_at = :now WHERE id = :id",
                    {**fields, "now": now, "id": message_id},
                )
                conn.execute("UPDATE conversations SET updated_at = ? WHERE id = ?", (now, row["conversation_id"]))
            updated = conn.execute(f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE id = ?", (message_id,)).fetchone()
        return dict(updated)

    # -- helpers ------------------------------------------------------------------------------------------

    @staticmethod
    def _conversation_row(conn: sqlite3.Connection, owner: str, conversation_id: str) -> dict[str, Any]:
        row = conn.execute(
            f"SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE id = ? AND owner = ?", (conversation_id, owner)
        ).fetchone()
        if row is None:
            raise NotFound(f"no conversation with id {conversation_id!r}")
        return dict(row)

    def _check_room(self, conn: sqlite3.Connection, owner: str, more_chars: int) -> None:
        """StoreFull if the owner's message text would grow past max_chars."""
        if more_chars <= 0:
            return
        held = conn.execute(
            "SELECT coalesce(sum(length(m.content) + coalesce(length(m.reasoning_content), 0) "
            "+ coalesce(length(m.error), 0)), 0) FROM messages m JOIN conversations c ON c.id = m.conversation_id "
            "WHERE c.owner = ?",
            (owner,),
        ).fetchone()[0]
        if held + more_chars > self.max_chars:
            raise StoreFull(
                f"this key's conversations already hold {held} characters; the store keeps at most {self.max_chars}"
            )

    @staticmethod
    def _check_role_status(role: str, status: str) -> None:
        if role not in ROLES:
            raise StoreError(f"message role must be one of {', '.join(ROLES)}, not {role!r}")
        if status not in STATUSES:
            raise StoreError(f"message status must be one of {', '.join(STATUSES)}, not {status!r}")
