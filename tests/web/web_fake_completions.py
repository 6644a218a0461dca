"""TEST DOUBLE: a scripted stand-in for the DeepSeek-compatible `/chat/completions` streaming endpoint.

Used only by the web tests whose point needs an answer we control: error statuses (401, 429, context too long),
a broken connection, a server process SIGKILLed mid-answer, slow answers to walk away from, hostile HTML, and
exact request bodies (edit, regenerate). The main end-to-end tests (test_web_chat_browser.py) drive the real
server (`nanoseek.api.app.create_app`). The double speaks the same wire format as the real endpoint: SSE
`chat.completion.chunk` objects with `delta.content` / `delta.reasoning_content`, ended by `data: [DONE]`.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, StreamingResponse

from nanoseek.api.settings import KeyPolicy
from nanoseek.web.routes import mount


@dataclass
class ScriptedReply:
    reasoning: list[str] = field(default_factory=list)  # reasoning_content deltas, streamed first
    content: list[str] = field(default_factory=list)  # content deltas
    delay: float = 0.0  # seconds between deltas
    status: int = 200  # a non-200 status answers with a DeepSeek-style error body instead
    error_message: str = ""
    drop_connection_after: int | None = None  # break the stream (no [DONE]) after this many deltas


class ScriptedCompletions:
    """Replies are taken from a queue; with the queue empty the double echoes the last user message."""

    def __init__(self, api_key: str | None = None) -> None:
        self.api_key = api_key
        self.replies: deque[ScriptedReply] = deque()
        self.requests: list[dict[str, Any]] = []

    def push(self, **reply: Any) -> None:
        self.replies.append(ScriptedReply(**reply))

    def next_reply(self, body: dict[str, Any]) -> ScriptedReply:
        if self.replies:
            return self.replies.popleft()
        last_user = next((m["content"] for m in reversed(body["messages"]) if m["role"] == "user"), "")
        return ScriptedReply(content=["You ", "said: ", last_user])


def chunk(model: str, delta: dict[str, Any], finish_reason: str | None = None) -> str:
    payload = {
        "id": "chatcmpl-test",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
        "usage": None,
    }
    return f"data: {json.dumps(payload)}\n\n"


def make_app(db_path: Path, script: ScriptedCompletions) -> FastAPI:
    """The web routes plus the scripted completions endpoint, with the same key check for both."""
    app = FastAPI()

    def check_key(request: Request) -> KeyPolicy:
        if script.api_key and request.headers.get("authorization") != f"Bearer {script.api_key}":
            raise HTTPException(status_code=401, detail="Authentication Fails (no such api key)")
        return KeyPolicy(key="")  # one owner: the tests read the store as the no-key owner ""

    mount(app, db_path=db_path, auth=check_key)

    @app.post("/chat/completions")
    async def completions(request: Request) -> Any:
        body = await request.json()
        script.requests.append({"body": body, "authorization": request.headers.get("authorization")})
        if script.api_key and request.headers.get("authorization") != f"Bearer {script.api_key}":
            return JSONResponse(
                status_code=401, content={"error": {"message": "Authentication Fails", "type": "authentication_error"}}
            )
        reply = script.next_reply(body)
        if reply.status != 200:
            return JSONResponse(
                status_code=reply.status, content={"error": {"message": reply.error_message, "type": "test"}}
            )
        model = body["model"]

        async def events():
            yield ": keep-alive\n\n"  # as the real server sends while a request waits in the queue
            yield chunk(model, {"role": "assistant", "content": ""})
            deltas = [{"reasoning_content": text} for text in reply.reasoning] + [
                {"content": text} for text in reply.content
            ]
            for sent, delta in enumerate(deltas):
                if reply.drop_connection_after is not None and sent == reply.drop_connection_after:
                    await asyncio.sleep(0.3)  # let the deltas sent so far reach the page first
                    raise ConnectionAbortedError("scripted connection drop")
                await asyncio.sleep(reply.delay)
                yield chunk(model, delta)
            yield chunk(model, {}, finish_reason="stop")
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    return app


if __name__ == "__main__":
    # A server process to SIGKILL mid-answer: `python web_fake_completions.py DB PORT DELTAS DELAY` streams
    # every answer as DELTAS numbered words, DELAY seconds apart.
    import sys

    import uvicorn

    db, port, deltas, delay = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
    script = ScriptedCompletions()
    for _ in range(10):
        script.push(content=[f"word{i} " for i in range(deltas)], delay=delay)
    uvicorn.run(make_app(db, script), host="127.0.0.1", port=port, log_level="warning")
