"""The prefix store's disk tier (engine/disk_cache.py): blocks written by one engine are hits for the next one
over the same weights (a restart), with the same output as a cold prefill; a truncated or corrupted block file
is detected, dropped and recomputed; the tier never holds more than its bound; other weights never reuse it;
two servers can share the folder."""

from __future__ import annotations

import os
import random
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import torch

from nanoseek.engine import Request, SamplingParams, disk_cache
from nanoseek.engine.disk_cache import SUFFIX, DiskBlockCache
from nanoseek.engine.kv_cache import BLOCK_TOKENS


def prompt_of(length: int, seed: int) -> list[int]:
    rng = random.Random(seed)
    return [rng.randrange(3, 500) for _ in range(length)]


def run(engine, prompt: list[int]):
    [completion] = engine.generate([Request(prompt, SamplingParams(max_tokens=6, temperature=0, ignore_eos=True))])
    return completion


def block_files(directory: Path) -> list[Path]:
    return sorted(directory.rglob(f"*{SUFFIX}"))


def test_blocks_are_hits_after_a_restart_with_the_same_output(make_engine, tmp_path):
    partial, whole = prompt_of(200, 1), prompt_of(3 * BLOCK_TOKENS, 2)
    first = make_engine(cache_dir=tmp_path, disk_cache_bytes=1 << 30)
    cold = {name: run(first, prompt) for name, prompt in (("partial", partial), ("whole", whole))}
    assert all(c.usage.cached_tokens == 0 for c in cold.values())
    first.shutdown()  # flushes the queued writes
    assert len(block_files(tmp_path)) == 3 + 3

    restarted = make_engine(cache_dir=tmp_path, disk_cache_bytes=1 << 30)
    for name, prompt in (("partial", partial), ("whole", whole)):
        warm = run(restarted, prompt)
        assert warm.usage.cached_tokens == 3 * BLOCK_TOKENS  # counted as prompt_cache_hit_tokens by the API
        assert warm.token_ids == cold[name].token_ids
    assert restarted.prefix_store.disk.hits == 6
    assert restarted.counters["prefill_tokens"] == 200 - 3 * BLOCK_TOKENS  # the whole prompt needed no forward


