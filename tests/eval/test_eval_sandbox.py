"""The sandbox against the escapes of issue 23, run in the real bubblewrap sandbox: writes, deletes and renames
outside the scratch directory (through dir_fd, sqlite3, mkfifo), process creation (fork, _posixsubprocess,
ctypes), background processes that outlive the run, the network, memory, time; and the test harness against
candidates that exit early to look like a pass."""

from __future__ import annotations

import socket
import subprocess
import tempfile
import threading
import time

import pytest

from nanoseek.eval import sandbox
from nanoseek.eval.sandbox import SandboxUnavailable, run_python, run_tests


@pytest.fixture(autouse=True, scope="module")
def real_sandbox():
    problem = sandbox.sandbox_problem()
    assert problem is None, f"these tests need the real sandbox (bubblewrap, see .ci/run): {problem}"


def test_plain_code_runs_as_nobody_and_may_use_its_scratch_dir():
    result = run_python("import os\nopen('notes.txt', 'w').write('hi')\nprint(open('notes.txt').read(), os.getuid())")
    assert result.ok and result.stdout.split() == ["hi", "65534"]


def test_the_host_is_invisible_and_read_only(tmp_path):
    (tmp_path / "secret.txt").write_text("host data")
    code = f"""
import os
print(os.path.exists({str(tmp_path)!r}), os.path.exists('/root/.ssh'), os.path.exists('/home'))
try:
    open('/usr/escaped.txt', 'w')
except OSError as error:
    print(type(error).__name__, error.errno)
"""
    result = run_python(code)
    assert result.ok and result.stdout.split() == ["False", "False", "False", "OSError", "30"]  # 30: EROFS


@pytest.mark.parametrize(
    "escape",
    [
        "os.unlink('victim.txt', dir_fd=fd)",
        "os.rename('victim.txt', 'moved.txt', src_dir_fd=fd, dst_dir_fd=fd)",
        "os.close(os.open('victim.txt', os.O_WRONLY | os.O_TRUNC, dir_fd=fd))",
        "os.close(os.open('created.txt', os.O_CREAT | os.O_WRONLY, dir_fd=fd))",
        "os.mkdir('made', dir_fd=fd)",
        "import sqlite3; sqlite3.connect('/sandbox/made.sqlite3').execute('create table t (x)')",
        "os.mkfifo('/sandbox/fifo')",
        "os.symlink('/etc', '/sandbox/link')",
    ],
)
def test_files_outside_the_scratch_dir_cannot_be_changed(escape):
    """The program's own directory is the host's: every way of changing it fails, dir_fd and all."""
    code = f"""
import os
fd = os.open('/sandbox', os.O_RDONLY)
try:
    {escape}
    print('escaped')
except Exception as error:  # OSError (read-only file system), sqlite3.OperationalError
    print('refused', type(error).__name__)
print(open('/sandbox/victim.txt').read(), sorted(os.listdir('/sandbox')))
"""
    result = run_python(code, files={"victim.txt": "precious"})
    assert result.ok, result.stderr
    refused, kept = result.stdout.splitlines()
    assert refused.startswith("refused") and "escaped" not in result.stdout
    assert kept == "precious ['boot.py', 'program.py', 'victim.txt']"


@pytest.mark.parametrize(
    "code",
    [
        "import os\nwhile True:\n    os.fork()",
        "import multiprocessing\nmultiprocessing.Process(target=print).start()",
        "import subprocess\nsubprocess.run(['sh', '-c', 'echo escaped'])",
        "import subprocess\nsubprocess.Popen(['sh', '-c', 'echo escaped'], start_new_session=True).wait()",
        "import os\nprint('system returned', os.system('echo escaped'))",
        "import ctypes\nprint('fork returned', ctypes.CDLL(None).fork())",
        "import os\nos.posix_spawn('/bin/sh', ['sh', '-c', 'echo escaped'], {})",
    ],
)
def test_process_creation_is_refused(code):
    result = run_python(code, timeout=10)
    assert "escaped" not in result.stdout and not result.timed_out
    # refused outright, or (system, ctypes) the C call's failure value: -1, or 127 << 8 from system()
    assert "PermissionError" in result.stderr or result.stdout.split()[-1:] in (["-1"], ["32512"])


def test_threads_still_work():
    code = "import threading\nt = threading.Thread(target=print, args=('from a thread',))\nt.start()\nt.join()"
    assert run_python(code).stdout == "from a thread\n"


