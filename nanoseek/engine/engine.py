"""The engine: continuous batching over one model in one background thread. The project's only generation loop.

    engine = Engine.from_checkpoint("path/to/checkpoint")
    [completion] = engine.generate([Request(ids, SamplingParams(max_tokens=64, temperature=0))])
    async for event in engine.stream(Request(ids, SamplingParams(stop=["\\n\\n"]))):
        print(event.text, end="")

One step of the loop, repeated while there is work:
  1. take new requests and cancellations from the inbox (thread-safe; the server and eval submit here),
  2. admit waiting requests while a slot is free and the KV budget (prompt + max_tokens per sample,
     reserved up front so an admitted request can always finish) allows, evicting cold prefix blocks,
  3. run prefill chunks of admitted prompts, at most `prefill_chunk` tokens per step, so one long prompt
     delays running streams by one chunk instead of stalling them for its whole length; prompts of equal
     length that wait side by side are prefilled together in one [k, T] forward,
  4. run one batched forward of one new token for every decoding sequence (in one C call, `native.py`, where
     that applies), sample each row with its own parameters (and grammar), stream the text deltas out and
     retire sequences that finished.

A request with n > 1 samples is prefilled once; its KV is copied to n slots and its first tokens are
drawn from the shared last-position logits. Requests wait in a bounded queue (`EngineOverloaded` when it
is full) and get `queued` events every `keepalive_interval` seconds while waiting. Cancelling (or closing
the async iterator) frees the sequence's slot and reservation at the next step boundary.
"""

from __future__ import annotations

import asyncio
import atexit
import itertools
import logging
import threading
import time
import uuid
import weakref
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from nanoseek.engine.constraint import GrammarBackend, allowed_token_ids
from nanoseek.engine.disk_cache import DiskBlockCache, model_identity
from nanoseek.engine.kv_cache import BLOCK_TOKENS, PrefixStore
from nanoseek.engine.latent_cache import kv_cache_for
from nanoseek.engine.native import NativeDecoder
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
from nanoseek.engine.sampling import RowSampler, sample_next
from nanoseek.engine.stop import StopStringMatcher
from nanoseek.engine.thinking import ThoughtBudget
from nanoseek.tokenizer.detokenizer import IncrementalDetokenizer
from nanoseek.tokenizer.output_parser import stop_token_ids
from nanoseek.tokenizer.tokenizer import Tokenizer

log = logging.getLogger(__name__)

Sink = Callable[[StreamEvent | BaseException], None]

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


@atexit.register
def _shutdown_live_engines() -> None:
    # A step thread still inside torch when the interpreter tears down aborts the process.
    for engine in list(_live_engines):
        engine.shutdown()


@dataclass(eq=False)
class _Group:
    """One request: its prompt, its n sequences and where its events go."""

    request_id: str
    prompt_ids: list[int]
    params: SamplingParams
    sink: Sink
    stop_ids: frozenset[int]
    reserve_per_sequence: int
    sequences: list[_Sequence] = field(default_factory=list)
    prefill_position: int = 0
    cached_tokens: int = 0
    unfinished: int = 0
    last_notice: float = 0.0

    @property
    def reserved(self) -> int:
        return self.reserve_per_sequence * self.params.n


