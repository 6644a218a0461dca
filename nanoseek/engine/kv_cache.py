"""The engine's KV cache: one slot per running sequence, plus a store of 64-token prefix blocks.

Layout, and why. Each layer keeps K and V as `[num_slots, num_kv_heads, slot_capacity, head_dim]`; a
running sequence owns one slot and its keys sit contiguously in it. On the CPU the cost of a decode step
is per-op overhead plus memory traffic, so the design avoids gathering: a batch of sequences in slots
0..B-1 is attended as a plain view `K[:B, :, :L]`, with a boolean mask only when their lengths differ.
A paged layout would save memory fragmentation but would gather (copy) every sequence's pages for every
layer at every step, which costs more than the attention itself at these sizes. The slot tensors are
anonymous memory maps (`zeroed_tensor`), so the OS commits memory only for the positions actually
written: a slot of capacity 4,096 that holds 100 tokens costs about 100 tokens of RAM.

The engine keeps its running sequences packed in the lowest slots (freeing a slot moves the highest
occupied slot into the hole, `copy`), so the common decode batch is contiguous.

Prefix caching. `PrefixStore` keeps whole 64-token blocks of prompts that were prefilled before, keyed by
a hash chain over the tokens from position 0 (so a block is only reused after the identical prefix), started
from the request's cache salt (so requests of different salts never share blocks).
A hit copies the blocks into the new sequence's slot (one copy per layer, ~1 ms for 1k tokens) and the
prefill starts after them. If a prompt ends exactly on a block boundary, the block also keeps the
logits of the prompt's last position, so a fully cached prompt needs no forward pass at all.
Least-recently-used blocks are evicted first; a hit refreshes its blocks deepest-first so that a chain's
root outlives its leaves and eviction never strands a reachable suffix. With a disk tier (`disk_cache.py`)
every new block is also written to disk, and a lookup that runs out of blocks in memory continues on disk,
loading what it finds back into memory: a prefix seen before a restart is still a hit.

Storage dtype. The cache stores keys and values in the model's dtype, or in one of its own (`dtype`, the engine's
`kv_cache_dtype`): fp16 halves an fp32 model's cache and rounds each key and value as llama.cpp's default f16
cache does. Attention always computes in the model's dtype (`attention_dtype`): the native step widens the
stored values as it reads them, and `attend` below (the PyTorch path) converts the visible ones first, a copy per
layer and step that the native step does not make.

Both obey the model's cache protocol: before each forward the engine calls `begin_decode` or
`begin_prefill`, and every attention layer then calls `attend(layer_idx, q, k, v)`.
"""

from __future__ import annotations

import math
import mmap
from collections import OrderedDict
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from nanoseek.engine.disk_cache import DiskBlockCache

BLOCK_TOKENS = 64  # the DeepSeek context-cache unit