def test_truncated_and_corrupted_blocks_are_dropped_and_recomputed(make_engine, tmp_path):
    prompt = prompt_of(4 * BLOCK_TOKENS + 10, 3)
    first = make_engine(cache_dir=tmp_path, disk_cache_bytes=1 << 30)
    cold = run(first, prompt)
    keys = first.prefix_store.disk.chain_keys(prompt, "", BLOCK_TOKENS)
    paths = [first.prefix_store.disk.path(key) for key in keys]
    first.shutdown()
    data = bytearray(paths[1].read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped bit pattern in the middle of block 1
    paths[1].write_bytes(bytes(data))
    paths[3].write_bytes(paths[3].read_bytes()[:100])  # block 3 cut short

    restarted = make_engine(cache_dir=tmp_path, disk_cache_bytes=1 << 30)
    warm = run(restarted, prompt)
    assert warm.usage.cached_tokens == BLOCK_TOKENS  # block 0 only: the chain stops at the bad block 1
    assert warm.token_ids == cold.token_ids
    assert restarted.prefix_store.disk.corrupt == 1
    restarted.shutdown()
    # the recomputed blocks were written again, whole
    again = make_engine(cache_dir=tmp_path, disk_cache_bytes=1 << 30)
    assert run(again, prompt).usage.cached_tokens == 4 * BLOCK_TOKENS
    assert again.prefix_store.disk.corrupt == 0


def test_the_disk_tier_never_exceeds_its_bound(make_engine, tmp_path):
    probe = make_engine(cache_dir=tmp_path / "probe", disk_cache_bytes=1 << 30)
    run(probe, prompt_of(BLOCK_TOKENS, 0))
    probe.shutdown()
    block_size = block_files(tmp_path / "probe")[0].stat().st_size
    bound = int(5.5 * block_size)
    engine = make_engine(cache_dir=tmp_path / "bounded", disk_cache_bytes=bound, kv_budget_tokens=4096)
    disk = engine.prefix_store.disk
    for seed in range(8):
        run(engine, prompt_of(2 * BLOCK_TOKENS + 5, 100 + seed))
        disk.flush()
        on_disk = sum(p.stat().st_size for p in block_files(tmp_path / "bounded"))
        assert on_disk <= bound and disk.total_bytes == on_disk
    assert len(block_files(tmp_path / "bounded")) == 5  # full: the least recently used went first
    engine.shutdown()
    # a smaller bound at start-up trims the folder to it
    smaller = DiskBlockCache(tmp_path / "bounded", 2 * block_size, disk.identity)
    assert len(block_files(tmp_path / "bounded")) == 2 and smaller.total_bytes <= 2 * block_size
    smaller.close()


def test_other_weights_do_not_reuse_the_blocks(make_engine, checkpoint, tmp_path):
    prompt = prompt_of(2 * BLOCK_TOKENS, 4)
    first = make_engine(cache_dir=tmp_path, disk_cache_bytes=1 << 30)
    run(first, prompt)
    first.shutdown()
    with torch.no_grad():
        checkpoint.model.norm.weight.add_(1.0)
    try:
        other = make_engine(cache_dir=tmp_path, disk_cache_bytes=1 << 30)
        assert run(other, prompt).usage.cached_tokens == 0
        other.shutdown()
    finally:
        with torch.no_grad():
            checkpoint.model.norm.weight.sub_(1.0)


def test_blocks_of_one_cache_salt_are_not_found_under_another(make_engine, tmp_path):
    # the salt is per API key (issue 23): another key's prompt never hits this key's blocks, on disk either
    prompt = prompt_of(2 * BLOCK_TOKENS, 5)
    first = make_engine(cache_dir=tmp_path, disk_cache_bytes=1 << 30)
    run(first, prompt)  # salt "" (no keys configured)
    first.shutdown()
    restarted = make_engine(cache_dir=tmp_path, disk_cache_bytes=1 << 30)
    store = restarted.prefix_store
    assert store.disk.chain_keys(prompt, "key-a", BLOCK_TOKENS) != store.disk.chain_keys(prompt, "", BLOCK_TOKENS)
    assert store.lookup(prompt, "key-a")[0] == []
    assert len(store.lookup(prompt, "")[0]) == 2


def test_a_block_still_being_written_is_a_miss_not_a_corrupt_file(tmp_path, monkeypatch):
    """The writer counts a block before its file exists; a lookup in that moment (the memory tier has just
    evicted it) used to drop the block as corrupt and leave its file, once written, outside the bound."""
    disk = DiskBlockCache(tmp_path, 1 << 20, "0" * 64)
    writing, release = threading.Event(), threading.Event()
    atomic_path = disk_cache.atomic_path

    @contextmanager
    def slow_atomic_path(path: Path):
        writing.set()
        assert release.wait(30)
        with atomic_path(path) as tmp:
            yield tmp

    monkeypatch.setattr(disk_cache, "atomic_path", slow_atomic_path)
    tokens, kv = (1, 2, 3), [torch.arange(12.0).reshape(2, 2, 3)]
    disk.put("block", tokens, kv, None)
    assert writing.wait(30)
    assert disk.get("block", tokens) is None and disk.corrupt == 0
    release.set()
    disk.flush()
    stored = disk.get("block", tokens)
    assert stored is not None and torch.equal(stored[0][0], kv[0]) and disk.corrupt == 0
    assert disk.total_bytes == disk.path("block").stat().st_size
    disk.close()


def test_a_second_server_on_the_folder_leaves_the_first_ones_write_alone(tmp_path, monkeypatch):
    """Two servers sharing --cache-dir: the second one's start deleted every temporary file in the folder, the
    first one's write in progress included (its rename then failed and the block was lost). Only a write
    abandoned long ago goes."""
    first = DiskBlockCache(tmp_path, 1 << 20, "0" * 64)
    abandoned = first.directory / f".crashed{SUFFIX}.x1y2.tmp"
    abandoned.write_bytes(b"half a block")
    hours_ago = time.time() - disk_cache.STALE_WRITE_SECONDS - 60
    os.utime(abandoned, (hours_ago, hours_ago))
    written, release = threading.Event(), threading.Event()
    atomic_path = disk_cache.atomic_path

    @contextmanager
    def paused_atomic_path(path: Path):
        with atomic_path(path) as tmp:
            yield tmp
            written.set()  # the bytes are in the temporary file, not yet renamed into place
            assert release.wait(30)

    monkeypatch.setattr(disk_cache, "atomic_path", paused_atomic_path)
    tokens, kv = (1, 2, 3), [torch.arange(12.0).reshape(2, 2, 3)]
    first.put("block", tokens, kv, None)
    assert written.wait(30)
    in_progress = [p for p in first.directory.glob(".*.tmp") if p != abandoned]
    second = DiskBlockCache(tmp_path, 1 << 20, "0" * 64)
    assert not abandoned.exists()
    assert [p.exists() for p in in_progress] == [True]
    release.set()
    first.flush()
    stored = first.get("block", tokens)
    assert stored is not None and torch.equal(stored[0][0], kv[0]) and first.writes == 1
    first.close()
    second.close()
