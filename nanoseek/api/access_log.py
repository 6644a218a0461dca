"""One access-log line per HTTP request, written when the response is over (a stream's end, not its headers):

    127.0.0.1 "POST /v1/chat/completions" 200 prompt=41 (cached 0) completion=16 0.412s

to the `nanoseek.access` logger at INFO (`nanoseek serve --log-level warning` silences it). The token counts
come from the endpoint (`chat.finish` records the request's usage in `request.state.usage`); requests that
generate nothing (errors, /models, the web page) log without them. Replaces uvicorn's access log, which logs at
the headers and knows no tokens.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("nanoseek.access")


class AccessLogMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 0

        async def remember_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, remember_status)
        finally:
            log.info(access_line(scope, status, time.perf_counter() - started))


def access_line(scope: Scope, status: int, seconds: float) -> str:
    client = scope.get("client")
    where = client[0] if client else "-"
    # the path arrives percent-decoded: a %0A or %22 in it must not start a forged line or close the quotes
    path = json.dumps(scope["path"], ensure_ascii=False)[1:-1]
    line = f'{where} "{scope["method"]} {path}" {status or "-"}'
    usage: Any = scope.get("state", {}).get("usage")
    if usage is not None:
        line += (
            f" prompt={usage.prompt_tokens} (cached {usage.prompt_cache_hit_tokens})"
            f" completion={usage.completion_tokens}"
        )
    return f"{line} {seconds:.3f}s"
