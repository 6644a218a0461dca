"""The prefix store's disk tier: whole 64-token KV blocks kept in files, so a repeated prompt prefix is a cache
hit even after the server restarts (DeepSeek keeps its context cache on disk, for hours to days).

    disk = DiskBlockCache(Path("~/.cache/nanoseek/prefix"), max_bytes=2 << 30, identity=model_identity(model))
    engine = Engine(model, tokenizer, disk_cache=disk)      # or nanoseek serve --cache-dir DIR --disk-cache-gb 2

Keys. A block's file name is a SHA-256 chain over the model identity (a hash of the weights and their dtype),
the request's cache salt (per API key, so keys never share blocks) and every token from position 0 through the
block, so a block is only found again after the identical prefix, under the same weights, for the same salt.
(The memory tier's chain uses Python's `hash`, which changes from one process to the next.)

Files. `<key>.kvb` holds a safetensors payload (the block's K/V per layer, its tokens, the last position's
logits when a prompt ended there) followed by the payload's SHA-256: a truncated or corrupted file fails the
check, is deleted and the block is recomputed. Files are written by a background thread (the engine thread
only queues a copy it already has) through `fileio.atomic_path`, so a crash leaves the old file or the new
one, and a temporary file that a later start deletes once it is an hour old (several servers may share the
folder: a younger one may be another server's write in progress). The tier never holds more than `max_bytes`:
a write first evicts the least recently used files (a hit refreshes a file's mtime, and a restart orders the
files by it).
"""

from __future__ import annotations

import hashlib
import logging
import os
import queue
import threading
import time
from collections import OrderedDict
from pathlib import Path

import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

from nanoseek.fileio import atomic_path

log = logging.getLogger(__name__)
SUFFIX = ".kvb"
DIGEST_BYTES = 32
# A temporary file older than this is a write that a crash interrupted, not one in progress in another server.
STALE_WRITE_SECONDS = 3600


def model_identity(model: torch.nn.Module, kv_dtype: torch.dtype | None = None) -> str:
    """A hash of every parameter's name, dtype, shape and bytes: blocks of other weights are never reused. With a
    KV cache that stores another dtype than the model's (`kv_dtype`, the engine's kv_cache_dtype), that dtype too:
    its blocks hold differently rounded values."""
    digest = hashlib.sha256()
    for name, param in model.state_dict().items():
        tensor = param.detach().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    if kv_dtype is not None and kv_dtype != model.dtype:
        digest.update(f"kv cache:{kv_dtype}".encode())
    return digest.hexdigest()


