"""The engine's scheduler: which requests run, in which cache slots, and what each step computes.

Nothing here touches torch or the model: the scheduler decides on token counts and slot numbers only, so it
is tested without a model (tests/engine/test_engine_scheduler.py). One engine step (`Engine._step`, shaped
like vLLM v1's `EngineCore.step`: schedule, run, emit):

    schedule  admissible()   the waiting requests that fit now, in arrival order: a free slot per sample and
                             prompt + max_tokens of KV per sample reserved up front (so an admitted request can
                             always finish), cold prefix blocks evicted to make room; the engine starts each
                             (grammar, prefix-cache hit) and `place`s its sequences in slots
              next_prefill() the next chunk of prompt to prefill, with the prompts at the same position that
                             finish in the same chunk (one [k, T] forward instead of k [1, T] ones)
              decoding()     the sequences that decode one token this step
    run       the engine's ModelRunner turns a chunk or a decode batch into logits (runner.py)
    emit      the engine's Emitter samples, detokenizes, checks stops and streams events (emit.py);
              `retire` frees the slot and reservation of a sample that finished

Running sequences stay packed in slots 0..slots_used-1: freeing a slot moves the highest occupied one into
the hole (`move_slot`, the KV cache's copy), so the common decode batch is a contiguous view of the cache.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from nanoseek.engine.params import SamplingParams, StreamEvent

if TYPE_CHECKING:
    from nanoseek.engine.sampling import RowSampler
    from nanoseek.engine.stop import StopStringMatcher
    from nanoseek.engine.thinking import ThoughtBudget
    from nanoseek.tokenizer.detokenizer import IncrementalDetokenizer

Sink = Callable[[StreamEvent | BaseException], None]


class PrefixSpace(Protocol):
    """What the scheduler needs of the prefix store (kv_cache.PrefixStore): the KV tokens it holds, which
    count against the budget, and eviction of the least recently used of them."""

    @property
    def num_tokens(self) -> int: ...

    def evict(self, num_tokens: int) -> int: ...


@dataclass(eq=False)
class Group:
    """One request: its prompt, its n sequences and where its events go."""

    request_id: str
    prompt_ids: list[int]
    params: SamplingParams
    sink: Sink
    stop_ids: frozenset[int]
    reserve_per_sequence: int
    cache_salt: str = ""  # the request's prefix-cache salt (Request.cache_salt)
    sequences: list[Sequence] = field(default_factory=list)
    prefill_position: int = 0
    cached_tokens: int = 0
    unfinished: int = 0
    last_notice: float = 0.0

    @property
    def reserved(self) -> int:
        return self.reserve_per_sequence * self.params.n


@dataclass(eq=False)
class Sequence:
    """One sample of a request, living in one cache slot; the emitter's per-sample state rides along."""

    group: Group
    index: int
    sampler: RowSampler
    detokenizer: IncrementalDetokenizer
    stop_matcher: StopStringMatcher
    matcher: Any = None  # xgrammar.GrammarMatcher, when the request has a constraint
    constraint_active: bool = False
    grammar_dead_end: bool = False  # the grammar accepted no token at all (see Emitter._enforce_grammar)
    thought: ThoughtBudget | None = None  # the request bounds the thought its output starts with
    slot: int = -1
    length: int = 0  # tokens whose KV is in the slot
    next_token: int = -1  # sampled, not yet fed to the model
    decoding: bool = False
    finished: bool = False
    tokens: list[int] = field(default_factory=list)


@dataclass
class PrefillChunk:
    """Tokens start..start+length of each group's prompt, computed in one forward (`native`: as rows of the
    native decode step, see runner.py)."""

    groups: list[Group]
    start: int
    length: int
    native: bool

    @property
    def tokens(self) -> int:
        return self.length * len(self.groups)

    @property
    def finishes(self) -> bool:
        return self.start + self.length == len(self.groups[0].prompt_ids)


