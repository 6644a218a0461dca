"""HTTP routes of the web chat: the page, its static files and the conversation store API.

The API server calls `mount(app, db_path=..., auth=...)` from `nanoseek.api.app.create_app`; then

    GET  /                                  the chat page (static/index.html), public so that a key can be entered
    GET  /static/...                        its script, styles and vendored libraries (no CDN: works offline)
    GET  /web/api/conversations             list, most recent first
    POST /web/api/conversations             create {"title"?}
    GET  /web/api/conversations/{id}        one conversation with its messages
    PATCH  /web/api/conversations/{id}      rename {"title"}
    DELETE /web/api/conversations/{id}      delete with its messages
    POST /web/api/conversations/{id}/messages   append {"role","content",...,"replace_from"?} (edit/regenerate)
    PATCH /web/api/messages/{id}            overwrite fields of a message (the streaming answer so far)

The page itself talks to the model through the DeepSeek-compatible `/chat/completions` like any client and
saves what it shows here as it streams (see static/server.js): a server or browser crash loses at most the
text that arrived since the last save, and the page retries unsaved text until the server answers again.
Every store route sits behind `auth` (the API's dependency: a valid key when keys are configured, and the
store's own request rate); it returns the caller's KeyPolicy, whose `owner` (a hash of the key, "" without keys)
scopes every store call: another key's conversations and messages are 404.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from fastapi import APIRouter, Depends, FastAPI
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field

from nanoseek.web.store import ConversationStore, NotFound, StoreError, StoreFull

STATIC_DIR = Path(__file__).parent / "static"
MAX_TEXT_CHARS = 2_000_000  # a long answer plus its reasoning fits; a runaway client does not fill the disk


class NewConversation(BaseModel):
    model_config = ConfigDict(extra="forbid")
    title: str = Field(default="", max_length=200)


class Rename(BaseModel):
    model_config = ConfigDict(extra="forbid")
    title: str = Field(min_length=1, max_length=200)


class NewMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "user", "assistant"]
    content: str = Field(max_length=MAX_TEXT_CHARS)
    reasoning_content: str | None = Field(default=None, max_length=MAX_TEXT_CHARS)
    thinking_seconds: float | None = Field(default=None, ge=0)
    model: str | None = Field(default=None, max_length=200)
    status: Literal["complete", "streaming", "stopped", "error"] = "complete"
    finish_reason: str | None = Field(default=None, max_length=40)
    error: str | None = Field(default=None, max_length=10_000)
    replace_from: int | None = Field(default=None, ge=0)


class MessagePatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    content: str | None = Field(default=None, max_length=MAX_TEXT_CHARS)
    reasoning_content: str | None = Field(default=None, max_length=MAX_TEXT_CHARS)
    thinking_seconds: float | None = Field(default=None, ge=0)
    model: str | None = Field(default=None, max_length=200)
    status: Literal["complete", "streaming", "stopped", "error"] | None = None
    finish_reason: str | None = Field(default=None, max_length=40)
    error: str | None = Field(default=None, max_length=10_000)


def error_response(error: StoreError) -> JSONResponse:
    """Store errors in the DeepSeek API's error shape, so that the page reads every error the same way."""
    status = 404 if isinstance(error, NotFound) else 413 if isinstance(error, StoreFull) else 400
    kind = "not_found_error" if status == 404 else "invalid_request_error"
    return JSONResponse(
        status_code=status, content={"error": {"message": str(error), "type": kind, "param": None, "code": None}}
    )


def store_router(store: ConversationStore, auth: Callable[..., Any]) -> APIRouter:
    router = APIRouter(prefix="/web/api")

    async def owner_of(policy: Any = Depends(auth)) -> str:
        return policy.owner

    Owner = Depends(owner_of)

    # Plain `def` handlers: FastAPI runs them in its thread pool, so SQLite's fsyncs never block the event loop
    # that streams tokens to other clients.
    @router.get("/conversations")
    def list_conversations(owner: str = Owner) -> Any:
        return {"data": store.list_conversations(owner)}

    @router.post("/conversations", status_code=201)
    def create_conversation(body: NewConversation | None = None, owner: str = Owner) -> Any:
        try:
            return store.create_conversation(owner, title=body.title if body else "")
        except StoreError as error:
            return error_response(error)

    @router.get("/conversations/{conversation_id}")
    def get_conversation(conversation_id: str, owner: str = Owner) -> Any:
        try:
            return store.get_conversation(owner, conversation_id)
        except StoreError as error:
            return error_response(error)

    @router.patch("/conversations/{conversation_id}")
    def rename_conversation(conversation_id: str, body: Rename, owner: str = Owner) -> Any:
        try:
            return store.rename_conversation(owner, conversation_id, body.title)
        except StoreError as error:
            return error_response(error)

    @router.delete("/conversations/{conversation_id}")
    def delete_conversation(conversation_id: str, owner: str = Owner) -> Any:
        try:
            store.delete_conversation(owner, conversation_id)
        except StoreError as error:
            return error_response(error)
        return {"id": conversation_id, "deleted": True}

    @router.post("/conversations/{conversation_id}/messages", status_code=201)
    def append_message(conversation_id: str, body: NewMessage, owner: str = Owner) -> Any:
        try:
            return store.append_message(owner, conversation_id, **body.model_dump())
        except StoreError as error:
            return error_response(error)

    @router.patch("/messages/{message_id}")
    def update_message(message_id: str, body: MessagePatch, owner: str = Owner) -> Any:
        try:
            return store.update_message(owner, message_id, **body.model_dump(exclude_unset=True))
        except StoreError as error:
            return error_response(error)

    return router


def mount(
    app: FastAPI,
    *,
    auth: Callable[..., Any],
    db_path: Path | None = None,
    max_conversations: int = 10_000,
    max_chars: int = 100_000_000,
) -> ConversationStore:
    """Serve the chat page at `/`, its files at `/static` and the store API at `/web/api` on `app`.
    `db_path=None` keeps conversations under the user's data directory; `max_conversations` and `max_chars`
    cap each owner. Returns the store (also at `app.state.web_store`)."""
    store = ConversationStore(db_path, max_conversations=max_conversations, max_chars=max_chars)
    app.state.web_store = store

    @app.get("/", include_in_schema=False)
    def chat_page() -> FileResponse:
        # no-cache: the page is tiny and a stale copy after an upgrade would talk to routes that changed.
        return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="web-static")
    app.include_router(store_router(store, auth))
    return store
