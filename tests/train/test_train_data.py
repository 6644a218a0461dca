"""Training data: deterministic from the seed, never held-out items or files, assistant-only loss masks.

nice -n 10 python3 -m pytest tests/train/test_train_data.py -x -q
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest

from nanoseek.tasks import generate, handwritten, heldout_wording_in
from nanoseek.tasks.stdlib_split import source_name, split_of_source, stdlib_files
from nanoseek.tasks.tools import TOOLS
from nanoseek.train import data
from nanoseek.train.recipe import load_recipe

COUNTS = {
    "instructions": 60,
    "math": 20,
    "code": 15,
    "tools": 15,
    "json": 15,
    "safety": 20,
    "fim": 15,
    "identity": 4,
    "spelling": 20,
    "multi_turn": 8,
    "python_qa": 30,
}


@pytest.fixture(scope="module")
def sft() -> data.Corpus:
    return data.sft_corpus(COUNTS, seed=7)


@pytest.fixture(scope="module")
def tokenizer(tiny_data: Path):
    from nanoseek.tokenizer.tokenizer import Tokenizer

    return Tokenizer.load(tiny_data / "tokenizer")


def user_texts(corpus: data.Corpus) -> set[str]:
    return {m["content"] for c in corpus.conversations for m in c.messages if m["role"] == "user"}


def first_user(conversation: data.Conversation) -> str:
    return next(m["content"] for m in conversation.messages if m["role"] == "user")


def test_same_seed_same_data_other_seed_other_data(sft: data.Corpus):
    again = data.sft_corpus(COUNTS, seed=7)
    assert [(c.messages, c.tools, c.thinking) for c in again.conversations] == [
        (c.messages, c.tools, c.thinking) for c in sft.conversations
    ]
    assert [(f.prefix, f.middle) for f in again.fim] == [(f.prefix, f.middle) for f in sft.fim]
    other = data.sft_corpus(COUNTS, seed=8)
    assert user_texts(other) != user_texts(sft)


def test_every_requested_kind_is_present(sft: data.Corpus):
    kinds = {c.source.split("/")[0].split(":")[0] for c in sft.conversations}
    assert {
        "instructions",
        "math",
        "code",
        "tools",
        "json",
        "safety",
        "identity",
        "spelling",
        "multi_turn",
        "python_qa",
    } <= kinds
    thinking = [c for c in sft.conversations if c.thinking]
    assert thinking and all("<think>" not in m.get("content", "") for c in thinking for m in c.messages)
    assert any(
        "Wait" in m.get("reasoning_content", "") or "check" in m.get("reasoning_content", "")
        for c in thinking
        for m in c.messages
    ), "thinking must show checking and correcting steps"
    assert any("nanoseek" in m["content"] for c in sft.conversations if c.source == "identity" for m in c.messages)


def test_thinking_items_train_a_no_thinking_copy_only_when_asked(sft: data.Corpus):
    direct = [c for c in sft.conversations if c.source.endswith(":direct")]
    thinking = [c for c in sft.conversations if c.thinking and c.source.startswith("math/")]
    assert len(direct) == len(thinking) and not any(c.thinking for c in direct)
    assert all("reasoning_content" not in m for c in direct for m in c.messages)
    without = data.sft_corpus(COUNTS, seed=7, direct_copies="none")
    assert not [c for c in without.conversations if c.source.endswith(":direct")]
    assert user_texts(without) == user_texts(sft)  # the same items, each once
    worked = data.sft_corpus(COUNTS, seed=7, direct_copies="worked").conversations
    worked = [c for c in worked if c.source.endswith(":direct")]
    assert len(worked) == len(direct)
    boxed = {first_user(c): re.search(r"\\boxed\{(.+?)\}", c.messages[-1]["content"]).group(1) for c in direct}
    for conversation in worked:  # the equations on one line and the same answer: no box, no step-by-step thought
        answer = conversation.messages[-1]["content"]
        assert "\\boxed" not in answer and "\n" not in answer and " = " in answer, answer
        assert answer.endswith(f"So the answer is {boxed[first_user(conversation)]}."), answer
    with pytest.raises(ValueError, match="direct_copies"):
        data.sft_corpus(COUNTS, seed=7, direct_copies=True)


def test_sft_never_contains_held_out_items(sft: data.Corpus):
    trained = user_texts(sft)
    for suite in data.SFT_SUITES:
        for seed in (0, 7):
            for item in generate(suite, "heldout", 40, seed):
                first_user = next(m["content"] for m in item.messages if m["role"] == "user")
                assert first_user not in trained, f"held-out {item.id} leaked into SFT data"
    for example in sft.fim:
        assert split_of_source(example.source.removeprefix("fim:")) == "train", example.source


def test_training_data_never_uses_a_held_out_wording(sft: data.Corpus):
    """The phrasing split's templates and the hand-written items never reach training: not in SFT (evaluator
    words, widened words, safety's training-only values), not in RL's prompt pools."""
    from nanoseek.train.rl import RLConfig, item_pools

    widened = data.sft_corpus({suite: 40 for suite in data.SFT_SUITES} | {"multi_turn": 10}, seed=9, widened_share=1)
    texts = [
        str(message.get(field, ""))
        for corpus in (sft, widened)
        for conversation in corpus.conversations
        for message in conversation.messages
        for field in ("content", "reasoning_content")
    ]
    pools = item_pools(RLConfig(steps=1, pool=150, mixture=dict.fromkeys(data.SFT_SUITES, 1.0)))
    texts += [item.prompt_text() for pool in pools.values() for item in pool]
    assert len(texts) > 1500
    leaks = [(text, heldout_wording_in(text)) for text in texts if heldout_wording_in(text)]
    assert not leaks, leaks[:3]
    written = {row["prompt"] for row in handwritten.rows()}
    assert not written & set(texts)  # nor any hand-written question


def test_no_knowledge_question_is_in_the_smol_recipes_sft_data_or_self_distillation_requests():
    """General knowledge measures what the base knew before post-training: none of its hand-written questions
    (case and spacing ignored) may be, or be inside, a user message of the smol recipe's SFT mixture or any
    request self-distillation can draw (every topic in every shape, whatever the seed)."""
    from nanoseek.train import self_distill
    from nanoseek.train.recipe import load_recipe, stage_seed, stage_settings

    def normal(text: str) -> str:
        return " ".join(text.split()).casefold()

    recipe = load_recipe("smol")
    sft_settings = stage_settings(recipe, "sft")
    mixture = {kind: count for kind, count in sft_settings["mixture"].items() if kind not in data.SELF_DISTILL_SOURCES}
    corpus = data.sft_corpus(
        mixture,
        stage_seed(recipe, "sft"),
        sft_settings.get("widened_share", 0.0),
        direct_copies=sft_settings.get("direct_copies", "answer"),
    )
    requests = [shape.format(topic=topic) for topic in self_distill.topics() for shape in self_distill.REQUEST_SHAPES]
    requests += self_distill.data_lines(self_distill.QUESTIONS_FILE)
    assert set(self_distill.general_requests(recipe["base"]["self_distill"]["requests"], recipe["seed"])) <= set(
        requests
    )
    trained = [normal(text) for text in user_texts(corpus) | set(requests)]
    assert len(trained) > 3000
    questions = [normal(row["prompt"]) for row in handwritten.rows() if row["suite"] == "knowledge"]
    assert len(questions) >= 120
    assert not [question for question in questions if any(question in text for text in trained)]


def test_a_mixture_naming_no_suite_is_refused():
    with pytest.raises(ValueError, match="math_problems"):
        data.sft_corpus({"math_problems": 5}, seed=7)


def test_pretraining_text_is_deterministic_and_comes_only_from_train_files():
    counts = {"code_files": 12, "python_qa": 200, "fim": 10}
    corpus = data.pretrain_corpus(counts, seed=3)
    again = data.pretrain_corpus(counts, seed=3)
    assert again.texts == corpus.texts and [(f.prefix, f.middle) for f in again.fim] == [
        (f.prefix, f.middle) for f in corpus.fim
    ]
    heldout_sources = {p.read_text(encoding="utf-8") for p in stdlib_files("heldout")}
    assert len(corpus.texts) >= 10
    assert not any(text.split("\n", 1)[1] in heldout_sources for text in corpus.texts)
    for conversation in corpus.conversations:
        path = Path(conversation.source.removeprefix("python_qa:"))
        assert split_of_source(source_name(path)) == "train"
    assert all(split_of_source(f.source.removeprefix("fim:")) == "train" for f in corpus.fim)


def test_loss_mask_covers_exactly_the_assistant_turns(sft: data.Corpus, tokenizer):
    tool_chat = next(c for c in sft.conversations if c.tools and c.source.startswith("tools"))
    ((ids, mask),) = data.conversation_documents(tool_chat, tokenizer)
    assert tokenizer.encode(tokenizer.decode(ids)) == ids, "piecewise encoding must equal whole-text encoding"
    targets = tokenizer.decode([i for i, m in zip(ids, mask) if m])
    call = next(m for m in tool_chat.messages if m.get("tool_calls"))["tool_calls"][0]["function"]["name"]
    final = tool_chat.messages[-1]["content"]
    tool_output = next(m for m in tool_chat.messages if m["role"] == "tool")["content"]
    assert call in targets and targets.endswith(final + "<｜end▁of▁sentence｜>")
    assert tool_output not in targets and "## Tools" not in targets
    question = (
        tool_chat.messages[0]["content"]
        if tool_chat.messages[0]["role"] == "user"
        else next(m["content"] for m in tool_chat.messages if m["role"] == "user")
    )
    assert question not in targets


def test_thinking_chat_trains_reasoning_and_multi_turn_trains_every_answer(sft: data.Corpus, tokenizer):
    thinking = next(c for c in sft.conversations if c.thinking)
    ((ids, mask),) = data.conversation_documents(thinking, tokenizer)
    targets = tokenizer.decode([i for i, m in zip(ids, mask) if m])
    assert targets.startswith(thinking.messages[-1]["reasoning_content"][:20]) and "</think>" in targets
    chat = next(c for c in sft.conversations if c.source == "multi_turn")
    documents = data.conversation_documents(chat, tokenizer)
    targets = "".join(tokenizer.decode([i for i, m in zip(ids, mask) if m]) for ids, mask in documents)
    for message in chat.messages:
        if message["role"] == "assistant":
            assert message["content"] + "<｜end▁of▁sentence｜>" in targets


def test_fim_documents_end_with_the_middle_and_eos(sft: data.Corpus, tokenizer):
    example = sft.fim[0]
    ids, mask = data.fim_document(example, tokenizer, train_prompt=False)
    assert tokenizer.decode([i for i, m in zip(ids, mask) if m]) == example.middle + "<｜end▁of▁sentence｜>"
    assert tokenizer.decode(ids).startswith("<｜begin▁of▁sentence｜><｜fim▁begin｜>")


def test_a_widened_share_trains_on_words_evaluation_never_sees(sft: data.Corpus):
    from nanoseek.tasks import tools, words

    before = [list(v) for v in (words.NOUNS, words.NAMES, words.CITIES, tools.CURRENCIES)]
    vocabulary = data.training_vocabulary(seed=7)
    with words.widened(vocabulary):
        assert len(words.NOUNS) > 10 * len(before[0]) and len(tools.CURRENCIES) > 10 * len(before[3])
    assert [words.NOUNS, words.NAMES, words.CITIES, tools.CURRENCIES] == before
    # Made-up cities of two or three syllables ("Tavoli"): unlike one-syllable made-up names ("Be"), they do
    # not turn up in ordinary questions by chance.
    extra_cities = {w for vocabulary_list, extra in vocabulary if vocabulary_list is words.CITIES for w in extra}
    extra_cities -= set(words.CITIES) | set(words.NAMES)

    def asks_an_extra_name(corpus: data.Corpus) -> bool:
        return any(token.strip(".,?'") in extra_cities for token in " ".join(user_texts(corpus)).split())

    # By default (share 0) every suite uses the evaluator's own lists; with a share, some questions name a
    # value that only the widened lists hold.
    assert not asks_an_extra_name(sft)
    assert asks_an_extra_name(data.sft_corpus(COUNTS, seed=7, widened_share=0.5))
    with pytest.raises(ValueError, match="widened_share"):
        data.sft_corpus(COUNTS, seed=7, widened_share=1.5)


def test_safety_tops_up_from_slot_values_the_evaluator_never_asks_about(sft: data.Corpus):
    from nanoseek.tasks import safety

    tables = {**safety.HARMFUL, **safety.BENIGN}
    assert set(data.SAFETY_SLOT_VALUES) == set(tables)  # every kind, harmful and harmless, is topped up
    # None of them in the evaluator's lists (which also shows the corpus built above left those lists as they were).
    for kind, values in data.SAFETY_SLOT_VALUES.items():
        assert not set(values) & set(tables[kind][1]), kind
    # The corpus asks about the training-only values, in harmful and in harmless requests alike.
    asked = " ".join(user_texts(sft))
    topped_up = {kind for kind, values in data.SAFETY_SLOT_VALUES.items() if any(value in asked for value in values)}
    assert topped_up & set(safety.HARMFUL) and topped_up & set(safety.BENIGN), topped_up
    held_out = {
        next(m["content"] for m in item.messages if m["role"] == "user") for item in safety.generate("heldout", 84, 0)
    }  # all of them
    assert not held_out & user_texts(sft)


def test_spelling_spells_training_words_only(sft: data.Corpus):
    from nanoseek.tasks import tools, words

    spelled = [c.messages for c in sft.conversations if c.source == "spelling"]
    assert len(spelled) == COUNTS["spelling"]
    for question, answer in spelled:
        assert answer["content"] == " ".join(question["content"].split("'")[1])
    # The whole pool, not a sample: no word of any evaluator list (names and cities that made-up words hit
    # by chance included) can be spelled in training.
    pool = data.spellable_words(data.training_vocabulary(seed=7))
    eval_lists = (
        words.NOUNS,
        words.ADJECTIVES,
        words.NAMES,
        words.CITIES,
        words.ITEMS_FOR_SALE,
        tools.CURRENCIES,
        tools.TICKERS,
    )
    evaluated = {w.lower() for eval_list in eval_lists for w in eval_list}
    assert len(pool) > 1000 and not evaluated & set(pool)
    assert {q["content"].split("'")[1] for q, _a in spelled} <= set(pool)


def test_the_smol_recipes_tool_conversations_call_every_function_equally():
    """Recipe smol's runs up to 8 trained 7 get_stock_price calls against 185 create_event ones in 500 tool
    conversations (the train split drew distinct calls, and there are eight tickers); now every function is called
    in a seventh of them, each conversation a distinct request (a call asked in another wording, or offered among
    other tools, is another request)."""
    recipe = load_recipe("smol")
    wanted = recipe["sft"]["mixture"]["tools"]
    conversations = data.sft_corpus({"tools": wanted}, recipe["seed"]).conversations
    calls = Counter(c.messages[1]["tool_calls"][0]["function"]["name"] for c in conversations)
    assert len(conversations) == wanted and sorted(calls) == sorted(TOOLS)
    assert max(calls.values()) - min(calls.values()) <= 1, calls
    assert len({(first_user(c), json.dumps(c.tools)) for c in conversations}) == wanted
