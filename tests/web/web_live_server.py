"""A live uvicorn server for the web tests: any FastAPI app on a free 127.0.0.1 port, in a background thread.

with LiveServer(app) as server:
    httpx.get(server.url + "/")
    eventually(lambda: check_what_the_server_stored(server))
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from typing import Self, TypeVar

import uvicorn
from fastapi import FastAPI

T = TypeVar("T")


class LiveServer:
    """Serves a FastAPI app with uvicorn in a background thread on a free 127.0.0.1 port."""

    def __init__(self, app: FastAPI, port: int = 0) -> None:
        self.app = app
        self.socket = socket.socket()
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a restart may take the same port
        self.socket.bind(("127.0.0.1", port))
        self.port = self.socket.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        # timeout_graceful_shutdown: open SSE streams must not hold the test run hostage at teardown.
        config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=1)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.socket]}, daemon=True)

    def __enter__(self) -> Self:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.socket.close()


def eventually(check: Callable[[], T], timeout: float = 10.0) -> T:
    """The server acts just after the page shows something (saves the answer, frees the engine): call `check`
    until it stops raising AssertionError, and return what it returns; after `timeout` seconds, raise."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return check()
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
