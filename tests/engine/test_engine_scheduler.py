"""The scheduler alone, without a model or torch: admission by free slots and KV budget in arrival order,
prefill chunks and their batching, slots kept packed when a sequence retires, cancellation."""

from __future__ import annotations

import ast
from pathlib import Path

from nanoseek.engine import scheduler as scheduler_module
from nanoseek.engine.params import SamplingParams
from nanoseek.engine.scheduler import Group, Scheduler, Sequence


class FakePrefixStore:
    def __init__(self, num_tokens: int = 0) -> None:
        self.num_tokens = num_tokens
        self.evicted: list[int] = []

    def evict(self, num_tokens: int) -> int:
        freed = min(num_tokens, self.num_tokens)
        self.num_tokens -= freed
        self.evicted.append(num_tokens)
        return freed


def make_scheduler(max_batch: int = 4, kv_budget_tokens: int = 1000, prefix_tokens: int = 0):
    moves: list[tuple[int, int, int]] = []
    store = FakePrefixStore(prefix_tokens)
    scheduler = Scheduler(
        max_batch=max_batch,
        kv_budget_tokens=kv_budget_tokens,
        keepalive_interval=1.0,
        prefix_space=store,
        move_slot=lambda source, target, length: moves.append((source, target, length)),
    )
    return scheduler, store, moves


def request(name: str, prompt_length: int = 10, max_tokens: int = 10, n: int = 1) -> Group:
    params = SamplingParams(max_tokens=max_tokens, n=n)
    return Group(name, list(range(prompt_length)), params, print, frozenset(), prompt_length + max_tokens)


def admit(scheduler: Scheduler) -> list[str]:
    """What the engine does with each admissible request: place its samples in slots."""
    started = []
    for group in scheduler.admissible():
        scheduler.place(group, [Sequence(group, i, None, None, None) for i in range(group.params.n)])
        scheduler.prefilling.append(group)
        started.append(group.request_id)
    return started