class DiskBlockCache:
    def __init__(self, directory: Path, max_bytes: int, identity: str) -> None:
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be >= 1, got {max_bytes}")
        self.directory = Path(directory).expanduser() / identity[:32]  # one folder per model identity
        self.directory.mkdir(parents=True, exist_ok=True)
        self.max_bytes, self.identity = max_bytes, identity
        self._lock = threading.Lock()
        self._files: OrderedDict[str, int] = OrderedDict()  # key -> size, least recently used first
        # keys queued or being written: a lookup of one is a miss (its file may not exist yet), not a corrupt block
        self._pending: set[str] = set()
        found = []
        for path in self.directory.glob(f"*{SUFFIX}"):
            try:
                found.append((path.stat(), path.stem))
            except FileNotFoundError:  # another server sharing the folder evicted it just now
                continue
        for stat, key in sorted(found, key=lambda item: item[0].st_mtime):
            self._files[key] = stat.st_size
        self._remove_abandoned_writes()
        self.hits = self.misses = self.corrupt = self.writes = 0
        with self._lock:
            self._evict_to(self.max_bytes)
        self._queue: queue.Queue[tuple[str, dict[str, torch.Tensor]] | None] = queue.Queue()
        self._writer = threading.Thread(target=self._write_loop, name="nanoseek-disk-cache", daemon=True)
        self._writer.start()

    @property
    def total_bytes(self) -> int:
        with self._lock:
            return sum(self._files.values())

    def chain_keys(self, token_ids: list[int], salt: str, block_tokens: int) -> list[str]:
        """The file key of every whole block of `token_ids`."""
        keys, parent = [], hashlib.sha256(f"{self.identity}\0{salt}".encode()).hexdigest()
        for start in range(0, len(token_ids) - block_tokens + 1, block_tokens):
            block = torch.tensor(token_ids[start : start + block_tokens], dtype=torch.int64).numpy().tobytes()
            parent = hashlib.sha256(parent.encode() + block).hexdigest()
            keys.append(parent)
        return keys

    def path(self, key: str) -> Path:
        return self.directory / f"{key}{SUFFIX}"

    def get(self, key: str, tokens: tuple[int, ...]) -> tuple[list[torch.Tensor], torch.Tensor | None] | None:
        """The block's per-layer K/V pairs and last logits, or None when it is not on disk (or fails its check)."""
        with self._lock:
            if key not in self._files or key in self._pending:
                self.misses += 1
                return None
        path = self.path(key)
        try:
            data = path.read_bytes()
            payload, digest = data[:-DIGEST_BYTES], data[-DIGEST_BYTES:]
            if len(data) <= DIGEST_BYTES or hashlib.sha256(payload).digest() != digest:
                raise ValueError("checksum mismatch (truncated or corrupted)")
            tensors = load_tensors(payload)
            if tuple(tensors["tokens"].tolist()) != tokens:
                raise ValueError("the block holds other tokens")
            layers = sum(1 for name in tensors if name.startswith("kv."))
            kv = [tensors[f"kv.{layer}"] for layer in range(layers)]
        except (OSError, ValueError, KeyError) as exc:  # safetensors raises its own errors as ValueError too
            log.warning("prefix cache block %s dropped: %s", path.name, exc)
            self.corrupt += 1
            self._forget(key)
            return None
        os.utime(path)  # recency survives a restart
        with self._lock:
            if key in self._files:
                self._files.move_to_end(key)
        self.hits += 1
        return kv, tensors.get("last_logits")

    def put(self, key: str, tokens: tuple[int, ...], kv: list[torch.Tensor], last_logits: torch.Tensor | None) -> None:
        """Queue the block for writing (the tensors must not change afterwards: the prefix store's are copies)."""
        tensors = {f"kv.{layer}": pair for layer, pair in enumerate(kv)}
        tensors["tokens"] = torch.tensor(tokens, dtype=torch.int64)
        if last_logits is not None:
            tensors["last_logits"] = last_logits
        with self._lock:
            self._pending.add(key)
        self._queue.put((key, tensors))

    def flush(self) -> None:
        """Wait until every queued block is on disk."""
        self._queue.join()

    def close(self) -> None:
        self._queue.put(None)
        self._writer.join()

    def _write_loop(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                self._write(*item)
            except Exception:  # a full disk or a vanished folder must not stop the engine
                log.exception("cannot write a prefix cache block")
            finally:
                if item is not None:
                    with self._lock:
                        self._pending.discard(item[0])
                self._queue.task_done()

    def _write(self, key: str, tensors: dict[str, torch.Tensor]) -> None:
        payload = save_tensors({name: t.contiguous() for name, t in tensors.items()})
        size = len(payload) + DIGEST_BYTES
        if size > self.max_bytes:
            return
        with self._lock:
            self._files.pop(key, None)
            self._evict_to(self.max_bytes - size)
            self._files[key] = size  # counted before the file exists, so the bound holds while it is written
        self.directory.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.path(key)) as tmp:
            tmp.write_bytes(payload + hashlib.sha256(payload).digest())
        self.writes += 1

    def _evict_to(self, limit: int) -> None:
        """Delete least recently used files until the rest take at most `limit` bytes (lock held)."""
        total = sum(self._files.values())
        while self._files and total > limit:
            key, size = self._files.popitem(last=False)
            self.path(key).unlink(missing_ok=True)
            total -= size

    def _remove_abandoned_writes(self) -> None:
        """Delete the temporary files of writes that a crash interrupted. Another server may share the folder and
        be writing a block right now, so only files untouched for STALE_WRITE_SECONDS go (a write takes
        milliseconds)."""
        cutoff = time.time() - STALE_WRITE_SECONDS
        for tmp in self.directory.glob(f".*{SUFFIX}.*.tmp"):
            try:
                if tmp.stat().st_mtime < cutoff:
                    tmp.unlink()
            except FileNotFoundError:  # its write finished (renamed) or another server removed it
                continue

    def _forget(self, key: str) -> None:
        with self._lock:
            self._files.pop(key, None)
        self.path(key).unlink(missing_ok=True)
