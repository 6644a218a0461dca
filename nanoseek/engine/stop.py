"""Stop strings matched on decoded text, across token boundaries, never emitted.

A stop string can be split over several tokens ("</" + "answer>") or sit inside one token with text
before it. So the matcher works on text: each new delta is appended to the text held back so far; if a
stop string occurs, everything before its first occurrence is released and generation stops; otherwise
the longest tail that could still become the start of a stop string is held back and the rest released.
Held text is released when generation ends for another reason (it was not a stop string after all).

    matcher = StopStringMatcher(["###"])
    matcher.push("hello #")   # -> ("hello ", False)  "#" held back
    matcher.push("## more")   # -> ("", True)         stopped, nothing of the stop string emitted
"""

from __future__ import annotations


class StopStringMatcher:
    def __init__(self, stop_strings: list[str]) -> None:
        self.stop_strings = [s for s in stop_strings if s]
        self.held = ""

    def push(self, delta: str) -> tuple[str, str | None]:
        """Feed newly decoded text; return (text safe to emit, the stop string that was hit or None).
        Callers report which one matched (Anthropic's `stop_sequence`)."""
        if not self.stop_strings:
            return delta, None
        text = self.held + delta
        hits = [(at, stop) for stop in self.stop_strings if (at := text.find(stop)) >= 0]
        if hits:
            first_hit, stop = min(hits)
            self.held = ""
            return text[:first_hit], stop
        keep = self._longest_partial_suffix(text)
        self.held = text[len(text) - keep :] if keep else ""
        return text[: len(text) - keep], None

    def flush(self) -> str:
        """Generation ended without a stop string: release whatever was held back."""
        text, self.held = self.held, ""
        return text

    def _longest_partial_suffix(self, text: str) -> int:
        """Length of the longest suffix of `text` that is a proper prefix of some stop string."""
        best = 0
        for stop in self.stop_strings:
            for length in range(min(len(stop) - 1, len(text)), best, -1):
                if text.endswith(stop[:length]):
                    best = length
                    break
        return best
