"""Per-sequence sampling inside a batch: greedy, temperature, top-k, top-p, penalties, banned tokens, seeds.

Every row of the batch's logits belongs to one sequence with its own `SamplingParams`. Greedy rows are
decided together by one argmax. Sampled rows are drawn by inverse transform: each row takes one uniform
number from its own random stream (NumPy's PCG64, seeded from the request's seed and the sample's index), so a
seeded request draws the same tokens whatever else shares its batch (and whatever order the batch is in), and
the rows without top-k/top-p go through one batched softmax and cumulative sum, in NumPy. One
`torch.multinomial` per row cost ~0.4 ms: at 64 sampled rows a decode step spent 25 ms there, 5x the model;
and small torch ops in the engine thread may each wake OpenMP threads that sleep (~0.1 ms a time), which
single-threaded NumPy never does.

    sampler = RowSampler(params, sample_index=0)
    tokens = sample_next(logits, [sampler])          # logits [B, V] -> list of B token ids

Penalties follow the OpenAI/DeepSeek definition: over the tokens generated so far (not the prompt),
logit -= frequency_penalty * count + presence_penalty * (count > 0). A request's `banned_token_ids` get logit
-inf in the same pass, before any draw: every path below (the batched argmax, the batched softmax, top-k/top-p,
and the grammar's draw among allowed tokens, which reads the same row) then gives them zero weight, whichever
step (native or PyTorch) computed the logits.
"""

from __future__ import annotations

import secrets

import numpy as np
import torch

from nanoseek.engine.params import SamplingParams


class RowSampler:
    """The sampling state of one sequence: its RNG and, when penalties are on, its token counts."""

    def __init__(self, params: SamplingParams, sample_index: int, vocab_size: int) -> None:
        self.params = params
        self.greedy = params.temperature == 0
        # top-k and top-p need a sort of their own row; the rest share the batched draw.
        self.plain = not self.greedy and not params.top_k and params.top_p >= 1.0
        self.random: np.random.Generator | None = None
        if not self.greedy:
            # Sample i of an n-sample request gets its own stream, derived from (seed, i).
            base = params.seed if params.seed is not None else secrets.randbits(62)
            self.random = np.random.Generator(np.random.PCG64([base & (2**63 - 1), sample_index]))
        self.penalized = params.frequency_penalty != 0 or params.presence_penalty != 0
        self.counts = torch.zeros(vocab_size) if self.penalized else None
        banned = sorted(set(params.banned_token_ids))
        self.banned: np.ndarray | None = np.array(banned, dtype=np.int64) if banned else None

    def observe(self, token_id: int) -> None:
        if self.counts is not None:
            self.counts[token_id] += 1

    def apply_penalties(self, row: torch.Tensor) -> None:
        counts = self.counts
        if counts is None:
            return
        row.sub_(counts * self.params.frequency_penalty + (counts > 0).float() * self.params.presence_penalty)

    def apply_bans(self, row: torch.Tensor) -> None:
        """-inf at the banned ids of a logits row [V], in place. Through NumPy (the engine's logits are fp32 on the
        CPU), as the rest of this module: a small torch op in the engine thread may wake sleeping OpenMP threads."""
        if self.banned is not None:
            row.numpy()[self.banned] = -np.inf

    def uniform(self) -> float:
        return float(self.random.random())

    def draw(self, row: torch.Tensor) -> int:
        """One token from an already penalised logits row [V] (-inf where a token is ruled out), with top-k and
        top-p."""
        params = self.params
        row = row.float() / params.temperature
        if params.top_k and params.top_k < row.shape[0]:
            kth_value = torch.topk(row, params.top_k).values[-1]
            row = row.masked_fill(row < kth_value, float("-inf"))
        probs = torch.softmax(row, dim=-1)
        if params.top_p >= 1.0:
            return pick_by_uniform(probs[None].numpy(), [self.uniform()])[0]
        sorted_probs, order = torch.sort(probs, descending=True)
        # Keep the smallest prefix whose mass reaches top_p (always at least the top token).
        outside = (sorted_probs.cumsum(0) - sorted_probs) >= params.top_p
        sorted_probs = sorted_probs.masked_fill(outside, 0.0)
        return int(order[pick_by_uniform(sorted_probs[None].numpy(), [self.uniform()])[0]])

    def draw_among(self, logits: np.ndarray, allowed: np.ndarray) -> int:
        """One token of those in `allowed` (ids, ascending) from an already penalised logits row [V]: the
        distribution masked to them, without writing -inf over the rest of the row."""
        values = logits[allowed]
        if self.greedy:
            return int(allowed[np.argmax(values)])
        if not self.plain:  # top-k / top-p rank within the allowed tokens
            masked = np.full_like(logits, -np.inf)
            masked[allowed] = values
            return self.draw(torch.from_numpy(masked))
        weights = tempered_softmax_weights(values[None], np.array([self.params.temperature], dtype=values.dtype))
        return int(allowed[pick_by_uniform(weights, [self.uniform()])[0]])