@dataclass(eq=False)
class _Sequence:
    """One sample of a request, living in one cache slot."""

    group: _Group
    index: int
    slot: int
    sampler: RowSampler
    detokenizer: IncrementalDetokenizer
    stop_matcher: StopStringMatcher
    matcher: Any = None  # xgrammar.GrammarMatcher, when the request has a constraint
    constraint_active: bool = False
    grammar_dead_end: bool = False  # the grammar accepted no token at all (see _enforce_grammar)
    thought: ThoughtBudget | None = None  # the request bounds the thought its output starts with
    length: int = 0  # tokens whose KV is in the slot
    next_token: int = -1  # sampled, not yet fed to the model
    decoding: bool = False
    finished: bool = False
    tokens: list[int] = field(default_factory=list)


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
    ) -> None:
        if min(kv_budget_tokens, max_batch, max_queue, prefill_chunk) < 1:
            raise ValueError("kv_budget_tokens, max_batch, max_queue and prefill_chunk must all be >= 1")
        self.model = model.eval()
        self.tokenizer = tokenizer
        config = model.config
        self.vocab_size = config.vocab_size
        self.kv_budget_tokens = kv_budget_tokens
        self.max_batch, self.max_queue, self.prefill_chunk = max_batch, max_queue, prefill_chunk
        self.keepalive_interval = keepalive_interval
        if eos_token_ids is None:
            eos_token_ids = stop_token_ids(tokenizer, config.eos_token_id)
        self.eos_token_ids = frozenset(eos_token_ids)
        # MLA models (DeepSeek-V2/V3) cache compressed latents instead of keys and values (latent_cache.py).
        self.cache = kv_cache_for(config, max_batch, min(config.max_position_embeddings, kv_budget_tokens), model.dtype)
        # the prefix store's disk tier (disk_cache.py): blocks found again after a restart
        disk = None
        if cache_dir is not None and disk_cache_bytes > 0:
            disk = DiskBlockCache(cache_dir, disk_cache_bytes, model_identity(model))
        self.prefix_store = PrefixStore(disk)
        # A decode step of a small model is mostly per-op overhead: torch.compile (inductor, C++ wrapper) fuses
        # the elementwise ops and calls the rest from C++, and with `freezing` it folds the weights in as
        # constants. On the default model (BENCHMARKS.md "third round") it decoded 1.8x the tokens/s of eager at
        # batch 1 and at 16 concurrent requests. Shapes are dynamic, so a handful of graphs (batch 1 / batched,
        # lengths equal or not) serve every step; prefill stays eager (compute-bound). Frozen weights are copies taken at compile time, so a step falls back to the
        # eager model once any parameter changes (`_weights_unchanged`: RL training the served model).
        # Compiling costs ~15-140 s (less from inductor's on-disk cache): opt-in, and `warm_up()` pays it
        # before traffic arrives.
        self.compile_decode = compile_decode
        self._decode_model = self.model
        self._weight_versions: list[tuple[torch.Tensor, int]] = []
        if compile_decode:
            self._decode_model = torch.compile(
                self.model, dynamic=True, options={"cpp_wrapper": True, "freezing": True}
            )
        # Faster still where it applies (fp32 nanoseek Transformer on the CPU, a C compiler on the machine):
        # the whole decode step in one C call (native.py, native_decode.c; BENCHMARKS.md "fourth round").
        # It takes precedence over the compiled step; the model (compiled or not) decodes what it does not.
        # Built in the engine thread (`_setup_in_engine_thread`).
        self.native_decode = native_decode
        self.native: NativeDecoder | None = None
        self._grammar: GrammarBackend | None = None  # built on the first constrained request
        self._token_text: dict[int, tuple[str, list[int]]] = {}

        # Shared with submitting threads, guarded by _lock.
        self._lock = threading.Condition()
        self._inbox: list[_Group] = []
        self._cancels: list[str] = []
        self._queued = 0  # inbox + waiting
        self._in_flight: dict[str, _Group] = {}
        self._shutdown = False
        # Owned by the engine thread.
        self._waiting: deque[_Group] = deque()
        self._prefilling: deque[_Group] = deque()
        self._slot_owner: list[_Sequence | None] = [None] * max_batch
        self._slots_used = 0
        self._reserved = 0
        self.counters = {"steps": 0, "decode_tokens": 0, "prefill_tokens": 0, "cached_tokens": 0, "requests": 0}
        self.packed_weights = False
        self._threads = torch.get_num_threads()  # the engine thread's own OpenMP pool gets as many
        self._ready = threading.Event()
        self._setup_error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="nanoseek-engine", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._setup_error is not None:
            raise self._setup_error
        _live_engines.add(self)

    @classmethod
    def from_checkpoint(cls, path: str, *, dtype: str | None = None, **kwargs: Any) -> Engine:
        from nanoseek.model.checkpoint import load_checkpoint

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

        def sink(item: StreamEvent | BaseException) -> None:
            try:
                loop.call_soon_threadsafe(events.put_nowait, item)
            except RuntimeError:  # the loop is closed: nobody is listening any more
                self.cancel(group.request_id)

        group = self._prepare(request, sink)
        self._enqueue(group, enforce_queue_limit=True)
        return self._iterate(group, events)

    async def _iterate(self, group: _Group, events: asyncio.Queue) -> AsyncIterator[StreamEvent]:
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
            "running": self._slots_used,
            "max_batch": self.max_batch,
            "kv_budget_tokens": self.kv_budget_tokens,
            "kv_reserved_tokens": self._reserved,
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

    def _prepare(self, request: Request, sink: Sink) -> _Group:
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
        return _Group(request_id, prompt, params, sink, stop_ids, reserve)

    def _enqueue(self, group: _Group, *, enforce_queue_limit: bool) -> None:
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

    # ---- the engine thread -------------------------------------------------------------------------------

    def _run(self) -> None:
        # no_grad, not inference_mode: tensors the model caches while we run (its rotary table) must stay
        # usable by training code that shares the model (RL), and inference tensors are not.
        with torch.no_grad():
            try:
                self._setup_in_engine_thread()
            except BaseException as exc:
                self._setup_error = exc
                return
            finally:
                self._ready.set()
            while True:
                with self._lock:
                    while not (self._inbox or self._cancels or self._shutdown or self._slots_used or self._waiting):
                        self._lock.wait()
                    if self._shutdown:
                        break
                    inbox, self._inbox = self._inbox, []
                    cancels, self._cancels = self._cancels, []
                self._waiting.extend(inbox)
                for request_id in cancels:
                    self._cancel(request_id)
                try:
                    self._step()
                except Exception as exc:  # a failed forward must not kill the loop: fail its requests
                    self._fail_everything(exc)
            self._cancel_everything()

    def _setup_in_engine_thread(self) -> None:
        """Torch work that would otherwise give the caller's thread an OpenMP pool (see in_fresh_thread)."""
        torch.set_num_threads(self._threads)
        if self.native_decode:
            self.native = NativeDecoder.build(self.model, self.cache, self.max_batch)
            log.info("decode steps: %s", f"native C step, {self.native.kernel}" if self.native else "PyTorch model")
        # Packed weights speed up decode steps of a few rows, which the native step and a compiled step (it
        # packs its frozen weights itself and cannot trace oneDNN's packed linear) do not run through the model.
        if hasattr(self.model, "pack_for_inference") and not self.compile_decode and self.native is None:
            self.packed_weights = self.model.pack_for_inference()
        if self.compile_decode:  # the rotary table must not grow inside a traced step
            self.model.rotary.get(self.cache.position_limit, self.model.dtype, self.model.device)
        if self.compile_decode or self.native is not None:
            self._weight_versions = [(p, p._version) for p in self.model.parameters()]

    def _step(self) -> None:
        self._admit()
        prefill_budget = self.prefill_chunk
        while self._prefilling and prefill_budget > 0:
            prefill_budget -= self._prefill_chunk(prefill_budget)
        decoding = [s for s in self._slot_owner[: self._slots_used] if s is not None and s.decoding]
        if decoding:
            self._decode(decoding)
        self.counters["steps"] += 1

    def _admit(self) -> None:
        now = time.monotonic()
        while self._waiting:
            group = self._waiting[0]
            if self.max_batch - self._slots_used < group.params.n:
                break
            spare = self.kv_budget_tokens - self._reserved - self.prefix_store.num_tokens
            if group.reserved > spare:
                if group.reserved > self.kv_budget_tokens - self._reserved:
                    break  # running requests hold the memory: wait for them
                self.prefix_store.evict(group.reserved - spare)
            self._waiting.popleft()
            with self._lock:
                self._queued -= 1
            self._start(group)
        for group in self._waiting:
            if now - group.last_notice >= self.keepalive_interval:
                group.last_notice = now
                group.sink(StreamEvent(queued=True))

    def _start(self, group: _Group) -> None:
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
        self._reserved += group.reserved
        for index, matcher in enumerate(matchers):
            slot = self._slots_used
            self._slots_used += 1
            sequence = _Sequence(
                group,
                index,
                slot,
                RowSampler(params, index, self.vocab_size),
                IncrementalDetokenizer(self.tokenizer),
                StopStringMatcher(params.stop),
                matcher,
                constraint_active=matcher is not None and params.constraint_after_token is None,
                thought=ThoughtBudget(params) if ThoughtBudget.applies(params) else None,
            )
            self._slot_owner[slot] = sequence
            group.sequences.append(sequence)
        group.unfinished = params.n
        blocks, last_logits = self.prefix_store.lookup(group.prompt_ids)
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
            self._prefilling.append(group)

    def _grammar_backend(self) -> GrammarBackend:
        if self._grammar is None:
            # xgrammar needs at least one stop token; a vocabulary without EOS gets a placeholder
            # (each matcher is then given its request's own stop tokens anyway).
            stop_ids = sorted(self.eos_token_ids) or [self.vocab_size - 1]
            self._grammar = GrammarBackend(self.tokenizer, self.vocab_size, stop_ids, self.max_batch)
        return self._grammar

    def _prefill_chunk(self, budget: int) -> int:
        """Prefill the next chunk of the first prefilling prompt, together in one forward with the following
        prompts that are at the same position with as many tokens left (many equal-length prompts arriving at
        once: one [k, T] forward instead of k [1, T] ones). Returns the tokens prefilled."""
        head = self._prefilling[0]
        start = head.prefill_position
        remaining = len(head.prompt_ids) - start
        length = min(remaining, budget)
        # A chunk that fits in one native step goes through it: its tokens become rows of one sequence at
        # consecutive positions (each row's keys and values are stored before any row attends). The PyTorch
        # forward of a short chunk is mostly per-op overhead: a 1-token prompt took ~4 ms, the native step ~0.5.
        native = self.native is not None and length <= self.native.max_batch and self._weights_unchanged()
        row_limit = self.native.max_batch if native else budget
        groups = [head]
        if length == remaining:  # only prompts that finish in this chunk are batched (the common case)
            for group in itertools.islice(self._prefilling, 1, None):
                if (
                    (len(groups) + 1) * length > min(budget, row_limit)
                    or group.prefill_position != start
                    or len(group.prompt_ids) != len(head.prompt_ids)
                ):
                    break
                groups.append(group)
        chunks = [group.prompt_ids[start : start + length] for group in groups]
        if native:
            positions = list(range(start, start + length))
            rows = self.native.step(
                [token for chunk in chunks for token in chunk],
                positions * len(groups),
                [group.sequences[0].slot for group in groups for _ in positions],
            )
            logits = rows[length - 1 :: length]
        else:
            # Positions start.. come from cache.seq_len.
            self.cache.begin_prefill([group.sequences[0].slot for group in groups], start, length)
            logits = self.model(torch.tensor(chunks), cache=self.cache, last_only=True)[:, -1].float()
        for group in groups:
            group.prefill_position = group.sequences[0].length = start + length
        self.counters["prefill_tokens"] += length * len(groups)
        if start + length == len(head.prompt_ids):
            for row, group in enumerate(groups):
                self._prefilling.popleft()
                # Read the slot now: finishing an earlier group of the batch may have moved this one.
                self.prefix_store.insert(group.prompt_ids, self.cache, group.sequences[0].slot, logits[row])
                self._finish_prefill(group, logits[row])
        return length * len(groups)

    def _finish_prefill(self, group: _Group, logits: torch.Tensor) -> None:
        first = group.sequences[0]
        prompt_length = len(group.prompt_ids)
        for sequence in group.sequences[1:]:
            self.cache.copy(first.slot, sequence.slot, prompt_length)
            sequence.length = prompt_length
        self._make_room_in_prefix_store()
        self._sample(group.sequences, logits.unsqueeze(0).repeat(len(group.sequences), 1))

    def _make_room_in_prefix_store(self) -> None:
        overflow = self._reserved + self.prefix_store.num_tokens - self.kv_budget_tokens
        if overflow > 0:
            self.prefix_store.evict(overflow)

    def _decode(self, sequences: list[_Sequence]) -> None:
        positions = [s.length for s in sequences]
        slots = [s.slot for s in sequences]
        unchanged = self._weights_unchanged()
        if self.native is not None and unchanged:
            logits = self.native.step([s.next_token for s in sequences], positions, slots)
        else:
            self.cache.begin_decode(slots, positions)
            # Sequences in lock-step share one position: the model reads it from cache.seq_len (a slice).
            position_ids = None if self.cache.seq_len is not None else torch.tensor(positions).unsqueeze(1)
            model = self._decode_model if unchanged else self.model
            input_ids = torch.tensor([[s.next_token] for s in sequences])
            logits = model(input_ids, position_ids, cache=self.cache)[:, 0].float()
        for sequence in sequences:
            sequence.length += 1
        self.counters["decode_tokens"] += len(sequences)
        self._sample(sequences, logits)

    def _weights_unchanged(self) -> bool:
        return all(param._version == version for param, version in self._weight_versions)

    # ---- sampling and emitting ---------------------------------------------------------------------

    def _sample(self, sequences: list[_Sequence], logits: torch.Tensor) -> None:
        """Pick the next token of every sequence from its logits row; stream and retire them."""
        logprob_rows = [i for i, s in enumerate(sequences) if s.group.params.logprobs]
        raw_logprobs = torch.log_softmax(logits[logprob_rows], dim=-1) if logprob_rows else None
        tokens = sample_next(logits, [s.sampler for s in sequences])
        for row, sequence in enumerate(sequences):
            if sequence.thought is not None:  # before the grammar: a constraint starts after the thought
                tokens[row] = sequence.thought.steer(tokens[row])
        constrained = [row for row, s in enumerate(sequences) if s.constraint_active]
        if constrained:
            self._enforce_grammar(logits, sequences, constrained, tokens)
        logprobs: dict[int, TokenLogprob] = {}
        if raw_logprobs is not None:
            for position, row in enumerate(logprob_rows):
                logprobs[row] = self._logprob_entry(
                    raw_logprobs[position], tokens[row], sequences[row].group.params.top_logprobs
                )
        # Last slot first: a sequence that finishes frees its slot by moving the last one's cache into it
        # (_free_slot), so when several finish in one step, those above them are retired before they would move.
        for row in sorted(range(len(sequences)), key=lambda row: sequences[row].slot, reverse=True):
            self._accept(sequences[row], tokens[row], logprobs.get(row))

    def _enforce_grammar(
        self, logits: torch.Tensor, sequences: list[_Sequence], rows: list[int], tokens: list[int]
    ) -> None:
        """Make the token of every constrained row one its grammar accepts, advancing its matcher by it.

        Greedy and plain-temperature rows draw first and ask the grammar only on a miss: a token drawn from the
        full distribution that the grammar accepts is kept, and a rejected one is redrawn among the allowed
        tokens. Token t then comes out with probability p(t) + (1 - p(allowed)) * p(t) / p(allowed) =
        p(t) / p(allowed): exactly the masked distribution (for greedy rows the masked argmax), while the common
        case costs one accept_token (~2 us) instead of a bitmask fill (~20-70 us) and a redraw. Rows with top-k
        or top-p always draw among the allowed tokens, since their cut depends on which tokens are allowed."""

        def kept(row: int) -> bool:
            sequence = sequences[row]
            draws_first = sequence.sampler.greedy or sequence.sampler.plain
            return draws_first and sequence.matcher.accept_token(tokens[row])

        redraw = [row for row in rows if not kept(row)]
        if not redraw:
            return
        bitmask, logits_rows = self._grammar_backend().bitmask, logits.numpy()
        for row in redraw:
            sequence = sequences[row]
            allowed = allowed_token_ids(sequence.matcher, bitmask, row, self.vocab_size)
            if len(allowed):
                # Penalties were applied to this row by the first draw.
                tokens[row] = sequence.sampler.draw_among(logits_rows[row], allowed)
            # No token allowed at all, or (never expected) the grammar refusing a token its own bitmask allowed:
            # _accept ends the sequence rather than letting the matcher fall out of step with the output.
            sequence.grammar_dead_end = not len(allowed) or not sequence.matcher.accept_token(tokens[row])

    def _accept(self, sequence: _Sequence, token: int, logprob: TokenLogprob | None) -> None:
        group, params = sequence.group, sequence.group.params
        sequence.tokens.append(token)
        sequence.sampler.observe(token)
        sequence.next_token = token
        sequence.decoding = True
        finish: str | None = None
        text = ""
        stop_hit: str | None = None
        grammar_done = False
        if sequence.constraint_active:
            # _enforce_grammar has advanced the matcher by this token; termination means it took a stop token.
            grammar_done = sequence.grammar_dead_end or sequence.matcher.is_terminated()
        elif sequence.matcher is not None and token == params.constraint_after_token:
            sequence.constraint_active = True
        if token in group.stop_ids or grammar_done:
            finish, text = "stop", self._release_held_text(sequence)
        else:
            text, stop_hit = sequence.stop_matcher.push(sequence.detokenizer.push(token))
            if stop_hit:
                finish = "stop"
            elif len(sequence.tokens) >= params.max_tokens or sequence.length >= self.cache.slot_capacity:
                finish = "length"
                text += self._release_held_text(sequence)
        event = StreamEvent(
            index=sequence.index,
            text=text,
            token_ids=[token],
            logprobs=[logprob] if logprob is not None else None,
            finish_reason=finish,
            stop_string=stop_hit,
        )
        if finish is not None:
            event.usage = self._retire(sequence)
        group.sink(event)

    @staticmethod
    def _release_held_text(sequence: _Sequence) -> str:
        """The sample ends for another reason than a stop string: emit what the detokenizer (an unfinished
        character) and the stop matcher (a possible stop-string start) were holding back."""
        tail, hit = sequence.stop_matcher.push(sequence.detokenizer.flush())
        return tail if hit else tail + sequence.stop_matcher.flush()

    def _logprob_entry(self, row_logprobs: torch.Tensor, token: int, top: int) -> TokenLogprob:
        text, raw = self._token_info(token)
        alternatives = []
        if top:
            values, ids = torch.topk(row_logprobs, top)
            for value, token_id in zip(values.tolist(), ids.tolist()):
                alt_text, alt_raw = self._token_info(token_id)
                alternatives.append(TopLogprob(alt_text, token_id, value, alt_raw))
        return TokenLogprob(text, token, float(row_logprobs[token]), raw, alternatives)

    def _token_info(self, token_id: int) -> tuple[str, list[int]]:
        info = self._token_text.get(token_id)
        if info is None:
            raw = self.tokenizer.token_bytes(token_id)
            info = self._token_text[token_id] = (raw.decode("utf-8", errors="replace"), list(raw))
        return info

    # ---- retiring ------------------------------------------------------------------------------------

    def _retire(self, sequence: _Sequence) -> Usage | None:
        """Free the sequence's slot and reservation; the group's usage once its last sequence is done."""
        group = sequence.group
        sequence.finished = True
        sequence.decoding = False
        self._free_slot(sequence)
        self._reserved -= group.reserve_per_sequence
        group.unfinished -= 1
        if group.unfinished:
            return None
        with self._lock:
            self._in_flight.pop(group.request_id, None)
        return Usage(
            prompt_tokens=len(group.prompt_ids),
            cached_tokens=group.cached_tokens,
            completion_tokens=sum(len(s.tokens) for s in group.sequences),
        )

    def _free_slot(self, sequence: _Sequence) -> None:
        """Release a slot and keep running sequences packed in slots 0..used-1 (contiguous decode batch)."""
        hole, last = sequence.slot, self._slots_used - 1
        if hole != last:
            mover = self._slot_owner[last]
            if mover.length:
                self.cache.copy(last, hole, mover.length)
            mover.slot = hole
            self._slot_owner[hole] = mover
        self._slot_owner[last] = None
        self._slots_used -= 1
        sequence.slot = -1

    def _cancel(self, request_id: str) -> None:
        group = next((g for g in self._waiting if g.request_id == request_id), None)
        if group is None:
            group = next(
                (s.group for s in self._slot_owner[: self._slots_used] if s.group.request_id == request_id), None
            )
        if group is not None:  # else it already finished
            self._cancel_group(group)

    def _cancel_group(self, group: _Group) -> None:
        """End every unfinished sample of `group` with finish_reason "cancelled", freeing what it holds."""
        if group in self._waiting:
            self._waiting.remove(group)
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
        if group in self._prefilling:
            self._prefilling.remove(group)
        for sequence in group.sequences:
            if not sequence.finished:
                event = StreamEvent(index=sequence.index, finish_reason="cancelled")
                event.usage = self._retire(sequence)
                group.sink(event)

    def _cancel_everything(self) -> None:
        """Shutdown: every request still queued or running ends as "cancelled"."""
        with self._lock:
            self._waiting.extend(self._inbox)
            self._inbox = []
        running = {id(s.group): s.group for s in self._slot_owner[: self._slots_used]}
        for group in list(self._waiting) + list(running.values()):
            self._cancel_group(group)

    def _fail_everything(self, error: BaseException) -> None:
        groups = {id(s.group): s.group for s in self._slot_owner[: self._slots_used] if s is not None}
        with self._lock:
            pending = list(self._waiting) + self._inbox
            self._inbox, self._queued = [], 0
            self._in_flight.clear()
        self._waiting.clear()
        self._prefilling.clear()
        for group in list(groups.values()) + pending:
            group.sink(error)
        self._slot_owner = [None] * self.max_batch
        self._slots_used = self._reserved = 0


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

    def result(self, group: _Group) -> Completion:
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
