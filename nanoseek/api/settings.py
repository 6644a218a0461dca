"""Server settings: one dataclass filled from `nanoseek serve` flags and `NANOSEEK_*` environment variables.

Flags win over environment variables, which win over the defaults below. Every field can be set from the
environment by upper-casing its name: `NANOSEEK_PORT=9000`, `NANOSEEK_API_KEYS_FILE=keys.txt`,
`NANOSEEK_API_KEYS=key1,key2`, `NANOSEEK_MAX_BODY_BYTES=...`.

`NANOSEEK_MODEL_MAP=deepseek-reasoner=/ckpt/r1` (or `--serve-model NAME=PATH`, repeatable) puts another
checkpoint behind a public model name; every other name reaches `--model`.

The API keys file has one key per line; `#` at the start of a line or after a space starts a comment (a `#`
inside a key is part of it); optional fields after the key set a token quota and a request rate (at least 1)
for that key:

    sk-alice                      # unlimited
    sk-bob   quota=200000 rpm=60  # 200k tokens in all, at most 60 requests a minute
"""

from __future__ import annotations

import dataclasses
import hashlib
import ipaddress
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import platformdirs

from nanoseek.model.config import KV_CACHE_DTYPES, QUANTIZED_DTYPES, SUPPORTED_DTYPES

# auto: as the checkpoint stores its weights; q8_0 / q4_1: projections quantized at load (model/quantized.py)
DTYPE_CHOICES = ("auto", *SUPPORTED_DTYPES, *QUANTIZED_DTYPES)

# DeepSeek's public model names (docs/API.md, checked 2026-12-06), each -> whether it thinks by default. The seed
# era's names keep their modes; since V4 (2026-04-24) thinking is on by default.
SERVED_MODEL_NAMES = {
    "deepseek-chat": False,
    "deepseek-coder": False,
    "deepseek-reasoner": True,
    "deepseek-v4-flash": True,
    "deepseek-v4-pro": True,
    "deepseek-flash": True,
}


class SettingsError(ValueError):
    """A setting has a value nanoseek cannot use; the message names the setting."""


@dataclass
class KeyPolicy:
    """What one API key may do: a token quota (None = unlimited) and a request rate (None = unlimited)."""

    key: str
    quota_tokens: int | None = None
    requests_per_minute: int | None = None

    @property
    def owner(self) -> str:
        """Who the key's data belongs to (conversations, cached prompt prefixes): a hash of the key, so the key
        itself is never stored; "" for the no-key server's one anonymous owner."""
        return hashlib.sha256(self.key.encode()).hexdigest() if self.key else ""


