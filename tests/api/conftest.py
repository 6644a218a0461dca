"""Fixtures for the API tests: live uvicorn servers on 127.0.0.1 over the random `tiny_checkpoint`.

    nice -n 10 timeout 600 python3 -m pytest tests/api -x -q

`api_server` (one per test module) serves with API keys configured: `sk-main` (unlimited), `sk-quota`
(a 40-token quota), `sk-rate` (2 requests a minute). Other fixtures start servers with their own settings
through `start_server`. Servers run uvicorn in a background thread on a random free port.
"""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from nanoseek.api.app import create_app
from nanoseek.api.settings import Settings, settings_from_env

MAIN_KEY = "sk-main"
KEYS_FILE_TEXT = f"""# test keys
{MAIN_KEY}
sk-quota quota=40
sk-rate  rpm=2
"""


@dataclass
class LiveServer:
    url: str
    app: Any
    server: uvicorn.Server
    thread: threading.Thread

    @property
    def engine(self) -> Any:
        return self.app.state.registry.default.engine

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_healthy(process: subprocess.Popen, url: str, seconds: float) -> None:
    """Wait for a `nanoseek serve` subprocess to answer /health (its stderr in the failure if it exits)."""
    deadline = time.monotonic() + seconds
    while True:
        assert process.poll() is None, process.stderr.read() if process.stderr else "the server exited"
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "the server did not come up"
        time.sleep(0.2)


def launch(settings: Settings) -> LiveServer:
    app = create_app(settings)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", timeout_graceful_shutdown=5)
    )
    thread = threading.Thread(target=server.run, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    return LiveServer(f"http://127.0.0.1:{port}", app, server, thread)


@pytest.fixture(scope="module")
def start_server(
    tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., LiveServer]]:
    """Start servers over tiny_checkpoint with settings overrides; all are stopped when the module ends."""
    servers: list[LiveServer] = []

    def start(**overrides: Any) -> LiveServer:
        fields: dict[str, Any] = {
            "model": tiny_checkpoint,
            "max_tokens_default": 16,
            "max_batch": 4,
            "kv_budget_tokens": 8192,
            "max_body_bytes": 1_000_000,
            "db_path": tmp_path_factory.mktemp("web") / "web.sqlite3",
        }
        fields.update(overrides)
        servers.append(launch(settings_from_env(environ={}, **fields)))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


@pytest.fixture(scope="module")
def api_server(start_server: Callable[..., LiveServer], tmp_path_factory: pytest.TempPathFactory) -> LiveServer:
    keys = tmp_path_factory.mktemp("keys") / "keys.txt"
    keys.write_text(KEYS_FILE_TEXT)
    return start_server(api_keys_file=keys)


@pytest.fixture(scope="module")
def client(api_server: LiveServer):
    import openai

    return openai.OpenAI(base_url=api_server.url, api_key=MAIN_KEY, max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def beta_client(api_server: LiveServer):
    import openai

    return openai.OpenAI(base_url=api_server.url + "/beta", api_key=MAIN_KEY, max_retries=0, timeout=120)
