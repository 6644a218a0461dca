"""Building the native step's library (nanoseek/engine/native.py), and what the engine does when it cannot.

A build that fails, times out or has no compiler leaves the engine on the PyTorch model with a warning naming
the reason (and `decode_path` / `native_unavailable` saying so); NANOSEEK_REQUIRE_NATIVE=1 turns that into an
error. Builds use stand-in compilers (shell scripts) where a real build's minutes would buy nothing: one that
never finishes, and one that copies a library built before, to show that processes starting together build once
between them."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nanoseek.engine import Engine, Request, SamplingParams, native
from nanoseek.engine.native import NativeDecoder, NativeUnavailable, compiled_library, load_library

MISSING_COMPILER = "/nonexistent/bin/cc"


@pytest.fixture
def fresh_library(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """This process as if it had not loaded the library yet, over an empty cache directory (restored after)."""
    monkeypatch.setattr(native, "_library", None)
    monkeypatch.setattr(native, "_library_error", None)
    monkeypatch.setenv("NANOSEEK_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("NANOSEEK_REQUIRE_NATIVE", raising=False)
    return tmp_path / "native"


def stand_in_compiler(path: Path, body: str) -> str:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return str(path)


def test_a_missing_compiler_falls_back_with_a_warning_naming_it(
    fresh_library, monkeypatch: pytest.MonkeyPatch, make_engine, caplog: pytest.LogCaptureFixture
):
    monkeypatch.setenv("CC", MISSING_COMPILER)
    with caplog.at_level(logging.WARNING, logger="nanoseek.engine.runner"):
        engine = make_engine()
    reason = f"the native library cannot be built: the C compiler '{MISSING_COMPILER}' ($CC) is not on this machine"
    assert engine.native is None and engine.decode_path == "PyTorch model"
    assert engine.native_unavailable == reason
    [warning] = [record for record in caplog.records if record.levelno == logging.WARNING]
    assert warning.getMessage() == f"native decode path unavailable, decoding with the PyTorch model: {reason}"
    [done] = engine.generate([Request([3, 4, 5], SamplingParams(max_tokens=4, temperature=0.0, ignore_eos=True))])
    assert len(done.token_ids) == 4  # and it still decodes


def test_require_native_makes_the_fallback_an_error(fresh_library, monkeypatch: pytest.MonkeyPatch, checkpoint):
    monkeypatch.setenv("CC", MISSING_COMPILER)
    monkeypatch.setenv("NANOSEEK_REQUIRE_NATIVE", "1")
    with pytest.raises(NativeUnavailable, match=r"required \(NANOSEEK_REQUIRE_NATIVE=1\).*\$CC\) is not on") as caught:
        Engine(checkpoint.model, checkpoint.tokenizer)
    assert caught.value.failure
    # The decoder's own build (what the benchmarks call) raises too, where it would otherwise return None.
    engine = Engine(checkpoint.model, checkpoint.tokenizer, native_decode=False)  # asked for PyTorch: no error
    try:
        assert engine.decode_path == "PyTorch model" and engine.native_unavailable is None
        with pytest.raises(NativeUnavailable, match="is not on this machine"):
            NativeDecoder.build(engine.model, engine.cache, max_batch=2)
        monkeypatch.delenv("NANOSEEK_REQUIRE_NATIVE")
        assert NativeDecoder.build(engine.model, engine.cache, max_batch=2) is None
    finally:
        engine.shutdown()


def test_a_build_past_the_timeout_is_stopped_with_its_compiler(
    fresh_library, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    # Not `exec sleep`: the shell's child keeps the output pipe open, so only killing the whole process group
    # (as a real compiler driver's cc1 and as) returns in time.
    monkeypatch.setenv("CC", stand_in_compiler(tmp_path / "slow-cc", "sleep 60\n"))
    monkeypatch.setenv("NANOSEEK_NATIVE_COMPILE_TIMEOUT", "1")
    started = time.monotonic()
    with pytest.raises(NativeUnavailable, match=r"compiling native_decode.c took over 1 s and was stopped"):
        compiled_library()
    assert time.monotonic() - started < 20
    assert load_library() is None  # the same reason later, without building again
    assert list(fresh_library.glob("*.so")) == []


def test_processes_starting_together_build_the_library_once(tmp_path: Path):
    built = load_library()  # the real library (this machine's cache), copied by the stand-in compiler below
    assert built is not None
    calls = tmp_path / "calls"
    compiler = stand_in_compiler(
        tmp_path / "copying-cc",
        'echo built >> "$CALLS"\nsleep 5\n'
        'while [ $# -gt 0 ]; do [ "$1" = -o ] && out="$2"; shift; done\ncp "$REAL_LIBRARY" "$out"\n',
    )
    # Each process imports, says it is ready, and loads once both are: they reach the build together.
    script = """