@dataclass
class Settings:
    model: Path | None = None  # None: the embedded default model
    # other checkpoints behind particular public names, e.g. {"deepseek-reasoner": Path("r1-ckpt")};
    # names not listed here are served by `model`
    model_map: dict[str, Path] = field(default_factory=dict)
    host: str = "127.0.0.1"
    # names the Host header may carry besides loopback ones and `host` (e.g. a reverse proxy's public name)
    allowed_hosts: list[str] = field(default_factory=list)
    port: int = 8000
    api_keys_file: Path | None = None
    api_keys: list[KeyPolicy] = field(default_factory=list)
    requests_per_minute: int | None = None  # per key (or per client address when no keys are configured)
    max_body_bytes: int = 4 * 1024 * 1024
    body_seconds: float = 30.0  # a request body must arrive within this long (408 otherwise)
    max_tokens_default: int = 4096  # when a request gives no max_tokens
    max_tokens_limit: int = 8192  # the largest max_tokens a request may ask for
    keepalive_seconds: float = 5.0  # period of `: keep-alive` comments while a request waits
    plan_seconds: float = 5.0  # longest a request's rendering and tokenizing may take (then 503)
    # longest a request waits for its grammar (api/planning.py): then a 400, or for auto's lazy tool grammar the
    # request is served without it, saying so
    grammar_seconds: float = 60.0
    # share cached prompt prefixes across API keys (faster for common system prompts, but a key can then tell
    # from prompt_cache_hit_tokens what other keys' prompts begin with); off: each key has its own
    share_prefix_cache: bool = False
    # engine sizing: a bounded queue is what turns overload into 503 instead of unbounded latency
    max_batch: int = 16
    max_queue: int = 256
    kv_budget_tokens: int = 65536
    # the prefix cache's disk tier (engine/disk_cache.py): off unless disk_cache_gb > 0
    cache_dir: Path = field(default_factory=lambda: Path(platformdirs.user_cache_dir("nanoseek")) / "prefix-cache")
    disk_cache_gb: float = 0.0
    prefill_chunk: int = 512
    dtype: str = "auto"  # weights in memory: auto (the checkpoint's) | float32 | bfloat16 | float16 | q8_0 | q4_1
    kv_cache_dtype: str = "auto"  # what the KV cache stores: auto (the weights' dtype) | float32 | bfloat16 | float16
    native_decode: bool = True  # decode steps of fp32 models in one C call (engine/native.py)
    compile_decode: bool = False  # torch.compile the decode steps the native path does not serve
    # the engine behind the API: "native" (nanoseek's own), or "vllm": vLLM's OpenAI-compatible server, started
    # by nanoseek with `vllm_python` (an interpreter that has vLLM; `vllm_args` passed to it, e.g. "-tp 2"), or
    # already running at `backend_url` (vLLM or SGLang, serving the same checkpoint as --model)
    backend: str = "native"
    backend_url: str | None = None
    vllm_python: str | None = None
    vllm_args: str = ""
    # how the model's output is parsed: "auto" reads the checkpoint's chat template
    tool_parser: str = "auto"  # auto | deepseek | deepseek_v3 | hermes
    reasoning_parser: str = "auto"  # auto | deepseek (<think>…</think>) | none
    db_path: Path = field(default_factory=lambda: Path(platformdirs.user_data_dir("nanoseek")) / "web.sqlite3")
    web: bool = True
    # the web chat's conversation store, per API key (the no-key server's one owner alike)
    store_requests_per_minute: int = 1200
    store_conversations_per_key: int = 10_000
    store_chars_per_key: int = 50_000_000
    log_level: str = "info"

    def validate(self) -> Settings:
        if not (0 < self.port < 65536):
            raise SettingsError(f"port must be in 1..65535, got {self.port}")
        if self.tool_parser not in ("auto", "deepseek", "deepseek_v3", "hermes"):
            raise SettingsError(f"tool_parser must be auto, deepseek, deepseek_v3 or hermes, got {self.tool_parser!r}")
        if self.reasoning_parser not in ("auto", "deepseek", "none"):
            raise SettingsError(f"reasoning_parser must be auto, deepseek or none, got {self.reasoning_parser!r}")
        if self.dtype not in DTYPE_CHOICES:
            raise SettingsError(f"dtype must be one of {', '.join(DTYPE_CHOICES)}, got {self.dtype!r}")
        if self.kv_cache_dtype not in KV_CACHE_DTYPES:
            raise SettingsError(
                f"kv_cache_dtype must be one of {', '.join(KV_CACHE_DTYPES)}, got {self.kv_cache_dtype!r}"
            )
        if self.backend_url is not None:
            self.backend = "vllm"  # a server to connect to is a remote backend whatever --backend said
        if self.backend not in ("native", "vllm"):
            raise SettingsError(f"backend must be native or vllm, got {self.backend!r}")
        if self.backend == "vllm" and self.dtype not in ("auto", "float32", "bfloat16", "float16"):
            raise SettingsError(f"the vllm backend loads float32, bfloat16 or float16 weights, not {self.dtype}")
        if self.backend == "vllm" and self.kv_cache_dtype != "auto":
            raise SettingsError("kv_cache_dtype is the native engine's setting (vLLM's own: --vllm-args)")
        if self.backend == "vllm" and self.disk_cache_gb > 0:
            raise SettingsError("the disk tier of the prefix cache (disk_cache_gb) is the native engine's, not vLLM's")
        if not self.disk_cache_gb >= 0:
            raise SettingsError(f"disk_cache_gb must be >= 0, got {self.disk_cache_gb}")
        if self.requests_per_minute is not None and self.requests_per_minute < 1:
            raise SettingsError(
                f"requests_per_minute must be at least 1 (leave it unset for no limit), got {self.requests_per_minute}"
            )
        if self.max_body_bytes < 1024:
            raise SettingsError(f"max_body_bytes must be at least 1024, got {self.max_body_bytes}")
        if self.api_keys_file is not None:
            self.api_keys = self.api_keys + read_api_keys_file(self.api_keys_file)
        if not is_loopback(self.host) and not self.api_keys:
            raise SettingsError(
                f"refusing to bind {self.host}: it is reachable from other machines and no API keys are "
                "configured, so anyone could use this server. Pass --api-keys FILE (or NANOSEEK_API_KEYS), "
                "or bind 127.0.0.1."
            )
        return self

    @property
    def keys_by_value(self) -> dict[str, KeyPolicy]:
        return {policy.key: policy for policy in self.api_keys}


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_key_line(line: str, where: str) -> KeyPolicy | None:
    # a comment starts with a `#` at the start of the line or after whitespace: a `#` inside a key is the key's
    line = re.split(r"(?:^|\s)#", line, maxsplit=1)[0].strip()
    if not line:
        return None
    key, *options = line.split()
    policy = KeyPolicy(key=key)
    for option in options:
        name, _, value = option.partition("=")
        if name not in ("quota", "rpm") or not value.isdigit():
            raise SettingsError(f"{where}: unknown key option {option!r} (expected quota=N or rpm=N)")
        if name == "quota":
            policy.quota_tokens = int(value)
        elif int(value) == 0:
            raise SettingsError(f"{where}: rpm=0 would refuse every request; leave rpm out for no limit")
        else:
            policy.requests_per_minute = int(value)
    return policy


