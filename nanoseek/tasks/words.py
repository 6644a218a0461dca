"""Small shared vocabularies for the generated suites (kept short: the default model has a ~1-2k context).

Evaluation always draws from these lists. Training may draw from wider ones (`widened`): with a few dozen
words per slot a small model memorizes whole question -> answer pairs instead of learning to copy the word
it was asked about, and then fails on the held-out combinations of the very same words.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

NOUNS = """apple river planet garden window candle forest rocket pencil bridge castle dragon island jacket kitten
    lemon mirror needle orange pepper rabbit saddle ticket violin wallet yogurt zipper anchor basket cactus donkey
    engine falcon guitar hammer igloo jungle ladder magnet napkin oyster parrot quartz rubber silver tomato turtle
    velvet walnut beacon cookie desert feather glacier harbor lantern meadow pillow spider thunder""".split()
ADJECTIVES = """red blue quiet happy brave small large green bright cold warm soft loud quick slow sweet sharp round
    tall young old dark light wild""".split()
NAMES = """Ana Ben Chen Dara Eli Fatima Gus Hana Ivan Jo Kemal Lena Mia Noah Omar Priya Quinn Rosa Sam Tara Uma
    Victor Wen Yusuf Zoe""".split()
CITIES = """Paris Tokyo Lima Cairo Oslo Delhi Quito Seoul Rome Nairobi Hanoi Berlin Madrid Sydney Toronto Lagos
    Dublin Prague Vienna Manila""".split()
ITEMS_FOR_SALE = """pens apples books cups stickers notebooks oranges candles tickets""".split()


@contextmanager
def widened(extensions: list[tuple[list[str], list[str]]]) -> Iterator[None]:
    """Within the block, each `(vocabulary, extra)` pair has `extra` appended to that vocabulary list.

    The lists are extended in place because every generator imported the list objects themselves; they are
    restored on exit, so evaluation never sees a widened list. Generation is single-threaded, as is this.
    """
    originals = [list(vocabulary) for vocabulary, _extra in extensions]
    try:
        for vocabulary, extra in extensions:
            vocabulary.extend(word for word in extra if word not in vocabulary)
        yield
    finally:
        for (vocabulary, _extra), original in zip(extensions, originals):
            vocabulary[:] = original