import sys, time
from pathlib import Path
from nanoseek.engine.native import compiled_library
ready = Path(sys.argv[1])
(ready / sys.argv[2]).touch()
while len(list(ready.iterdir())) < 2:
    time.sleep(0.05)
compiled_library()
print("loaded")
"""
    ready = tmp_path / "ready"
    ready.mkdir()
    env = {
        **os.environ,
        "CC": compiler,
        "CALLS": str(calls),
        "REAL_LIBRARY": built._name,
        "NANOSEEK_CACHE_DIR": str(tmp_path / "cache"),
    }
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(ready), name], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        for name in ("a", "b")
    ]
    results = [process.communicate(timeout=300) for process in processes]
    assert [process.returncode for process in processes] == [0, 0], [err.decode() for _, err in results]
    assert [out for out, _ in results] == [b"loaded\n", b"loaded\n"]
    assert calls.read_text() == "built\n"
    assert sum(b"nanoseek: compiling the native decode step" in err for _, err in results) == 1
    cached = sorted(path.suffix for path in (tmp_path / "cache" / "native").iterdir())
    assert cached == [".lock", ".sha256", ".so"]  # no scratch directory left behind


def test_without_a_working_compiler_the_engine_decodes_with_pytorch(engine_checkpoint, tmp_path):
    # A fresh process (the library is loaded once per process), a compiler that fails and an empty cache: the
    # warning reaches stderr with no logging set up.
    script = f"""
from nanoseek.engine import Engine, Request, SamplingParams
engine = Engine.from_checkpoint({str(engine_checkpoint)!r})
assert engine.native is None and engine.decode_path == "PyTorch model", engine.decode_path
[done] = engine.generate([Request([3, 4, 5], SamplingParams(max_tokens=5, temperature=0.0, ignore_eos=True))])
assert len(done.token_ids) == 5
engine.shutdown()
print("decoded with pytorch")
"""
    env = {**os.environ, "CC": "false", "NANOSEEK_CACHE_DIR": str(tmp_path)}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "decoded with pytorch" in result.stdout
    assert "native decode path unavailable, decoding with the PyTorch model: the native library cannot be built: " in (
        result.stderr
    )
    assert "false failed to build native_decode.c" in result.stderr


def test_a_truncated_cached_library_is_rebuilt_not_loaded(tmp_path):
    """Issue 23: a cached native_decode-*.so cut short crashed every start with SIGBUS and was never rebuilt."""
    script = "from nanoseek.engine.native import load_library\nassert load_library() is not None\nprint('loaded')"
    env = {**os.environ, "NANOSEEK_CACHE_DIR": str(tmp_path)}

    def load() -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600)

    assert load().stdout == "loaded\n"
    [library] = (tmp_path / "native").glob("native_decode-*.so")
    whole = library.read_bytes()
    library.write_bytes(whole[: len(whole) // 3])
    again = load()
    assert again.returncode == 0 and again.stdout == "loaded\n", again.stderr
    assert library.read_bytes() == whole  # rebuilt (the same compiler makes the same bytes)