def test_a_background_process_dies_with_the_run(monkeypatch):
    """Even with process creation allowed (seccomp off), a setsid grandchild dies with the pid namespace."""
    monkeypatch.setattr(sandbox, "seccomp_filter", lambda: None)
    marker = f"{37 + time.time() % 1:.6f}"  # an argument no other process has
    code = f"""
import os
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        os.execv('/bin/sleep', ['sleep', '{marker}'])
    os._exit(0)
os.wait()
print('started')
"""
    result = run_python(code, timeout=10)
    assert result.ok and result.stdout == "started\n"

    def survivors() -> str:
        return subprocess.run(["pgrep", "-f", f"sleep {marker}"], capture_output=True, text=True).stdout

    # killed with the namespace, it is gone once the kernel has run it to its end: a moment on a quiet machine,
    # longer on a loaded one (a fixed 0.5 s wait was all the time it had); a survivor sleeps 37 s, past the wait
    deadline = time.monotonic() + 20
    while survivors() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert survivors() == ""


def test_infinite_loop_is_killed_on_time():
    started = time.monotonic()
    result = run_python("while True:\n    pass", timeout=1.5)
    assert result.timed_out and not result.ok and time.monotonic() - started < 10


def test_sleeping_child_is_killed_and_its_output_kept():
    # the timeout leaves time to start: the sandboxed interpreter took up to 0.96 s to print on a loaded machine
    result = run_python("import time\nprint('start', flush=True)\ntime.sleep(60)", timeout=5.0)
    assert result.timed_out and result.stdout.strip() == "start"


def test_allocating_10_gb_fails_with_memory_error():
    result = run_python("block = bytearray(10 * 2**30)\nprint('allocated')", timeout=10, memory_mb=256)
    assert not result.ok and "MemoryError" in result.stderr and "allocated" not in result.stdout


def test_the_scratch_tmpfs_is_capped():
    code = "block = b'x' * 2**20\nwith open('big', 'wb') as f:\n    for _ in range(64):\n        f.write(block)"
    result = run_python(code, scratch_mb=8, file_size_mb=128)
    assert not result.ok and "No space left on device" in result.stderr


@pytest.fixture
def listening_server():
    """A real TCP server on 127.0.0.1 that records every connection it accepts."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.settimeout(0.2)
    accepted: list[object] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                connection, _ = server.accept()
            except OSError:
                continue
            accepted.append(connection)
            connection.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1], accepted
    stop.set()
    thread.join()
    server.close()


def test_sockets_cannot_reach_a_live_server(listening_server):
    port, accepted = listening_server
    code = f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2)\nprint('connected')"
    result = run_python(code, timeout=10)
    # the sandbox's own loopback has nobody listening; the host's is out of reach
    assert not result.ok and "connected" not in result.stdout and "ConnectionRefusedError" in result.stderr
    time.sleep(0.3)
    assert accepted == []


def test_nothing_is_left_behind(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    assert run_python("print('hi')").ok and not list(tmp_path.iterdir())


def test_bad_limits_are_rejected():
    with pytest.raises(ValueError, match="timeout"):
        run_python("pass", timeout=0)
    assert run_python("import sys; sys.exit(3)").returncode == 3


CANDIDATES = {
    "right": ("def add(a, b):\n    return a + b\n", True),
    "wrong": ("def add(a, b):\n    return a - b\n", False),
    "wrong, exits 0 on import": ("def add(a, b):\n    return a - b\nimport os\nos._exit(0)\n", False),
    "wrong, exits 0 when called": ("def add(a, b):\n    import os\n    os._exit(0)\n", False),
    "wrong, sys.exit(0) when called": ("def add(a, b):\n    raise SystemExit(0)\n", False),
    "wrong, prints a fake pass": ("def add(a, b):\n    print('ok')\n    import sys\n    sys.exit(0)\n", False),
}


@pytest.mark.parametrize("name", CANDIDATES)
def test_the_harness_passes_only_tests_that_ran_to_the_end(name):
    candidate, should_pass = CANDIDATES[name]
    result = run_tests(candidate, "assert add(1, 2) == 3\nassert add(2, 2) == 4\n")
    assert result.ok == should_pass, result


def test_the_harness_keeps_the_candidates_output_without_the_nonce():
    result = run_tests("print('hello')\ndef f():\n    return 1\n", "assert f() == 1")
    assert result.ok and result.stdout == "hello\n"


def test_without_the_sandbox_code_is_refused_unless_unsafe_exec(monkeypatch):
    monkeypatch.setattr(sandbox, "sandbox_problem", lambda: "user namespaces are disabled")
    monkeypatch.delenv("NANOSEEK_UNSAFE_EXEC", raising=False)
    with pytest.raises(SandboxUnavailable, match="--unsafe-exec"):
        run_python("print('ran')")
    assert run_python("print('ran')", unsafe=True).stdout == "ran\n"
    monkeypatch.setenv("NANOSEEK_UNSAFE_EXEC", "1")
    assert run_tests("def f():\n    return 1\n", "assert f() == 1").ok
