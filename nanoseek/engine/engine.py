"""The engine: continuous batching over one model in one background thread. The project's only generation loop.

    engine = Engine.from_checkpoint("path/to/checkpoint")
    [completion] = engine.generate([Request(ids, SamplingParams(max_tokens=64, temperature=0))])
    async for event in engine.stream(Request(ids, SamplingParams(stop=["\\n\\n"]))):
        print(event.text, end="")

One step of the loop (`Engine._step`), repeated while there is work, goes schedule -> run -> emit, as
vLLM v1's `EngineCore.step` does:
  0. take new requests and cancellations from the inbox (thread-safe; the server and eval submit here),
  1. schedule (scheduler.py, no torch): admit waiting requests while a slot is free and the KV budget
     (prompt + max_tokens per sample, reserved up front so an admitted request can always finish) allows,
     evicting cold prefix blocks; pick prefill chunks of admitted prompts, at most `prefill_chunk` tokens per
     step, so one long prompt delays running streams by one chunk instead of stalling them for its whole
     length (prompts of equal length that wait side by side are prefilled together in one [k, T] forward);
     then every decoding sequence, one new token each,
  2. run (runner.py): each prefill chunk and the decode batch through the model (in one C call, `native.py`,
     where that applies), giving logits,
  3. emit (emit.py): sample each row with its own parameters (and grammar), stream the text deltas out and
     retire sequences that finished.

"""

from __future__ import annotations

import asyncio
import atexit
import threading
import time
import uuid
import weakref
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import torch

from nanoseek.engine.constraint import Constraint, GrammarBackend
from nanoseek.engine.disk_cache import DiskBlockCache, model_identity
from nanoseek.engine.emit import Emitter
from nanoseek.engine.kv_cache import BLOCK_TOKENS, PrefixStore, SlotKVCache
from nanoseek.engine.native import NativeDecoder
from nanoseek.engine.params import (
    Completion,
    EngineOverloaded,
    Request,
    SampleOutput,
    SamplingParams,
    StreamEvent,
    TokenLogprob,
    Usage,
)
from nanoseek.engine.runner import ModelRunner
from nanoseek.engine.sampling import RowSampler
from nanoseek.engine.scheduler import Group, Scheduler, Sequence, Sink
from nanoseek.engine.stop import StopStringMatcher
from nanoseek.engine.thinking import ThoughtBudget
from nanoseek.model.loader import load_checkpoint
from nanoseek.tokenizer.detokenizer import IncrementalDetokenizer
from nanoseek.tokenizer.output_parser import stop_token_ids
from nanoseek.tokenizer.tokenizer import Tokenizer

_live_engines: weakref.WeakSet[Engine] = weakref.WeakSet()


