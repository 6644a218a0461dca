"""Packed training rows: token documents laid into fixed-length rows with a per-token loss mask.

    rows = pack_documents([(ids, mask), ...], seq_len=512, pad_id=0)   # SFT: keep documents whole
    rows = pack_stream([(ids, mask), ...], seq_len=512)                # pretraining: one cut stream
    rows.save("train.npz"); rows = PackedRows.load("train.npz")
    tokens, mask = rows.tensors(rows.rows_for(step, global_batch_rows, seed))

Each row holds seq_len + 1 tokens (inputs are row[:-1], targets row[1:]); `loss_mask[i, j] == 1` means
token j of row i is a training target. Which rows form the batch of a given step is a pure function of
(seed, step): a fresh permutation of all rows per epoch. That makes the step number the whole data
position, which is what exact resume and equal DDP/1-process batches rest on.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from nanoseek.fileio import atomic_path

Document = tuple[list[int], list[int]]  # token ids and a 0/1 loss mask of the same length


@dataclass
class PackedRows:
    tokens: np.ndarray  # [N, seq_len + 1] int32
    loss_mask: np.ndarray  # [N, seq_len + 1] uint8

    @property
    def seq_len(self) -> int:
        return self.tokens.shape[1] - 1

    def __len__(self) -> int:
        return self.tokens.shape[0]

    def rows_for(self, step: int, global_batch_rows: int, seed: int) -> np.ndarray:
        """Row indices of the global batch of `step` (each epoch is a seeded permutation of all rows)."""
        if len(self) == 0:
            raise ValueError("no training rows: the data mixture produced no tokens")
        return batch_index(len(self), step, global_batch_rows, seed)

    def tensors(self, index: np.ndarray, device: torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Tokens and loss mask of the rows at `index`, int64, on `device` (default the CPU)."""
        return (
            torch.from_numpy(self.tokens[index].astype(np.int64)).to(device),
            torch.from_numpy(self.loss_mask[index].astype(np.int64)).to(device),
        )

    def target_tokens(self) -> int:
        return int(self.loss_mask[:, 1:].sum())

    def save(self, path: str | Path) -> None:
        path = Path(path)
        with atomic_path(path) as tmp, open(tmp, "wb") as f:  # a file object: np.savez keeps the name as is
            np.savez(f, tokens=self.tokens, loss_mask=self.loss_mask)

    @classmethod
    def load(cls, path: str | Path) -> PackedRows:
        with np.load(path) as data:
            return cls(tokens=data["tokens"], loss_mask=data["loss_mask"])


def batch_index(count: int, step: int, batch: int, seed: int) -> np.ndarray:
    """Indices into `count` examples of the batch of `step`: epoch after epoch, each a seeded permutation of all
    of them (the batches of the supervised stages and of the DPO stage's pairs)."""
    positions = np.arange(step * batch, (step + 1) * batch)
    epochs, offsets = positions // count, positions % count
    index = np.empty_like(positions)
    for epoch in np.unique(epochs):
        permutation = np.random.default_rng([seed, int(epoch)]).permutation(count)
        index[epochs == epoch] = permutation[offsets[epochs == epoch]]
    return index


def pack_stream(documents: list[Document], seq_len: int) -> PackedRows:
    """Concatenate documents into one stream and cut it into rows of seq_len + 1 (pretraining).

    Consecutive rows share one boundary token so that every token of the stream is a target exactly once.
    """
    ids = np.fromiter((t for doc, _ in documents for t in doc), dtype=np.int32)
    mask = np.fromiter((m for _, doc_mask in documents for m in doc_mask), dtype=np.uint8)
    n_rows = (len(ids) - 1) // seq_len
    starts = np.arange(n_rows) * seq_len
    window = starts[:, None] + np.arange(seq_len + 1)[None, :]
    return PackedRows(tokens=ids[window], loss_mask=mask[window])


def pack_documents(documents: list[Document], seq_len: int, pad_id: int) -> PackedRows:
    """Greedily fill rows with whole documents in order, padding the rest (SFT).

    A conversation is never cut in two, so every assistant answer is trained with its whole prompt in view.
    Documents longer than a row are truncated to the row. Pads are never targets.
    """
    width = seq_len + 1
    rows_ids: list[list[int]] = []
    rows_mask: list[list[int]] = []
    cur_ids: list[int] = []
    cur_mask: list[int] = []
    for ids, mask in documents:
        ids, mask = ids[:width], mask[:width]
        if len(cur_ids) + len(ids) > width:
            rows_ids.append(cur_ids)
            rows_mask.append(cur_mask)
            cur_ids, cur_mask = [], []
        cur_ids.extend(ids)
        cur_mask.extend(mask)
    if cur_ids:
        rows_ids.append(cur_ids)
        rows_mask.append(cur_mask)
    tokens = np.full((len(rows_ids), width), pad_id, dtype=np.int32)
    loss_mask = np.zeros((len(rows_ids), width), dtype=np.uint8)
    for i, (ids, mask) in enumerate(zip(rows_ids, rows_mask)):
        tokens[i, : len(ids)] = ids
        loss_mask[i, : len(mask)] = mask
    return PackedRows(tokens=tokens, loss_mask=loss_mask)