def parse_model_map(items: list[str], where: str) -> dict[str, Path]:
    """`NAME=PATH` items (flag values or a comma-separated variable) -> {name: checkpoint path}."""
    mapping = {}
    for item in (i.strip() for i in items):
        if not item:
            continue
        name, sep, path = item.partition("=")
        if not sep or not name.strip() or not path.strip():
            raise SettingsError(f"{where}: expected NAME=PATH, got {item!r}")
        mapping[name.strip()] = Path(path.strip())
    return mapping


def read_api_keys_file(path: Path) -> list[KeyPolicy]:
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise SettingsError(f"cannot read the API keys file {path}: {exc.strerror}") from None
    policies = [p for i, line in enumerate(lines, 1) if (p := parse_key_line(line, f"{path}:{i}"))]
    if not policies:
        raise SettingsError(f"the API keys file {path} holds no keys")
    return policies


def _coerce(value: str, annotation: Any, name: str) -> Any:
    text = str(annotation)
    try:
        if "bool" in text:
            if value.lower() not in ("1", "0", "true", "false", "yes", "no"):
                raise ValueError(value)
            return value.lower() in ("1", "true", "yes")
        if "int" in text and "None" in text:
            return None if value.lower() in ("", "none") else int(value)
        if text == "int":
            return int(value)
        if text == "float":
            return float(value)
        if "Path" in text:
            return Path(value) if value else None
    except ValueError:
        raise SettingsError(f"NANOSEEK_{name.upper()}={value!r} is not a valid {text}") from None
    return value


def settings_from_env(environ: dict[str, str] | None = None, **overrides: Any) -> Settings:
    """Defaults, then NANOSEEK_* variables, then explicit overrides (the CLI flags that were given)."""
    environ = dict(os.environ if environ is None else environ)
    values: dict[str, Any] = {}
    for f in dataclasses.fields(Settings):
        env_name = f"NANOSEEK_{f.name.upper()}"
        if f.name == "model_map":
            values["model_map"] = parse_model_map(environ.get(env_name, "").split(","), env_name)
        elif f.name == "allowed_hosts":
            values["allowed_hosts"] = [h.strip() for h in environ.get(env_name, "").split(",") if h.strip()]
        elif f.name == "api_keys":
            raw = environ.get(env_name, "")
            values["api_keys"] = [p for item in raw.split(",") if (p := parse_key_line(item, env_name))]
        elif env_name in environ:
            values[f.name] = _coerce(environ[env_name], f.type, f.name)
    values.update({k: v for k, v in overrides.items() if v is not None})
    return Settings(**values).validate()
