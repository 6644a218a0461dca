"""Stop strings are matched on text across token boundaries and never emitted; stop token ids end a sample."""

from __future__ import annotations

import asyncio
import random

from nanoseek.engine import Request, SamplingParams
from nanoseek.engine.stop import StopStringMatcher


def test_matcher_holds_back_a_possible_start_and_releases_it_when_it_is_not_one():
    matcher = StopStringMatcher(["</ans>", "STOP"])
    assert matcher.push("hello <") == ("hello ", None)
    assert matcher.push("/a") == ("", None)
    assert matcher.push("x") == ("</ax", None)  # not a stop string after all: released in order
    assert matcher.push("ST") == ("", None)
    assert matcher.flush() == "ST"


def test_matcher_stops_inside_one_delta_and_across_many():
    matcher = StopStringMatcher(["</ans>"])
    assert matcher.push("a</ans>b") == ("a", "</ans>")
    matcher = StopStringMatcher(["</ans>"])
    pieces = ["4", "2<", "/", "an", "s", ">tail"]
    emitted = [matcher.push(p) for p in pieces]
    assert "".join(text for text, _ in emitted) == "42" and emitted[-1][1] == "</ans>"


def test_earliest_of_several_stop_strings_wins():
    matcher = StopStringMatcher(["cd", "abc"])  # the later-listed one occurs first
    assert matcher.push("xabcd") == ("x", "abc")


def prompt_of(length: int, seed: int) -> list[int]:
    rng = random.Random(seed)
    return [rng.randrange(3, 500) for _ in range(length)]


def test_engine_stops_on_a_string_split_across_tokens_and_does_not_emit_it(make_engine, checkpoint):
    engine = make_engine()
    tokenizer = checkpoint.tokenizer
    for seed in range(10):
        prompt = prompt_of(20, seed)
        [free] = engine.generate([Request(prompt, SamplingParams(max_tokens=30, temperature=0, ignore_eos=True))])
        pieces = [tokenizer.decode([t]) for t in free.token_ids]
        # A stop string made of the end of token 5 and the start of token 6 (both plain, non-empty text).
        if len(pieces[5]) < 2 or not pieces[6] or "\ufffd" in pieces[5] + pieces[6]:
            continue
        stop = pieces[5][-1] + pieces[6][0]
        expected = free.text[: free.text.find(stop)]
        [stopped] = engine.generate(
            [Request(prompt, SamplingParams(max_tokens=30, temperature=0, ignore_eos=True, stop=[stop]))]
        )
        assert stopped.finish_reason == "stop"
        assert stopped.text == expected and stop not in stopped.text

        # Streaming emits exactly the same text: the held-back start was never sent.
        async def stream_text(prompt: list[int] = prompt, stop: str = stop) -> str:
            return "".join(
                [
                    e.text
                    async for e in engine.stream(
                        Request(prompt, SamplingParams(max_tokens=30, temperature=0, ignore_eos=True, stop=[stop]))
                    )
                ]
            )

        assert asyncio.run(stream_text()) == expected
        return
    raise AssertionError("no greedy output had two plain tokens to split a stop string across")


def test_stop_token_ids_and_eos(make_engine):
    engine = make_engine()
    prompt = prompt_of(20, 3)
    [free] = engine.generate([Request(prompt, SamplingParams(max_tokens=12, temperature=0, ignore_eos=True))])
    stop_token = free.token_ids[4]
    first = free.token_ids.index(stop_token)
    [stopped] = engine.generate(
        [Request(prompt, SamplingParams(max_tokens=12, temperature=0, stop_token_ids=[stop_token]))]
    )
    assert stopped.finish_reason == "stop" and stopped.token_ids == free.token_ids[: first + 1]
    # The stop token counts as generated but adds no text.
    assert stopped.usage.completion_tokens == first + 1
    assert stopped.text == checkpoint_free_text(engine, free.token_ids[:first])


def checkpoint_free_text(engine, tokens: list[int]) -> str:
    return engine.tokenizer.decode(tokens)


def test_text_held_for_a_possible_stop_string_is_released_when_a_stop_token_ends_the_sample(make_engine):
    engine = make_engine()
    prompt = prompt_of(20, 4)
    [free] = engine.generate([Request(prompt, SamplingParams(max_tokens=12, temperature=0, ignore_eos=True))])
    stop_token = free.token_ids[6]
    first = free.token_ids.index(stop_token)
    before = engine.tokenizer.decode(free.token_ids[:first])
    assert before, "the greedy output starts with its stop token"
    # The text before the stop token ends like the start of this stop string, so it is held back...
    held_stop = before[-1] + "\x00never"
    [stopped] = engine.generate(
        [
            Request(
                prompt,
                SamplingParams(
                    max_tokens=12, temperature=0, ignore_eos=True, stop=[held_stop], stop_token_ids=[stop_token]
                ),
            )
        ]
    )
    # ...and released when the stop token ends the sample instead.
    assert stopped.finish_reason == "stop" and stopped.text == before