def test_the_scheduler_module_imports_no_torch():
    tree = ast.parse(Path(scheduler_module.__file__).read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert not [name for name in imported if name and name.split(".")[0] in ("torch", "numpy", "xgrammar")]


def test_admission_needs_a_free_slot_per_sample_and_keeps_arrival_order():
    scheduler, _, _ = make_scheduler(max_batch=4)
    scheduler.waiting.extend([request("a", n=2), request("b", n=1), request("c", n=2), request("d", n=1)])
    # c does not fit in the one slot left, and d, which would, waits behind it
    assert admit(scheduler) == ["a", "b"]
    assert scheduler.slots_used == 3 and [g.request_id for g in scheduler.waiting] == ["c", "d"]
    assert [s.slot for s in scheduler.slot_owner[:3]] == [0, 1, 2]
    a = scheduler.slot_owner[0].group
    for sequence in a.sequences:
        scheduler.retire(sequence)
    assert admit(scheduler) == ["c", "d"]  # b moved down to slot 0: three slots free
    assert scheduler.slots_used == 4 and scheduler.has_work


def test_admission_reserves_prompt_plus_max_tokens_and_evicts_prefix_blocks_for_room():
    scheduler, store, _ = make_scheduler(kv_budget_tokens=100, prefix_tokens=60)
    scheduler.waiting.extend([request("a", prompt_length=30, max_tokens=20), request("b", 30, 30)])
    # a needs 50 of the 40 not held by the prefix store: 10 tokens of blocks are evicted
    assert admit(scheduler) == ["a"] and store.evicted == [10]
    assert scheduler.reserved == 50
    # b needs 60, but only 50 are not reserved by running requests: it waits, evicting nothing
    assert scheduler.reserved + 60 > 100 and store.evicted == [10]
    scheduler.retire(scheduler.slot_owner[0])
    assert scheduler.reserved == 0
    assert admit(scheduler) == ["b"] and store.evicted == [10, 10]


def test_prefill_chunks_split_a_long_prompt_and_batch_equal_prompts():
    scheduler, _, _ = make_scheduler(max_batch=8, kv_budget_tokens=10_000)
    scheduler.waiting.extend([request("long", prompt_length=700), request("x", 5), request("y", 5), request("z", 6)])
    admit(scheduler)
    chunk = scheduler.next_prefill(budget=512, native_rows=0)
    assert [g.request_id for g in chunk.groups] == ["long"] and (chunk.start, chunk.length) == (0, 512)
    assert not chunk.native and scheduler.prefilled(chunk) == []  # not finished: still queued
    chunk = scheduler.next_prefill(budget=512, native_rows=0)
    assert (chunk.start, chunk.length) == (512, 188)
    assert [g.request_id for g in scheduler.prefilled(chunk)] == ["long"]
    # x and y stand at the same position with as many tokens left: one forward; z (6 tokens) is apart
    chunk = scheduler.next_prefill(budget=512 - 188, native_rows=0)
    assert [g.request_id for g in chunk.groups] == ["x", "y"] and chunk.tokens == 10
    assert [g.request_id for g in scheduler.prefilled(chunk)] == ["x", "y"]
    assert [g.prefill_position for g in chunk.groups] == [5, 5]
    assert [g.sequences[0].length for g in chunk.groups] == [5, 5]
    assert scheduler.next_prefill(budget=0, native_rows=0) is None  # the step's budget is spent


def test_a_short_chunk_goes_native_and_its_batch_stays_within_the_native_rows():
    scheduler, _, _ = make_scheduler(max_batch=8, kv_budget_tokens=10_000)
    scheduler.waiting.extend([request(name, prompt_length=3) for name in "abcd"])
    admit(scheduler)
    chunk = scheduler.next_prefill(budget=512, native_rows=8)
    assert chunk.native and [g.request_id for g in chunk.groups] == ["a", "b"]  # 3 rows more would be 9 > 8
    scheduler.prefilled(chunk)
    chunk = scheduler.next_prefill(budget=512, native_rows=0)  # weights changed: no native step now
    assert not chunk.native and [g.request_id for g in chunk.groups] == ["c", "d"]


def test_retiring_keeps_running_sequences_packed_in_the_lowest_slots():
    scheduler, _, moves = make_scheduler(max_batch=4)
    scheduler.waiting.extend([request("a"), request("b"), request("c")])
    admit(scheduler)
    a, b, c = (scheduler.slot_owner[i] for i in range(3))
    c.length, c.decoding = 17, True
    assert scheduler.retire(a)  # a's only sample: the request is done
    assert moves == [(2, 0, 17)] and c.slot == 0 and a.slot == -1 and a.finished
    assert scheduler.slot_owner[:3] == [c, b, None] and scheduler.slots_used == 2
    assert scheduler.decoding() == [c]
    scheduler.retire(b)  # the last slot: nothing moves
    assert moves == [(2, 0, 17)] and scheduler.slot_owner[:2] == [c, None]


def test_a_request_is_done_when_its_last_sample_retires():
    scheduler, _, _ = make_scheduler()
    scheduler.waiting.append(request("a", n=3))
    admit(scheduler)
    first, second, third = scheduler.slot_owner[:3]
    assert not scheduler.retire(second) and not scheduler.retire(first)
    assert scheduler.retire(third) and scheduler.reserved == 0 and not scheduler.has_work


def test_cancel_withdraws_waiting_and_prefilling_requests_and_clear_forgets_all():
    scheduler, _, _ = make_scheduler(max_batch=1)
    scheduler.waiting.extend([request("running"), request("queued")])
    admit(scheduler)
    running = scheduler.find("running")
    queued = scheduler.find("queued")
    assert running.sequences and not queued.sequences and scheduler.find("gone") is None
    assert scheduler.withdraw(queued) and not scheduler.waiting
    assert not scheduler.withdraw(running) and not scheduler.prefilling  # the caller retires its samples
    scheduler.waiting.append(request("late"))
    assert [g.request_id for g in scheduler.clear()] == ["running", "late"]
    assert scheduler.slots_used == scheduler.reserved == 0 and not scheduler.has_work


def test_waiting_requests_get_a_notice_every_keepalive_interval():
    scheduler, _, _ = make_scheduler(max_batch=1)
    scheduler.waiting.extend([request("a"), request("b")])
    admit(scheduler)
    assert [g.request_id for g in scheduler.due_notice(now=100.0)] == ["b"]
    assert scheduler.due_notice(now=100.5) == []
    assert [g.request_id for g in scheduler.due_notice(now=101.0)] == ["b"]
