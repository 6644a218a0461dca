"""The checks every HTTP request passes before any route sees it, as one ASGI middleware:

* the `Host` header must name this server (loopback names or the configured `--host`, plus `allowed_hosts`),
  so a web page on another site cannot reach a no-key localhost server through DNS rebinding (its requests
  carry that site's name); a wildcard bind (0.0.0.0) needs API keys anyway, and then allows any name;
* the body is at most `max_body_bytes`, checked on Content-Length and again as it streams in (chunked uploads
  carry no length), so a huge body is never held in memory: 413;
* the body arrives within `body_seconds`, so a half-sent body cannot hold a connection (and a shutdown) open: 408;
* a JSON body holds no lone UTF-16 surrogate (`"\\ud800"`), which Python's json accepts but no text path can
  encode (tokenizer, SQLite, the JSON response): 400 instead of a 500 deep inside.
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from nanoseek.api.errors import error_body
from nanoseek.api.settings import Settings

LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1"}
WILDCARD_HOSTS = {"0.0.0.0", "::", ""}
SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")  # a \uD800-\uDFFF escape: maybe half of a pair
SURROGATE = re.compile("[\ud800-\udfff]")  # what is left in a parsed string is unpaired


class RequestRejected(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def host_name(header: str) -> str:
    """The name in a Host header, without the port ("[::1]:8000" -> "::1")."""
    if header.startswith("["):
        return header[1 : header.find("]")].lower()
    return header.rsplit(":", 1)[0].lower() if header.count(":") == 1 else header.lower()


def has_lone_surrogate(value: Any) -> bool:
    if isinstance(value, str):
        return SURROGATE.search(value) is not None
    if isinstance(value, dict):
        return any(has_lone_surrogate(k) or has_lone_surrogate(v) for k, v in value.items())
    if isinstance(value, list):
        return any(has_lone_surrogate(v) for v in value)
    return False


class RequestGuardMiddleware:
    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.max_bytes = settings.max_body_bytes
        self.body_seconds = settings.body_seconds
        self.any_host = settings.host in WILDCARD_HOSTS
        self.allowed_hosts = LOOPBACK_NAMES | {settings.host.lower()} | {h.lower() for h in settings.allowed_hosts}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers", []))
        host = headers.get(b"host")
        if host is not None and not self.any_host and host_name(host.decode("latin-1")) not in self.allowed_hosts:
            await self.reject(scope, send, 400, "Invalid Host header: this server answers only to its own names.")
            return
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self.reject(scope, send, 413, self.too_large)
            return
        deadline = asyncio.get_running_loop().time() + self.body_seconds
        chunks: list[bytes] = []
        received, body_done, maybe_surrogate, responded = 0, False, False, False
        rejected: RequestRejected | None = None

        async def guarded_receive() -> Message:
            nonlocal received, body_done, maybe_surrogate, rejected
            if body_done:  # after the body, receive() only waits for a disconnect: no deadline there
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), deadline - asyncio.get_running_loop().time())
            except TimeoutError:
                rejected = RequestRejected(408, f"The request body did not arrive within {self.body_seconds:g} s.")
                raise rejected from None
            if message["type"] != "http.request":
                return message
            chunk = message.get("body", b"")
            received += len(chunk)
            if received > self.max_bytes:
                rejected = RequestRejected(413, self.too_large)
                raise rejected
            tail = chunks[-1][-5:] if chunks else b""  # an escape split across two chunks
            maybe_surrogate = maybe_surrogate or SURROGATE_ESCAPE.search(tail + chunk) is not None
            chunks.append(chunk)
            if not message.get("more_body", False):
                body_done = True
                if maybe_surrogate and body_has_lone_surrogate(b"".join(chunks)):
                    rejected = RequestRejected(
                        400, "The request body holds a lone UTF-16 surrogate (such as \\ud800): not valid Unicode text."
                    )
                    raise rejected
            return message

        async def guarded_send(message: Message) -> None:
            # the framework answers a failed body read itself; say what really happened instead
            nonlocal responded
            if rejected is None:
                await send(message)
            elif message["type"] == "http.response.start" and not responded:
                responded = True
                await self.reject(scope, send, rejected.status, rejected.message)

        try:
            await self.app(scope, guarded_receive, guarded_send)
        except RequestRejected as error:
            if not responded:
                await self.reject(scope, send, error.status, error.message)

    @property
    def too_large(self) -> str:
        return f"Request body is larger than the server's limit of {self.max_bytes} bytes."

    async def reject(self, scope: Scope, send: Send, status: int, message: str) -> None:
        body = json.dumps(error_body(status, message, anthropic=scope["path"].startswith("/anthropic"))).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})


def body_has_lone_surrogate(body: bytes) -> bool:
    try:
        return has_lone_surrogate(json.loads(body))
    except ValueError:  # not JSON: the route's own parsing answers that
        return False