def zeroed_tensor(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """A zero tensor whose memory the OS commits page by page as it is written.

    torch.zeros writes every byte, committing all of it at once. An anonymous mmap is zero-filled lazily;
    huge pages are turned off for it because with transparent huge pages a single written key commits
    2 MB around it, and a slot's first keys in every head would then commit most of the slot."""
    itemsize = torch.finfo(dtype).bits // 8
    buffer = mmap.mmap(-1, max(1, math.prod(shape)) * itemsize)
    if hasattr(mmap, "MADV_NOHUGEPAGE"):
        buffer.madvise(mmap.MADV_NOHUGEPAGE)
    return torch.frombuffer(buffer, dtype=dtype).view(shape)  # the tensor keeps the mapping alive


class SlotKVCache:
    def __init__(
        self,
        num_layers: int,
        num_kv_heads: int,
        head_dim: int,
        num_slots: int,
        slot_capacity: int,
        dtype: torch.dtype,
        attention_dtype: torch.dtype | None = None,
    ) -> None:
        """A cache storing `dtype` keys and values for a model that attends in `attention_dtype` (default: the
        same dtype)."""
        shape = (num_slots, num_kv_heads, slot_capacity, head_dim)
        self.keys = [zeroed_tensor(shape, dtype) for _ in range(num_layers)]
        self.values = [zeroed_tensor(shape, dtype) for _ in range(num_layers)]
        self.num_slots, self.slot_capacity = num_slots, slot_capacity
        self.num_kv_heads, self.head_dim, self.dtype = num_kv_heads, head_dim, dtype
        self.attention_dtype = attention_dtype or dtype
        self.bytes_per_token = 2 * num_layers * num_kv_heads * head_dim * torch.finfo(dtype).bits // 8
        # Set by begin_decode / begin_prefill for the forward pass that follows.
        self._slots: torch.Tensor | slice = slice(0, 0)
        self._uniform_write = False
        self._write_rows = torch.zeros(0, dtype=torch.long)
        self._key_length = 0
        self._mask: torch.Tensor | None = None
        self._causal = False
        self._prefill_slots: slice | torch.Tensor | None = None
        self._prefill_start = 0
        # Where the next forward's tokens start when they all start at one position (the model then slices
        # its rotary table instead of gathering from it); None when positions must be passed explicitly.
        self.seq_len: int | None = None
        # Positions never reach the slot capacity: the model sizes its rotary table by this, not by the data.
        self.position_limit = slot_capacity

    # ---- forward-pass setup (once per step, not per layer) -----------------------------------------

    def begin_decode(self, slots: list[int], positions: list[int]) -> None:
        """The next forward writes one token per sequence: sequence i at slot slots[i], position positions[i]."""
        self._prefill_slots = None
        batch, first = len(slots), slots[0]
        contiguous = slots[-1] - first == batch - 1 and slots == list(range(first, first + batch))
        same_length = min(positions) == max(positions)
        self._key_length = max(positions) + 1
        # Common case (one sequence, or a packed batch in lock-step): plain slices, no index tensors.
        self._uniform_write = contiguous and same_length
        self._slots = slice(first, first + batch) if contiguous else torch.tensor(slots)
        if not self._uniform_write:
            # Row (slot, head, position) of each new key in the cache viewed as [slots * heads * capacity, D]:
            # one index_copy_ per layer writes them, twice as fast as indexing slots and positions together.
            heads, capacity = self.num_kv_heads, self.slot_capacity
            rows = (torch.tensor(slots)[:, None] * heads + torch.arange(heads)) * capacity
            self._write_rows = (rows + torch.tensor(positions)[:, None]).view(-1)
        self.seq_len = positions[0] if same_length else None
        if same_length:
            self._mask = None  # every cached key is visible to every query
        else:
            key_index = torch.arange(self._key_length)
            visible = (key_index[None, :] <= torch.tensor(positions)[:, None]).view(batch, 1, 1, -1)
            self._mask = self._additive(visible)

    def begin_prefill(self, slot: int | list[int], start: int, length: int) -> None:
        """The next forward writes `length` tokens of one sequence at slot `slot`, positions start.. (or, with a
        list of slots, `length` tokens of each of several sequences, row i of the batch at slot[i], all at
        the same positions: prompts of equal length prefilled in one forward)."""
        slots = [slot] if isinstance(slot, int) else list(slot)
        first = slots[0]
        contiguous = slots == list(range(first, first + len(slots)))
        self._prefill_slots = slice(first, first + len(slots)) if contiguous else torch.tensor(slots)
        self._prefill_start = start
        self.seq_len = start
        self._key_length = start + length
        self._causal = start == 0
        if start == 0:
            self._mask = None
        else:
            # Query i (position start+i) sees keys 0..start+i.
            key_index = torch.arange(start + length)
            query_position = torch.arange(start, start + length)
            self._mask = self._additive(key_index[None, :] <= query_position[:, None])

    def _additive(self, visible: torch.Tensor) -> torch.Tensor:
        """A boolean visibility mask as the additive float mask SDPA applies anyway (0 / -inf): on the CPU,
        SDPA with a float mask runs ~2x faster than with the same mask given as booleans."""
        return torch.zeros(visible.shape, dtype=self.attention_dtype).masked_fill_(~visible, float("-inf"))

    # ---- the model's cache protocol ----------------------------------------------------------------

    def attend(self, layer_idx: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        keys, values = self.keys[layer_idx], self.values[layer_idx]
        gqa = q.shape[1] != k.shape[1]
        if self._prefill_slots is not None:
            slots, start, length = self._prefill_slots, self._prefill_start, k.shape[2]
            keys[slots, :, start : start + length] = k
            values[slots, :, start : start + length] = v
            visible_keys = keys[slots, :, : start + length].to(q.dtype)
            visible_values = values[slots, :, : start + length].to(q.dtype)
            return F.scaled_dot_product_attention(
                q, visible_keys, visible_values, attn_mask=self._mask, is_causal=self._causal, enable_gqa=gqa
            )
        if self._uniform_write:
            position = self._key_length - 1
            keys[self._slots, :, position : position + 1] = k
            values[self._slots, :, position : position + 1] = v
        else:
            rows, head_dim = self._write_rows, self.head_dim
            keys.view(-1, head_dim).index_copy_(0, rows, k.reshape(-1, head_dim).to(keys.dtype))
            values.view(-1, head_dim).index_copy_(0, rows, v.reshape(-1, head_dim).to(values.dtype))
        visible_keys = keys[self._slots, :, : self._key_length].to(q.dtype)  # no copy when the dtypes are equal
        visible_values = values[self._slots, :, : self._key_length].to(q.dtype)
        return F.scaled_dot_product_attention(q, visible_keys, visible_values, attn_mask=self._mask, enable_gqa=gqa)

    # ---- slot bookkeeping --------------------------------------------------------------------------

    def copy(self, source: int, target: int, length: int) -> None:
        """Copy the first `length` positions of slot `source` into slot `target` (n samples, packing)."""
        for keys, values in zip(self.keys, self.values):
            keys[target, :, :length] = keys[source, :, :length]
            values[target, :, :length] = values[source, :, :length]

    def read_blocks(self, slot: int, first_block: int, num_blocks: int) -> list[torch.Tensor]:
        """Per layer, a `[2, num_blocks, Hkv, 64, D]` copy of the given whole blocks of a slot."""
        start, stop = first_block * BLOCK_TOKENS, (first_block + num_blocks) * BLOCK_TOKENS
        out = []
        for keys, values in zip(self.keys, self.values):
            pair = torch.stack((keys[slot, :, start:stop], values[slot, :, start:stop]))  # [2, Hkv, T, D]
            out.append(
                pair.view(2, self.num_kv_heads, num_blocks, BLOCK_TOKENS, self.head_dim).transpose(1, 2).contiguous()
            )
        return out

    def write_blocks(self, slot: int, blocks: list[PrefixBlock]) -> None:
        """Fill the start of `slot` with the keys and values of consecutive prefix blocks, each copied once
        straight into place (stacking them first, then reordering, copied a fully cached 960-token prompt
        three times and took longer than the rest of its first token)."""
        for index, block in enumerate(blocks):
            positions = slice(index * BLOCK_TOKENS, (index + 1) * BLOCK_TOKENS)
            for keys, values, pair in zip(self.keys, self.values, block.kv):
                keys[slot, :, positions] = pair[0]
                values[slot, :, positions] = pair[1]


@dataclass
class PrefixBlock:
    tokens: tuple[int, ...]
    parent: int | None  # key of the previous block, None for the first
    kv: list[torch.Tensor]  # per layer [2, Hkv, 64, D]
    last_logits: torch.Tensor | None  # logits after the block's last token, when a prompt ended there


class PrefixStore:
    """LRU store of 64-token KV blocks keyed by the hash chain of the tokens before and in them, optionally
    backed by a disk tier."""

    def __init__(self, disk: DiskBlockCache | None = None) -> None:
        self.blocks: OrderedDict[int, PrefixBlock] = OrderedDict()  # least recently used first
        self.hit_tokens_total = 0
        self.disk = disk

    @property
    def num_tokens(self) -> int:
        return len(self.blocks) * BLOCK_TOKENS

    @staticmethod
    def block_keys(token_ids: list[int], salt: str = "") -> list[tuple[int, tuple[int, ...]]]:
        """(chain key, tokens) of every whole block of `token_ids`, the chain started from `salt`."""
        keys, parent = [], hash(salt)
        for start in range(0, len(token_ids) - BLOCK_TOKENS + 1, BLOCK_TOKENS):
            tokens = tuple(token_ids[start : start + BLOCK_TOKENS])
            parent = hash((parent, tokens))
            keys.append((parent, tokens))
        return keys

    def lookup(self, token_ids: list[int], salt: str = "") -> tuple[list[PrefixBlock], torch.Tensor | None]:
        """The longest run of stored blocks that prefixes `token_ids`, and the logits after it if the
        run covers the whole prompt and those were stored. Refreshes the blocks' recency."""
        found: list[tuple[int, PrefixBlock]] = []
        keys = self.block_keys(token_ids, salt)
        for key, tokens in keys:
            block = self.blocks.get(key)
            if block is None or block.tokens != tokens:  # the token check makes a hash collision harmless
                break
            found.append((key, block))
        if self.disk is not None and len(found) < len(keys):
            found += self._load_from_disk(token_ids, salt, keys, len(found))
        for key, _ in reversed(found):
            self.blocks.move_to_end(key)
        blocks = [block for _, block in found]
        covers_prompt = len(blocks) * BLOCK_TOKENS == len(token_ids)
        last_logits = blocks[-1].last_logits if blocks and covers_prompt else None
        return blocks, last_logits

    def insert(
        self, token_ids: list[int], cache: SlotKVCache, slot: int, last_logits: torch.Tensor | None, salt: str = ""
    ) -> None:
        """Store the whole blocks of a freshly prefilled prompt that are not stored yet."""
        keys = self.block_keys(token_ids, salt)
        missing = [i for i, (key, _) in enumerate(keys) if key not in self.blocks]
        ends_on_block = len(token_ids) == len(keys) * BLOCK_TOKENS
        if missing:
            first = missing[0]  # blocks are stored along the chain, so the missing ones are a suffix run
            per_layer = cache.read_blocks(slot, first, len(keys) - first)
            for offset, index in enumerate(range(first, len(keys))):
                key, tokens = keys[index]
                parent = keys[index - 1][0] if index else None
                self.blocks[key] = PrefixBlock(tokens, parent, [pair[:, offset].clone() for pair in per_layer], None)
        logits_added = bool(keys) and ends_on_block and last_logits is not None
        logits_added = logits_added and self.blocks[keys[-1][0]].last_logits is None
        if keys and ends_on_block and last_logits is not None:
            self.blocks[keys[-1][0]].last_logits = last_logits.clone()
        if self.disk is not None:
            # new blocks, and a stored last block that just got its logits, go to disk (written in the background)
            to_write = set(missing) | ({len(keys) - 1} if logits_added else set())
            disk_keys = self.disk.chain_keys(token_ids, salt, BLOCK_TOKENS) if to_write else []
            for index in sorted(to_write):
                block = self.blocks[keys[index][0]]
                self.disk.put(disk_keys[index], block.tokens, block.kv, block.last_logits)
        for key, _ in reversed(keys):
            self.blocks.move_to_end(key)

    def _load_from_disk(
        self, token_ids: list[int], salt: str, keys: list[tuple[int, tuple[int, ...]]], first: int
    ) -> list[tuple[int, PrefixBlock]]:
        """Blocks first.. of the prompt that the disk tier has, read back into memory (stopping at the first
        it does not have or that fails its check)."""
        disk_keys = self.disk.chain_keys(token_ids, salt, BLOCK_TOKENS)
        loaded = []
        for index in range(first, len(keys)):
            key, tokens = keys[index]
            stored = self.disk.get(disk_keys[index], tokens)
            if stored is None:
                break
            kv, last_logits = stored
            block = PrefixBlock(tokens, keys[index - 1][0] if index else None, kv, last_logits)
            self.blocks[key] = block
            loaded.append((key, block))
        return loaded

    def evict(self, num_tokens: int) -> int:
        """Drop least-recently-used blocks until `num_tokens` are freed (or the store is empty)."""
        freed = 0
        while freed < num_tokens and self.blocks:
            self.blocks.popitem(last=False)
            freed += BLOCK_TOKENS
        return freed
