"""Every command the README documents, run as written in a fresh virtual environment on a copy of the repository.

    python3 -m pytest -q tests/test_readme_commands.py     # slow: ~3-5 min (pip install, servers, a screenshot)

The venv is made with `--system-site-packages`, so `pip install -e .` (as written) finds the pinned dependencies
already installed and needs at most PyPI for the build backend; nothing else touches the network. Commands are
read from the README itself (its bash blocks and the code spans that start with nanoseek, python3, pip or bash):
each is run (servers until they answer a chat request, then SIGTERM; `nanoseek chat` with two typed lines) or
named in NOT_RUN with the reason, and a command the README gains without either fails the test. The environment
changes only what would collide with the machine's other servers and users: NANOSEEK_PORT (a free port) and HOME
(a new user's data and cache folders).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.api.conftest import free_port

REPO = Path(__file__).resolve().parents[1]
SERVERS = {
    "pip install -e . && nanoseek serve",
    "nanoseek serve",
    "nanoseek serve --disk-cache-gb 2",
    "nanoseek serve --dtype bfloat16",
}
RUN = {"nanoseek --help", "python3 tests/web/web_screenshot.py"}
CHAT = {"nanoseek chat"}
PART_OF_ANOTHER = {"pip install -e ."}  # run as the first half of "pip install -e . && nanoseek serve"
NOT_RUN = {
    "bash .ci/run": "the whole test suite, this test among them (the coordinator runs it)",
    "nanoseek serve --model smollm2-135m-instruct": "fetches a 100 MB model: the named-model tests cover it",
    "nanoseek convert IN OUT [--type f32|f16|bf16|q8_0]": "a synopsis with placeholders, not a command",
    "nanoseek train rl": "needs a trained run directory and an hour of CPU (tests/train runs RL on tiny models)",
    "nanoseek train sft2": "needs a trained run directory (tests/train runs the stages on tiny models)",
    "nanoseek train all --recipe smol": "post-trains a 135M model for hours (tests/train runs the LoRA stage on tiny models)",
    "nanoseek eval": "named in prose, not a command line (it needs --out; tests/eval runs it)",
    'nanoseek serve --backend vllm --model HF_FOLDER --vllm-python .venv-vllm/bin/python [--vllm-args "-tp 8"]': (
        "a synopsis with placeholders (tests/api/test_api_vllm.py serves SmolLM2 this way)"
    ),
    "bash .ci/vllm-env": "installs vLLM's CPU build (1.4 GB) in .venv-vllm: .ci/run runs it",
    "nanoseek thinking-chart": "named in prose (it needs --model and --out; tests/eval/test_thinking_chart.py runs it)",
    "nanoseek train merge-experiment": (
        "named in prose; trains three 135M models for hours (tests/train/test_merge_experiment.py runs it on a tiny base)"
    ),
}
ELIDED = "..."  # a command the README shortens with "..." is not runnable as written


def readme_commands() -> set[str]:
    text = (REPO / "README.md").read_text()
    commands = set()
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        commands |= {line.split("#")[0].strip() for line in block.splitlines() if line.split("#")[0].strip()}
    for span in re.findall(r"`((?:nanoseek|python3|pip|bash) [^`]+)`", text):
        commands.add(" ".join(span.split()))
    return commands


def test_every_readme_command_is_run_or_excused():
    unknown = {
        c
        for c in readme_commands()
        if c not in SERVERS | RUN | CHAT | PART_OF_ANOTHER | set(NOT_RUN) and ELIDED not in c
    }
    assert not unknown, f"README commands this test neither runs nor excuses: {sorted(unknown)}"


@pytest.fixture(scope="module")
def fresh(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """A copy of the repository's tracked files and a fresh venv over the system's site packages."""
    root = tmp_path_factory.mktemp("fresh")
    copy = root / "nanoseek"
    files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout.split(b"\0")
    for name in filter(None, files):
        source = REPO / name.decode()
        if source.is_file():
            (copy / name.decode()).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, copy / name.decode())
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(root / "venv")], check=True)
    # NANOSEEK_DEFAULT_MODEL dropped: a new user's `nanoseek serve` serves the shipped default, fetching its base
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "NANOSEEK_DEFAULT_MODEL")}
    env["PATH"] = f"{root / 'venv' / 'bin'}{os.pathsep}{env['PATH']}"
    env["HOME"] = str(root / "home")  # the user data and cache folders of a new user
    return copy, env


def run(command: str, cwd: Path, env: dict[str, str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True, **kwargs)


def serve_until_it_answers(command: str, cwd: Path, env: dict[str, str]) -> None:
    port = free_port()
    env = {**env, "NANOSEEK_PORT": str(port)}
    process = subprocess.Popen(
        ["bash", "-c", f"exec {command}" if "&&" not in command else command],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 600
        while True:
            assert process.poll() is None, process.stdout.read()[-3000:]
            assert time.monotonic() < deadline, f"{command} did not start"
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        body = {"model": "deepseek-chat", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 8}
        reply = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=body, timeout=120)
        assert reply.status_code == 200 and reply.json()["choices"][0]["message"]["role"] == "assistant"
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        output = process.communicate(timeout=120)[0]
    assert process.returncode in (0, -signal.SIGTERM), output[-3000:]
    assert '"POST /v1/chat/completions" 200' in output  # the access log line


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_readme_commands_run_as_written_in_a_fresh_venv(fresh):
    copy, env = fresh
    # the first command installs nanoseek into the venv; the ones after it use that install
    serve_until_it_answers("pip install -e . && nanoseek serve", copy, env)
    where = run('python3 -c "import nanoseek; print(nanoseek.__file__)"', copy, env)
    assert where.stdout.strip() == str(copy / "nanoseek" / "__init__.py")
    for command in sorted(SERVERS - {"pip install -e . && nanoseek serve"}):
        serve_until_it_answers(command, copy, env)
    chat = run("nanoseek chat", copy, env, input="Hi\n/reset\nHello\n/exit\n", timeout=300)
    assert chat.returncode == 0 and chat.stdout.strip(), chat.stderr[-3000:]
    for command in sorted(RUN):
        done = run(command, copy, env, timeout=600)
        assert done.returncode == 0, f"{command}:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    assert (copy / "docs" / "screenshot-thinking.png").stat().st_size > 10_000