class Scheduler:
    """Queues, slots and the KV budget of one engine. Used from the engine thread only."""

    def __init__(
        self,
        *,
        max_batch: int,
        kv_budget_tokens: int,
        keepalive_interval: float,
        prefix_space: PrefixSpace,
        move_slot: Callable[[int, int, int], None],
    ) -> None:
        self.max_batch, self.kv_budget_tokens = max_batch, kv_budget_tokens
        self.keepalive_interval = keepalive_interval
        self.prefix_space = prefix_space
        self.move_slot = move_slot  # (source slot, target slot, tokens): copy a sequence's KV to another slot
        self.waiting: deque[Group] = deque()
        self.prefilling: deque[Group] = deque()
        self.slot_owner: list[Sequence | None] = [None] * max_batch
        self.slots_used = 0
        self.reserved = 0  # KV tokens reserved by running requests

    @property
    def has_work(self) -> bool:
        return bool(self.slots_used or self.waiting)

    # ---- schedule ---------------------------------------------------------------------------------------

    def admissible(self) -> Iterator[Group]:
        """Take waiting requests in arrival order while the first one fits. Each is yielded off the queue;
        the caller `place`s it (or fails it) before the next is considered, since placing uses up slots."""
        while self.waiting:
            group = self.waiting[0]
            if self.max_batch - self.slots_used < group.params.n:
                return
            spare = self.kv_budget_tokens - self.reserved - self.prefix_space.num_tokens
            if group.reserved > spare:
                if group.reserved > self.kv_budget_tokens - self.reserved:
                    return  # running requests hold the memory: wait for them
                self.prefix_space.evict(group.reserved - spare)
            self.waiting.popleft()
            yield group

    def place(self, group: Group, sequences: list[Sequence]) -> None:
        """Reserve the group's KV and give each of its sequences the next free slot."""
        self.reserved += group.reserved
        for sequence in sequences:
            sequence.slot = self.slots_used
            self.slots_used += 1
            self.slot_owner[sequence.slot] = sequence
            group.sequences.append(sequence)
        group.unfinished = len(sequences)

    def due_notice(self, now: float) -> list[Group]:
        """Waiting requests owed a `queued` event (one every keepalive_interval seconds)."""
        due = [group for group in self.waiting if now - group.last_notice >= self.keepalive_interval]
        for group in due:
            group.last_notice = now
        return due

    def next_prefill(self, budget: int, native_rows: int) -> PrefillChunk | None:
        """The next chunk of at most `budget` tokens of the first prefilling prompt, batched with the prompts
        behind it that stand at the same position with as many tokens left. A chunk of at most `native_rows`
        tokens in all goes through the native step (0: it cannot be used now)."""
        if not self.prefilling or budget <= 0:
            return None
        head = self.prefilling[0]
        start = head.prefill_position
        remaining = len(head.prompt_ids) - start
        length = min(remaining, budget)
        native = length <= native_rows
        row_limit = native_rows if native else budget
        groups = [head]
        if length == remaining:  # only prompts that finish in this chunk are batched (the common case)
            for group in itertools.islice(self.prefilling, 1, None):
                if (
                    (len(groups) + 1) * length > min(budget, row_limit)
                    or group.prefill_position != start
                    or len(group.prompt_ids) != len(head.prompt_ids)
                ):
                    break
                groups.append(group)
        return PrefillChunk(groups, start, length, native)

    def prefilled(self, chunk: PrefillChunk) -> list[Group]:
        """Record a computed chunk; returns its groups if their prompts are now complete (off the queue)."""
        for group in chunk.groups:
            group.prefill_position = group.sequences[0].length = chunk.start + chunk.length
        if not chunk.finishes:
            return []
        for _ in chunk.groups:
            self.prefilling.popleft()
        return chunk.groups

    def decoding(self) -> list[Sequence]:
        return [s for s in self.slot_owner[: self.slots_used] if s is not None and s.decoding]

    def make_room_in_prefix_space(self) -> None:
        """Evict prefix blocks that no longer fit beside the reservations (the store grew by a prefill)."""
        overflow = self.reserved + self.prefix_space.num_tokens - self.kv_budget_tokens
        if overflow > 0:
            self.prefix_space.evict(overflow)

    # ---- retire and cancel ----------------------------------------------------------------------------

    def retire(self, sequence: Sequence) -> bool:
        """Free a finished sequence's slot and reservation; True when it was its group's last."""
        group = sequence.group
        sequence.finished = True
        sequence.decoding = False
        self._free_slot(sequence)
        self.reserved -= group.reserve_per_sequence
        group.unfinished -= 1
        return not group.unfinished

    def _free_slot(self, sequence: Sequence) -> None:
        hole, last = sequence.slot, self.slots_used - 1
        if hole != last:
            mover = self.slot_owner[last]
            if mover.length:
                self.move_slot(last, hole, mover.length)
            mover.slot = hole
            self.slot_owner[hole] = mover
        self.slot_owner[last] = None
        self.slots_used -= 1
        sequence.slot = -1

    def running_groups(self) -> list[Group]:
        return list({id(s.group): s.group for s in self.slot_owner[: self.slots_used] if s is not None}.values())

    def find(self, request_id: str) -> Group | None:
        """The waiting or running request with this id (None once it finished)."""
        return next(
            (g for g in [*self.waiting, *self.running_groups()] if g.request_id == request_id),
            None,
        )

    def withdraw(self, group: Group) -> bool:
        """Take a cancelled request off the queues; True if it was still waiting (it holds nothing), else the
        caller retires its unfinished sequences."""
        if group in self.waiting:
            self.waiting.remove(group)
            return True
        if group in self.prefilling:
            self.prefilling.remove(group)
        return False

    def clear(self) -> list[Group]:
        """Forget every request (after a failed step); returns the running and waiting ones."""
        groups = self.running_groups() + list(self.waiting)
        self.waiting.clear()
        self.prefilling.clear()
        self.slot_owner = [None] * self.max_batch
        self.slots_used = self.reserved = 0
        return groups
