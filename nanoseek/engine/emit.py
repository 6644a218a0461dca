"""The engine's emitter: a step's logits become each sequence's next token (sampling, grammar), and tokens
become the events a caller sees (text without half characters or stop strings, logprobs, finish reasons).

Sampling (`sampling.py`) runs in NumPy; a grammar (`constraint.py`) is consulted the cheap way round, see
`Emitter._enforce_grammar`. A sequence ends on a stop token, a stop string, a completed grammar,
`max_tokens` or a full slot; its last event carries the request's usage once its group is done.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from nanoseek.engine.constraint import GrammarBackend, allowed_token_ids
from nanoseek.engine.params import StreamEvent, TokenLogprob, TopLogprob, Usage
from nanoseek.engine.sampling import sample_next
from nanoseek.engine.scheduler import Sequence
from nanoseek.tokenizer.tokenizer import Tokenizer


class Emitter:
    def __init__(
        self,
        tokenizer: Tokenizer,
        *,
        vocab_size: int,
        slot_capacity: int,
        grammar_backend: Callable[[], GrammarBackend],
        retire: Callable[[Sequence], Usage | None],
    ) -> None:
        self.tokenizer, self.vocab_size, self.slot_capacity = tokenizer, vocab_size, slot_capacity
        self.grammar_backend = grammar_backend
        self.retire = retire  # frees a finished sequence; the request's usage when it was the last
        self._token_text: dict[int, tuple[str, list[int]]] = {}

    def emit(self, sequences: list[Sequence], logits: torch.Tensor) -> None:
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
        # (Scheduler.retire), so when several finish in one step, those above them are retired before they
        # would move.
        for row in sorted(range(len(sequences)), key=lambda row: sequences[row].slot, reverse=True):
            self._accept(sequences[row], tokens[row], logprobs.get(row))

    def _enforce_grammar(
        self, logits: torch.Tensor, sequences: list[Sequence], rows: list[int], tokens: list[int]
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
        bitmask, logits_rows = self.grammar_backend().bitmask, logits.numpy()
        for row in redraw:
            sequence = sequences[row]
            allowed = allowed_token_ids(sequence.matcher, bitmask, row, self.vocab_size)
            if allowed is not None and sequence.sampler.banned is not None:
                # a banned token's -inf logit does not keep it out where every allowed token is -inf (an argmax
                # takes the first): it is not allowed at all, and a grammar that allows nothing else ends here
                allowed = np.setdiff1d(allowed, sequence.sampler.banned, assume_unique=True)
            if allowed is not None and len(allowed):  # (None: every token allowed, the first draw stands)
                # Penalties and bans were applied to this row by the first draw.
                tokens[row] = sequence.sampler.draw_among(logits_rows[row], allowed)
            # No token allowed at all, or (never expected) the grammar refusing a token its own bitmask allowed:
            # _accept ends the sequence rather than letting the matcher fall out of step with the output.
            nothing_allowed = allowed is not None and not len(allowed)
            sequence.grammar_dead_end = nothing_allowed or not sequence.matcher.accept_token(tokens[row])

    def _accept(self, sequence: Sequence, token: int, logprob: TokenLogprob | None) -> None:
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
            elif len(sequence.tokens) >= params.max_tokens or sequence.length >= self.slot_capacity:
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
            event.usage = self.retire(sequence)
        group.sink(event)

    @staticmethod
    def _release_held_text(sequence: Sequence) -> str:
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
