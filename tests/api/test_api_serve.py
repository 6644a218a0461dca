"""`nanoseek serve` as a real subprocess: settings from flags and NANOSEEK_* variables, refusal to bind a
public address without keys, a clear message for a missing model, and graceful shutdown on SIGTERM that
lets an in-flight stream finish with [DONE]."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import httpx
import pytest
import torch

from nanoseek.api import app as app_module
from nanoseek.api import serve
from nanoseek.api.settings import SettingsError, read_api_keys_file, settings_from_env
from tests.api.conftest import free_port, wait_until_healthy


def run_serve(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "nanoseek.cli", "serve", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def test_refuses_a_public_bind_without_keys(tiny_checkpoint):
    result = run_serve("--model", str(tiny_checkpoint), "--host", "0.0.0.0")
    assert result.returncode == 2
    assert "refusing to bind 0.0.0.0" in result.stderr and "API keys" in result.stderr


def test_missing_models_are_named(tmp_path, monkeypatch, capsys):
    assert serve.main(["--model", str(tmp_path / "nowhere")]) == 2
    assert "nowhere" in capsys.readouterr().err
    monkeypatch.setattr(app_module, "DEFAULT_MODEL_DIR", tmp_path / "default_model")
    monkeypatch.delenv("NANOSEEK_MODEL", raising=False)
    assert serve.main([]) == 2
    assert "embedded default model is missing" in capsys.readouterr().err


def test_bad_settings_are_named(tiny_checkpoint, monkeypatch, capsys):
    monkeypatch.setenv("NANOSEEK_MAX_BODY_BYTES", "lots")
    assert serve.main(["--model", str(tiny_checkpoint)]) == 2
    assert "NANOSEEK_MAX_BODY_BYTES" in capsys.readouterr().err


def test_key_file_hashes_inside_keys_and_rpm_zero(tmp_path):
    """Issue 23: a `#` inside a key truncated it, and rpm=0 meant no limit at all."""
    keys = tmp_path / "keys.txt"
    keys.write_text("# team keys\nsk-a#b7  quota=10  # a comment after a space\nsk-plain\n")
    assert [(p.key, p.quota_tokens) for p in read_api_keys_file(keys)] == [("sk-a#b7", 10), ("sk-plain", None)]
    keys.write_text("sk-a rpm=0\n")
    with pytest.raises(SettingsError, match="rpm=0"):
        read_api_keys_file(keys)
    with pytest.raises(SettingsError, match="requests_per_minute"):
        settings_from_env(environ={}, requests_per_minute=0)


def test_the_kv_cache_dtype_setting_reaches_the_engine(tiny_checkpoint):
    assert serve.parse_args(["--kv-cache-dtype", "float16"]).kv_cache_dtype == "float16"
    settings = settings_from_env(environ={"NANOSEEK_KV_CACHE_DTYPE": "float16"})
    engine = app_module.load_engine(settings, tiny_checkpoint)
    try:
        assert engine.cache.dtype == torch.float16 and engine.native is not None  # the native step reads it
    finally:
        engine.shutdown()
    with pytest.raises(SettingsError, match="kv_cache_dtype must be one of auto, float32, bfloat16, float16"):
        settings_from_env(environ={}, kv_cache_dtype="fp8")
    with pytest.raises(SettingsError, match="kv_cache_dtype is the native engine's"):
        settings_from_env(environ={}, kv_cache_dtype="float16", backend="vllm")


def test_serve_from_env_and_graceful_shutdown(tiny_checkpoint, tmp_path):
    port = free_port()
    keys = tmp_path / "keys.txt"
    keys.write_text("sk-env\n")
    env = {
        **os.environ,
        "NANOSEEK_PORT": str(port),
        "NANOSEEK_DB_PATH": str(tmp_path / "web.sqlite3"),
        "NANOSEEK_MAX_TOKENS_DEFAULT": "8",
    }
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "nanoseek.cli",
            "serve",
            "--model",
            str(tiny_checkpoint),
            "--api-keys",
            str(keys),
            "--graceful-seconds",
            "30",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(process, url, 90)
        headers = {"Authorization": "Bearer sk-env"}
        assert httpx.get(f"{url}/models", timeout=5).status_code == 401

        lines: list[str] = []
        body = {
            "model": "deepseek-chat",
            "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 300,
            "temperature": 0,
            "stream": True,
        }

        def stream() -> None:
            with httpx.stream("POST", f"{url}/chat/completions", json=body, headers=headers, timeout=60) as r:
                for line in r.iter_lines():
                    if line:
                        lines.append(line)

        reader = threading.Thread(target=stream)
        reader.start()
        # The first streamed chunk shows the request is running; polling /health could miss a short request.
        deadline = time.monotonic() + 30
        while not lines:
            assert time.monotonic() < deadline, "the stream never started"
            time.sleep(0.01)
        process.send_signal(signal.SIGTERM)  # mid-stream
        reader.join(timeout=60)
        # uvicorn re-raises the signal once it has shut down cleanly, so the exit status is "killed by SIGTERM"
        assert process.wait(timeout=60) in (0, -signal.SIGTERM)
        assert "Finished server process" in process.stderr.read()
        assert lines[-1] == "data: [DONE]"
        chunks = [json.loads(line[6:]) for line in lines[:-1]]
        assert chunks[-1]["choices"][0]["finish_reason"] == "length"  # it ran to the end, not cut off
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