def in_fresh_thread(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run fn in a new thread that ends with it, and return its result (or raise its exception).

    Why: the engine computes in its own thread, and GNU OpenMP gives every thread that runs a parallel op
    its own pool of workers. Once the threads of all pools outnumber the cores, libgomp stops letting idle
    workers spin and puts them to sleep between ops, and every small op of a decode step then pays a
    futex wake-up: with the main thread's pool alive, decode steps of 1, 4 and 16 sequences ran 1.30x,
    1.71x and 1.48x slower (benchmarks/engine_ablations.py, BENCHMARKS.md "second round"). Heavy torch work
    outside the engine (loading a checkpoint, a reference model in a benchmark) done here leaves no pool
    behind: a pool is freed when its thread exits."""
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["result"] = fn(*args, **kwargs)
        except BaseException as exc:  # handed to the caller
            outcome["error"] = exc

    thread = threading.Thread(target=target, name="nanoseek-fresh")
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]


def weakly(method: Callable[..., Any]) -> Callable[..., Any]:
    """`method`, a bound method of the engine, called through a weak reference to the engine.

    Why: the engine's parts (the emitter) call back into it, and a part holding the bound method itself would
    close a reference cycle. An engine in a cycle outlives its last user until the cyclic garbage collector
    runs, and that one counts objects, not bytes: the few hundred objects of an engine, its model, packed
    weights and KV cache (gigabytes) do not prompt it. RL builds an engine on a new merged model every step and
    leaked ~650 MB per step that way (SmolLM2-135M, OOM-killed at step 23). With no cycle, the engine and all
    it holds are freed the moment its last user drops it."""
    reference = weakref.WeakMethod(method)
    return lambda *args: reference()(*args)


@atexit.register
def _shutdown_live_engines() -> None:
    # A step thread still inside torch when the interpreter tears down aborts the process.
    for engine in list(_live_engines):
        engine.shutdown()


class Engine:
    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: Tokenizer,
        *,
        kv_budget_tokens: int = 65536,
        max_batch: int = 32,
        max_queue: int = 256,
        prefill_chunk: int = 512,
        keepalive_interval: float = 1.0,
        eos_token_ids: list[int] | None = None,
        compile_decode: bool = False,
        native_decode: bool = True,
        cache_dir: Path | None = None,
        disk_cache_bytes: int = 0,
        kv_cache_dtype: str = "auto",
    ) -> None:
        if min(kv_budget_tokens, max_batch, max_queue, prefill_chunk) < 1:
            raise ValueError("kv_budget_tokens, max_batch, max_queue and prefill_chunk must all be >= 1")
        self.tokenizer = tokenizer
        config = model.config
        self.vocab_size = config.vocab_size
        self.kv_budget_tokens = kv_budget_tokens
        self.max_batch, self.max_queue, self.prefill_chunk = max_batch, max_queue, prefill_chunk
        self.keepalive_interval = keepalive_interval
        if eos_token_ids is None:
            eos_token_ids = stop_token_ids(tokenizer, config.eos_token_id)
        self.eos_token_ids = frozenset(eos_token_ids)
        # run: the model, its slot KV cache and the fastest decode path that applies (built in the engine thread)
        self.runner = ModelRunner(
            model,
            max_batch=max_batch,
            kv_budget_tokens=kv_budget_tokens,
            compile_decode=compile_decode,
            native_decode=native_decode,
            kv_cache_dtype=kv_cache_dtype,
        )
        # the prefix store's disk tier (disk_cache.py): blocks found again after a restart
        disk = None
        if cache_dir is not None and disk_cache_bytes > 0:
            disk = DiskBlockCache(cache_dir, disk_cache_bytes, model_identity(model, self.cache.dtype))
        self.prefix_store = PrefixStore(disk)
        # schedule: queues, slots and the KV budget
        self.scheduler = Scheduler(
            max_batch=max_batch,
            kv_budget_tokens=kv_budget_tokens,
            keepalive_interval=keepalive_interval,
            prefix_space=self.prefix_store,
            move_slot=self.cache.copy,
        )
        # emit: tokens from logits, events from tokens
        self.emitter = Emitter(
            tokenizer,
            vocab_size=self.vocab_size,
            slot_capacity=self.cache.slot_capacity,
            grammar_backend=weakly(self._grammar_backend),
            retire=weakly(self._retire),
        )
        self._grammar: GrammarBackend | None = None  # built on the first constrained request
        self._grammar_lock = threading.Lock()

        # Shared with submitting threads, guarded by _lock.
        self._lock = threading.Condition()
        self._inbox: list[Group] = []
        self._cancels: list[str] = []
        self._queued = 0  # inbox + waiting
        self._in_flight: dict[str, Group] = {}
        self._shutdown = False
        # Owned by the engine thread.
        self.counters = {"steps": 0, "decode_tokens": 0, "prefill_tokens": 0, "cached_tokens": 0, "requests": 0}
        self._threads = torch.get_num_threads()  # the engine thread's own OpenMP pool gets as many
        self._ready = threading.Event()
        self._setup_error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="nanoseek-engine", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._setup_error is not None:
            raise self._setup_error
        _live_engines.add(self)

    # The runner's parts, read by callers and tests.
    @property
    def model(self) -> torch.nn.Module:
        return self.runner.model

    @property
    def cache(self) -> SlotKVCache:
        return self.runner.cache

    @property
    def native(self) -> NativeDecoder | None:
        return self.runner.native

    @property
    def packed_weights(self) -> bool:
        return self.runner.packed_weights

    @property
    def decode_path(self) -> str:
        """Which step decodes: "native C step, <its kernels>", "PyTorch model" or "compiled PyTorch model"."""
        return self.runner.decode_path

    @property
    def native_unavailable(self) -> str | None:
        """Why the native step does not decode, when it was asked for and does not."""
        return self.runner.native_unavailable

    @classmethod
    def from_checkpoint(cls, path: str, *, dtype: str | None = None, **kwargs: Any) -> Engine:

        checkpoint = in_fresh_thread(load_checkpoint, path, dtype=dtype)
        eos = checkpoint.generation_config.get("eos_token_id")
        if eos is not None and "eos_token_ids" not in kwargs:  # generation_config.json's stop ids win
            kwargs["eos_token_ids"] = stop_token_ids(checkpoint.tokenizer, eos)
        return cls(checkpoint.model, checkpoint.tokenizer, **kwargs)

    # ---- public API (any thread) ----------------------------------------------------------------------

    def generate(self, requests: list[Request]) -> list[Completion]:
        """Run requests to completion (batched together) and return one Completion per request, in order.
        Not bounded by max_queue: in-process callers (eval, RL) wait anyway."""
        collectors = [_Collector(request.params.n) for request in requests]
        groups = [self._prepare(request, collector.sink) for request, collector in zip(requests, collectors)]
        for group in groups:
            self._enqueue(group, enforce_queue_limit=False)
        try:
            for collector in collectors:
                collector.done.wait()
        except BaseException:
            for group in groups:
                self.cancel(group.request_id)
            raise
        if self._shutdown and any("cancelled" in c.finish for c in collectors):
            raise RuntimeError("the engine was shut down before these requests finished")
        return [collector.result(group) for collector, group in zip(collectors, groups)]

    def warm_up(self) -> float:
        """Decode a few tokens alone, then in batches of sequences at equal and at different lengths, so that
        the compiled decode graphs (compile_decode) are built before the first real request rather than
        during it; returns the seconds it took."""
        started = time.perf_counter()
        filler = next(i for i in range(self.vocab_size) if i not in self.eos_token_ids)
        params = SamplingParams(max_tokens=4, temperature=0.0, ignore_eos=True)
        for lengths in ([3], [3, 3], [3, 5]):
            self.generate([Request([filler] * length, params) for length in lengths])
        return time.perf_counter() - started

    def stream(self, request: Request) -> AsyncIterator[StreamEvent]:
        """Submit now (raising ValueError or EngineOverloaded at once) and return an async iterator of
        events; call from inside a running event loop. Closing the iterator early cancels the request."""
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[StreamEvent | BaseException] = asyncio.Queue()
        cancel = weakly(self.cancel)  # the group holds its sink: neither may hold the group or the engine

        def sink(item: StreamEvent | BaseException) -> None:
            try:
                loop.call_soon_threadsafe(events.put_nowait, item)
            except RuntimeError:  # the loop is closed: nobody is listening any more
                cancel(request_id)

        group = self._prepare(request, sink)
        request_id = group.request_id
        self._enqueue(group, enforce_queue_limit=True)
        return self._iterate(group, events)

    async def _iterate(self, group: Group, events: asyncio.Queue) -> AsyncIterator[StreamEvent]:
        unfinished = group.params.n
        try:
            while unfinished:
                item = await events.get()
                if isinstance(item, BaseException):
                    unfinished = 0
                    raise item
                if item.finish_reason is not None:
                    unfinished -= 1
                yield item
        finally:
            if unfinished:
                self.cancel(group.request_id)

    def cancel(self, request_id: str) -> None:
        with self._lock:
            self._cancels.append(request_id)
            self._lock.notify()

    def stats(self) -> dict[str, Any]:
        with self._lock:
            queued = self._queued
        return {
            "waiting": queued,
            "running": self.scheduler.slots_used,
            "max_batch": self.max_batch,
            "kv_budget_tokens": self.kv_budget_tokens,
            "kv_reserved_tokens": self.scheduler.reserved,
            "prefix_cache_tokens": self.prefix_store.num_tokens,
            "disk_cache_bytes": self.prefix_store.disk.total_bytes if self.prefix_store.disk else 0,
            "kv_bytes_per_token": self.cache.bytes_per_token,
            **self.counters,
        }

    def shutdown(self) -> None:
        with self._lock:
            self._shutdown = True
            self._lock.notify()
        self._thread.join()
        if self.prefix_store.disk is not None:
            self.prefix_store.disk.close()  # the blocks still queued reach the disk before a restart

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    # ---- submission ------------------------------------------------------------------------------------

    def _prepare(self, request: Request, sink: Sink) -> Group:
        prompt, params = list(request.prompt_ids), request.params
        if not isinstance(params, SamplingParams):
            raise TypeError(f"request.params must be SamplingParams, got {type(params).__name__}")
        if not prompt:
            raise ValueError("prompt_ids is empty: the model needs at least one token to condition on")
        bad = [t for t in prompt if not isinstance(t, int) or not 0 <= t < self.vocab_size]
        if bad:
            raise ValueError(
                f"prompt_ids holds {len(bad)} id(s) outside the vocabulary [0, {self.vocab_size}), e.g. {bad[0]!r}"
            )
        banned_outside = [t for t in params.banned_token_ids if t >= self.vocab_size]
        if banned_outside:
            raise ValueError(
                f"banned_token_ids holds id(s) outside the vocabulary [0, {self.vocab_size}), e.g. {banned_outside[0]}"
            )
        capacity = self.cache.slot_capacity
        if len(prompt) >= capacity:
            raise ValueError(
                f"prompt has {len(prompt)} tokens; this engine holds at most {capacity - 1} "
                f"prompt tokens per sequence (context {capacity})"
            )
        if params.n > self.max_batch:
            raise ValueError(f"n={params.n} samples exceed the engine's max_batch={self.max_batch}")
        reserve = min(len(prompt) + params.max_tokens, capacity)
        if reserve * params.n > self.kv_budget_tokens:
            raise ValueError(
                f"request needs {reserve * params.n} KV-cache tokens ((prompt + max_tokens) x n) but "
                f"the engine's kv_budget_tokens is {self.kv_budget_tokens}: lower max_tokens or n"
            )
        stop_ids = frozenset(params.stop_token_ids) | (frozenset() if params.ignore_eos else self.eos_token_ids)
        request_id = request.request_id or f"req-{uuid.uuid4().hex}"
        return Group(request_id, prompt, params, sink, stop_ids, reserve, request.cache_salt)

    def _enqueue(self, group: Group, *, enforce_queue_limit: bool) -> None:
        with self._lock:
            if self._shutdown:
                raise RuntimeError("the engine has been shut down")
            if group.request_id in self._in_flight:
                raise ValueError(f"request_id {group.request_id!r} is already in flight")
            if enforce_queue_limit and self._queued >= self.max_queue:
                raise EngineOverloaded(f"{self._queued} requests are already waiting (max_queue={self.max_queue})")
            self._queued += 1
            self._in_flight[group.request_id] = group
            self._inbox.append(group)
            self._lock.notify()

    # ---- the engine thread: schedule -> run -> emit ------------------------------------------------------

    def _run(self) -> None:
        # no_grad, not inference_mode: tensors the model caches while we run (its rotary table) must stay
        # usable by training code that shares the model (RL), and inference tensors are not.
        with torch.no_grad():
            try:
                torch.set_num_threads(self._threads)  # see in_fresh_thread: this thread's pool does the work
                self.runner.setup()
            except BaseException as exc:
                self._setup_error = exc
                return
            finally:
                self._ready.set()
            while True:
                with self._lock:
                    while not (self._inbox or self._cancels or self._shutdown or self.scheduler.has_work):
                        self._lock.wait()
                    if self._shutdown:
                        break
                    inbox, self._inbox = self._inbox, []
                    cancels, self._cancels = self._cancels, []
                self.scheduler.waiting.extend(inbox)
                for request_id in cancels:
                    self._cancel(request_id)
                try:
                    self._step()
                except Exception as exc:  # a failed forward must not kill the loop: fail its requests
                    self._fail_everything(exc)
            self._cancel_everything()

    def _step(self) -> None:
        """One step: admit what fits, prefill up to `prefill_chunk` prompt tokens, decode every running
        sequence one token; the tokens sampled from each forward are emitted as soon as it returns."""
        now = time.monotonic()
        for group in self.scheduler.admissible():
            with self._lock:
                self._queued -= 1
            self._start(group)
        for group in self.scheduler.due_notice(now):
            group.sink(StreamEvent(queued=True))
        budget = self.prefill_chunk
        while budget > 0 and self.scheduler.prefilling:
            native_rows = self.runner.native_rows()
            # A quantized model's PyTorch forward dequantizes every weight per call, so its prompts all go
            # through the native step, native_rows tokens at a time (BENCHMARKS.md, "quantized weights"); so do
            # the prompts that decoder finds too short for the forward (an MLA + MoE model's, native_latent.py).
            head = self.scheduler.prefilling[0]
            stepwise = native_rows and (
                self.runner.native.quantized
                or len(head.prompt_ids) - head.prefill_position <= self.runner.native.short_prompt_steps * native_rows
            )
            chunk = self.scheduler.next_prefill(min(budget, native_rows) if stepwise else budget, native_rows)
            logits = self.runner.prefill(chunk)
            budget -= chunk.tokens
            self.counters["prefill_tokens"] += chunk.tokens
            for row, group in enumerate(self.scheduler.prefilled(chunk)):
                # Read the slot now: finishing an earlier group of the batch may have moved this one.
                self.prefix_store.insert(
                    group.prompt_ids, self.cache, group.sequences[0].slot, logits[row], group.cache_salt
                )
                self._finish_prefill(group, logits[row])
        decoding = self.scheduler.decoding()
        if decoding:
            logits = self.runner.decode(
                [s.next_token for s in decoding], [s.length for s in decoding], [s.slot for s in decoding]
            )
            for sequence in decoding:
                sequence.length += 1
            self.counters["decode_tokens"] += len(decoding)
            self.emitter.emit(decoding, logits)
        self.counters["steps"] += 1

    def _start(self, group: Group) -> None:
        """Run an admitted request: its grammar matchers, its slots, and its prompt's cached prefix."""
        params = group.params
        try:
            matchers = [
                self._grammar_backend().matcher(params.constraint, sorted(group.stop_ids))
                if params.constraint is not None
                else None
                for _ in range(params.n)
            ]
        except Exception as exc:  # a grammar xgrammar cannot compile fails its own request, not the batch
            with self._lock:
                self._in_flight.pop(group.request_id, None)
            group.sink(ValueError(f"cannot compile the constraint: {exc}"))
            return
        self.counters["requests"] += 1
        sequences = [
            Sequence(
                group,
                index,
                RowSampler(params, index, self.vocab_size),
                IncrementalDetokenizer(self.tokenizer),
                StopStringMatcher(params.stop),
                matcher,
                constraint_active=matcher is not None and params.constraint_after_token is None,
                thought=ThoughtBudget(params) if ThoughtBudget.applies(params) else None,
            )
            for index, matcher in enumerate(matchers)
        ]
        self.scheduler.place(group, sequences)
        blocks, last_logits = self.prefix_store.lookup(group.prompt_ids, group.cache_salt)
        if len(blocks) * BLOCK_TOKENS == len(group.prompt_ids) and last_logits is None:
            blocks = blocks[:-1]  # the last position must be computed to get its logits
        first = group.sequences[0]
        if blocks:
            self.cache.write_blocks(first.slot, blocks)
        group.cached_tokens = group.prefill_position = first.length = len(blocks) * BLOCK_TOKENS
        self.counters["cached_tokens"] += group.cached_tokens
        if last_logits is not None:
            self._finish_prefill(group, last_logits)
        else:
            self.scheduler.prefilling.append(group)

    def prepare_constraint(self, constraint: Constraint) -> None:
        """Compile `constraint` now, in the calling thread (the server's planning threads), so the engine thread
        finds it in the compiler's cache instead of stalling every running request while it compiles."""
        self._grammar_backend().compile(constraint)

    def prepare_grammars(self) -> float:
        """Build the grammar tables (xgrammar's view of the vocabulary) and compile the JSON-object grammar now,
        before serving; returns the seconds it took. On SmolLM2's 49k tokens the tables are most of a first
        grammar's cost (0.45 of 0.5 s quiet), which a loaded machine can stretch past the planning limit, and a
        request whose grammar overran that limit is refused."""
        started = time.perf_counter()
        self.prepare_constraint(Constraint.json_object())
        return time.perf_counter() - started

    @property
    def grammars_ready(self) -> bool:
        """The grammar tables are built (`prepare_grammars`, or a first grammar): /health's `grammars_ready`."""
        return self._grammar is not None

    def _grammar_backend(self) -> GrammarBackend:
        with self._grammar_lock:  # the engine thread and planning threads may both build it
            if self._grammar is None:
                # xgrammar needs at least one stop token; a vocabulary without EOS gets a placeholder
                # (each matcher is then given its request's own stop tokens anyway).
                stop_ids = sorted(self.eos_token_ids) or [self.vocab_size - 1]
                self._grammar = GrammarBackend(self.tokenizer, self.vocab_size, stop_ids, self.max_batch)
            return self._grammar

    def _finish_prefill(self, group: Group, logits: torch.Tensor) -> None:
        """The prompt is in the cache: copy it to the other samples' slots and emit each one's first token."""
        first = group.sequences[0]
        prompt_length = len(group.prompt_ids)
        for sequence in group.sequences[1:]:
            self.cache.copy(first.slot, sequence.slot, prompt_length)
            sequence.length = prompt_length
        self.scheduler.make_room_in_prefix_space()
        self.emitter.emit(group.sequences, logits.unsqueeze(0).repeat(len(group.sequences), 1))

    # ---- retiring ------------------------------------------------------------------------------------

    def _retire(self, sequence: Sequence) -> Usage | None:
        """Free the sequence's slot and reservation; the group's usage once its last sequence is done."""
        group = sequence.group
        if not self.scheduler.retire(sequence):
            return None
        with self._lock:
            self._in_flight.pop(group.request_id, None)
        return Usage(
            prompt_tokens=len(group.prompt_ids),
            cached_tokens=group.cached_tokens,
            completion_tokens=sum(len(s.tokens) for s in group.sequences),
        )

    def _cancel(self, request_id: str) -> None:
        group = self.scheduler.find(request_id)
        if group is not None:  # else it already finished
            self._cancel_group(group)

    def _cancel_group(self, group: Group) -> None:
        """End every unfinished sample of `group` with finish_reason "cancelled", freeing what it holds."""
        if self.scheduler.withdraw(group):  # it was still waiting
            with self._lock:
                self._queued -= 1
                self._in_flight.pop(group.request_id, None)
            for index in range(group.params.n):
                last = index == group.params.n - 1
                group.sink(
                    StreamEvent(
                        index=index,
                        finish_reason="cancelled",
                        usage=Usage(len(group.prompt_ids), 0, 0) if last else None,
                    )
                )
            return
        for sequence in group.sequences:
            if not sequence.finished:
                event = StreamEvent(index=sequence.index, finish_reason="cancelled")
                event.usage = self._retire(sequence)
                group.sink(event)

    def _cancel_everything(self) -> None:
        """Shutdown: every request still queued or running ends as "cancelled"."""
        with self._lock:
            self.scheduler.waiting.extend(self._inbox)
            self._inbox = []
        for group in list(self.scheduler.waiting) + self.scheduler.running_groups():
            self._cancel_group(group)

    def _fail_everything(self, error: BaseException) -> None:
        with self._lock:
            inbox, self._inbox, self._queued = self._inbox, [], 0
            self._in_flight.clear()
        for group in self.scheduler.clear() + inbox:
            group.sink(error)


class _Collector:
    """Gathers a request's events for the blocking `generate`."""

    def __init__(self, n: int) -> None:
        self.texts = [[] for _ in range(n)]
        self.tokens: list[list[int]] = [[] for _ in range(n)]
        self.logprobs: list[list[TokenLogprob]] = [[] for _ in range(n)]
        self.finish: list[str | None] = [None] * n
        self.usage: Usage | None = None
        self.error: BaseException | None = None
        self.done = threading.Event()

    def sink(self, item: StreamEvent | BaseException) -> None:
        if isinstance(item, BaseException):
            self.error = item
            self.done.set()
            return
        if item.queued:
            return
        self.texts[item.index].append(item.text)
        self.tokens[item.index].extend(item.token_ids)
        if item.logprobs:
            self.logprobs[item.index].extend(item.logprobs)
        if item.finish_reason is not None:
            self.finish[item.index] = item.finish_reason
        if item.usage is not None:
            self.usage = item.usage
            self.done.set()

    def result(self, group: Group) -> Completion:
        if self.error is not None:
            raise self.error
        outputs = [
            SampleOutput(
                i,
                "".join(self.texts[i]),
                self.tokens[i],
                self.logprobs[i] if group.params.logprobs else None,
                self.finish[i] or "cancelled",
            )
            for i in range(len(self.texts))
        ]
        return Completion(group.request_id, outputs, self.usage)