PICK_BLOCK = 64  # tokens per block of the two-level search in pick_by_uniform


def pick_by_uniform(weights: np.ndarray, uniforms: list[float]) -> list[int]:
    """Inverse transform sampling of each row of `weights` [B, V] (non-negative, not necessarily normalised)
    with its own uniform number u in [0, 1): the token where the running sum of weights first exceeds u times
    the row's total. Two levels, because NumPy's cumulative sum is scalar code (~33 us for 8,192 weights):
    sums of 64-token blocks (vectorised), the running sum over blocks, then the one block's running sum.
    A token of zero weight (masked by a grammar, cut by top-p) is never picked: the search takes the first
    running sum strictly above the target, and a zero weight does not raise it."""
    rows, vocab = weights.shape
    padding = -vocab % PICK_BLOCK
    if padding:
        weights = np.concatenate([weights, np.zeros((rows, padding), weights.dtype)], axis=1)
    blocks = weights.reshape(rows, -1, PICK_BLOCK)
    block_sums = blocks.sum(axis=2)
    block_totals = np.cumsum(block_sums, axis=1)
    picks = []
    for row, u in enumerate(uniforms):
        totals = block_totals[row]
        if not totals[-1] > 0:  # no token has weight (NaN or all -inf logits): the first largest, or token 0
            picks.append(int(np.argmax(weights[row])))
            continue
        target = u * totals[-1]
        block = int(np.searchsorted(totals, target, side="right"))
        if block == len(totals) or block_sums[row, block] == 0:  # rounding reached the total: last real block
            block = int(np.flatnonzero(block_sums[row])[-1])
        inside = np.cumsum(blocks[row, block])
        offset = int(np.searchsorted(inside, target - (totals[block - 1] if block else 0.0), side="right"))
        if offset == PICK_BLOCK or blocks[row, block, offset] == 0:  # the same within the block
            offset = int(np.flatnonzero(blocks[row, block])[-1])
        picks.append(block * PICK_BLOCK + offset)
    return picks


def tempered_softmax_weights(logits: np.ndarray, temperatures: np.ndarray) -> np.ndarray:
    """exp((logits - row max) / temperature): each row's softmax up to its sum (-inf logits weigh 0)."""
    scaled = logits / temperatures[:, None]
    scaled -= scaled.max(axis=1, keepdims=True)
    return np.exp(scaled, out=scaled)


def argmax_rows(logits: torch.Tensor) -> list[int]:
    """The first index of each row's maximum (a NaN counts as the maximum), as torch.argmax. On the CPU
    through NumPy: torch's argmax took 100 us for [16, 8192] on 2 threads, NumPy's 9 us, and at 16
    concurrent greedy requests that was 15% of a decode step."""
    if logits.device.type == "cpu":
        return logits.detach().float().numpy().argmax(axis=-1).tolist()  # float(): NumPy has no bf16
    return logits.argmax(dim=-1).tolist()


def sample_next(logits: torch.Tensor, samplers: list[RowSampler]) -> list[int]:
    """Pick one token per row of `logits` [B, V] (modified in place by penalties and bans)."""
    for row, sampler in enumerate(samplers):
        if sampler.penalized:
            sampler.apply_penalties(logits[row])
        sampler.apply_bans(logits[row])
    if all(s.greedy for s in samplers):
        return argmax_rows(logits)
    tokens = [0] * len(samplers)
    # Rows are picked out in NumPy: torch's index kernel for a list of rows cost ~70 us even for one row.
    rows_view = logits.float().numpy()
    greedy_rows = [i for i, s in enumerate(samplers) if s.greedy]
    if greedy_rows:
        for row, token in zip(greedy_rows, rows_view[greedy_rows].argmax(axis=-1).tolist()):
            tokens[row] = token
    plain_rows = [i for i, s in enumerate(samplers) if s.plain]
    if plain_rows:
        temperatures = np.array([samplers[i].params.temperature for i in plain_rows], dtype=np.float32)
        weights = tempered_softmax_weights(rows_view[plain_rows], temperatures)
        for row, token in zip(plain_rows, pick_by_uniform(weights, [samplers[i].uniform() for i in plain_rows])):
            tokens[row] = token
    for row, sampler in enumerate(samplers):
        if not sampler.greedy and not sampler.plain:
            tokens[row] = sampler.draw(logits[row])
    return tokens
