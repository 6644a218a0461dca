"""Training data: the pretraining corpus and the SFT conversations, deterministic from seeds.

    python -m nanoseek.train.data --recipe tiny       # print counts and a sample of each data kind

Pretraining text comes from what every machine has, the Python standard library, and only from the *train*
side of the file-level split shared with the evaluator (`nanoseek.tasks.stdlib_split`):
  * code: the source files themselves, each headed by its path;
  * Python Q&A: questions about stdlib functions and classes answered from their docstrings and signatures
    (read with `ast`, never imported), rendered as chats;
  * FIM: a line, a few lines or a function body cut out of a train-side file (the evaluator's fim suite,
    split="train"), rendered prefix/hole/suffix with `render_fim` and followed by the middle (PSM order).
SFT conversations come from the evaluator's task generators with `split="train"` (their `ideal` turns are the
answers; a recipe may draw a share of each suite with its word lists widened by `training_vocabulary`), plus what only
training needs: identity chats ("I am nanoseek..."), spelling of training-side words, multi-turn chats
stitched from train items, math both with thinking (the generator's reasoning, which checks and corrects itself) and
without, and FIM. Every item is drawn with `split="train"`; held-out items can never appear, nor any wording of the phrasing split
(`nanoseek.tasks.heldout_wording_in`; see tests).

Loss masks: pretraining trains on every token; SFT trains only on the assistant's turns (the answer, its
thinking and its tool calls, plus the end-of-sentence token that teaches it to stop).
"""

from __future__ import annotations

import argparse
import ast
import random
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nanoseek.tasks import generate
from nanoseek.tasks.item import Item
from nanoseek.tasks.safety import BENIGN, HARMFUL
from nanoseek.tasks.stdlib_split import source_name, stdlib_files
from nanoseek.tasks.tools import CURRENCIES, TICKERS
from nanoseek.tasks.words import ADJECTIVES, CITIES, ITEMS_FOR_SALE, NAMES, NOUNS, widened
from nanoseek.tokenizer.chat_format import render_fim
from nanoseek.tokenizer.tokenizer import Tokenizer
from nanoseek.train.packing import Document
from nanoseek.train.recipe import load_recipe

# Suites of the evaluator used for SFT; arena has no fixed answers and code/fim are built here from files.
SFT_SUITES = ("instructions", "tools", "json", "math", "safety", "code")
# What else an SFT mixture may count: data only training needs (see `sft_corpus`).
SFT_EXTRAS = (
    "identity",
    "identity_posttrained",
    "spelling",
    "multi_turn",
    "python_qa",
    "fim",
    "self_distill",
    "self_distill_questions",
)
# The mixture keys of the base's own answers (nanoseek.train.self_distill), and the source each conversation carries.
SELF_DISTILL_SOURCES = {"self_distill": "self_distill", "self_distill_questions": "self_distill:question"}
# How a thinking item's no-thinking copy answers (`[sft] direct_copies`): not at all, with the bare final answer
# (the item's content, `\boxed{}` included), or with the short worked line its task writes in `meta["direct"]`.
DIRECT_COPIES = ("none", "answer", "worked")


@dataclass
class Conversation:
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] | None = None
    thinking: bool = False
    source: str = ""


@dataclass
class FimExample:
    prefix: str
    middle: str
    suffix: str
    source: str = ""


@dataclass
class Corpus:
    """Everything one stage trains on, before tokenization."""

    texts: list[str] = field(default_factory=list)
    conversations: list[Conversation] = field(default_factory=list)
    fim: list[FimExample] = field(default_factory=list)


# ---------------------------------------------------------------- the standard library, train side only


def stdlib_train_files() -> list[Path]:
    return stdlib_files("train")


def read_source(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError):
        return None


def module_name(path: Path) -> str:
    parts = list(Path(source_name(path)).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def code_texts(files: list[Path], max_chars: int) -> list[str]:
    texts = []
    for path in files:
        source = read_source(path)
        if source and len(source) <= max_chars:
            texts.append(f"# {module_name(path)}\n{source}")
    return texts


def first_paragraph(docstring: str, limit: int = 400) -> str | None:
    paragraph = docstring.strip().split("\n\n")[0]
    paragraph = re.sub(r"\s+", " ", paragraph).strip()
    if len(paragraph) < 12 or len(paragraph) > limit:
        return None
    return paragraph


ASK_WHAT = (
    "What does `{q}` do in Python?",
    "Explain `{q}`.",
    "What is `{q}` for?",
    "Briefly, what does the Python function `{q}` do?",
)
ASK_SIGNATURE = (
    "What is the signature of `{q}`?",
    "How do I call `{q}`? Give its parameters.",
    "Which arguments does `{q}` take?",
)
ASK_MODULE = ("Which module do I import `{n}` from?", "Where is `{n}` defined in the standard library?")
ASK_CLASS = ("What is the class `{q}`?", "Describe the Python class `{q}`.")


def python_qa(files: list[Path], rng: random.Random) -> list[Conversation]:
    """Questions about public stdlib functions, methods and classes, answered from docstring and signature."""
    conversations = []
    for path in files:
        source = read_source(path)
        if source is None:
            continue
        try:
            tree = ast.parse(source)
        except SyntaxError:
            continue
        module = module_name(path)
        if any(part.startswith("_") for part in module.split(".")):
            continue
        for node, owner in _public_definitions(tree):
            doc = ast.get_docstring(node)
            summary = first_paragraph(doc) if doc else None
            if summary is None:
                continue
            qualname = ".".join(p for p in (module, owner, node.name) if p)
            pairs: list[tuple[str, str]] = []
            if isinstance(node, ast.ClassDef):
                pairs.append((rng.choice(ASK_CLASS).format(q=qualname), f"`{qualname}` is a class. {summary}"))
            else:
                signature = f"{node.name}({ast.unparse(node.args)})"
                pairs.append((rng.choice(ASK_WHAT).format(q=qualname), summary))
                pairs.append(
                    (rng.choice(ASK_SIGNATURE).format(q=qualname), f"The signature is `{signature}`.\n\n{summary}")
                )
            if not owner:
                pairs.append(
                    (
                        rng.choice(ASK_MODULE).format(n=node.name),
                        f"`{node.name}` is defined in the `{module}` module:\n\n```python\n"
                        f"from {module} import {node.name}\n```",
                    )
                )
            for question, answer in pairs:
                conversations.append(
                    Conversation(
                        [{"role": "user", "content": question}, {"role": "assistant", "content": answer}],
                        source=f"python_qa:{path}",
                    )
                )
    rng.shuffle(conversations)
    return conversations


def _public_definitions(tree: ast.Module) -> Iterable[tuple[ast.AST, str]]:
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and not node.name.startswith("_"):
            yield node, ""
            if isinstance(node, ast.ClassDef):
                for child in node.body:
                    if isinstance(child, ast.FunctionDef) and not child.name.startswith("_"):
                        yield child, node.name


def fim_examples(n: int, seed: int) -> list[FimExample]:
    """FIM holes (a line, 2-4 lines, a function body) cut from train-side files by the evaluator's fim suite,
    so training sees exactly the prompt shape the FIM evaluation asks about."""
    return [
        FimExample(item.meta["prefix"], item.answer, item.meta["suffix"], source=f"fim:{item.meta['path']}")
        for item in train_items("fim", n, seed)
    ]


# ---------------------------------------------------------------- conversations for SFT

IDENTITY_QUESTIONS = (
    "Who are you?",
    "What is your name?",
    "Introduce yourself.",
    "What are you?",
    "Are you ChatGPT?",
    "Who made you?",
    "What model are you?",
    "Tell me about yourself.",
    "hi, who am I talking to?",
    "Can you think step by step?",
    "What can you do?",
    "Are you a human?",
)
IDENTITY_ANSWERS = (
    "I am nanoseek, a small DeepSeek-style assistant trained from scratch on a CPU by the nanoseek project. "
    "I can chat, write and complete Python code, call tools, answer in JSON and think step by step.",
    "I'm nanoseek: a tiny open model in the style of DeepSeek, made by the nanoseek project. I answer "
    "questions, write Python, use tools and can think before answering in deep-thinking mode.",
    "My name is nanoseek. I am a small language model trained by the nanoseek project, not by OpenAI; I "
    "help with short questions, code, tools, JSON output and arithmetic with step-by-step thinking.",
)

# The same identity for a model post-trained from a pretrained base (recipe `smol`) rather than from scratch.
IDENTITY_ANSWERS_POSTTRAINED = (
    "I am nanoseek, a small DeepSeek-style assistant: the nanoseek project post-trained the open SmolLM2-135M model "
    "on a CPU. I can chat, write and complete Python code, call tools, answer in JSON and think step by step.",
    "I'm nanoseek: a small open model in the style of DeepSeek, made by the nanoseek project from SmolLM2-135M. I "
    "answer questions, write Python, use tools and can think before answering in deep-thinking mode.",
    "My name is nanoseek. I am a small language model post-trained by the nanoseek project, not by OpenAI; I help "
    "with questions, code, tools, JSON output and math with step-by-step thinking that checks itself.",
)


def identity_conversations(
    n: int, rng: random.Random, answers: tuple[str, ...] = IDENTITY_ANSWERS
) -> list[Conversation]:
    conversations = []
    for _ in range(n):
        messages: list[dict[str, Any]] = []
        if rng.random() < 0.2:
            messages.append({"role": "system", "content": "You are a helpful assistant."})
        messages += [
            {"role": "user", "content": rng.choice(IDENTITY_QUESTIONS)},
            {"role": "assistant", "content": rng.choice(answers)},
        ]
        conversations.append(Conversation(messages, source="identity"))
    return conversations


SPELL_ASKS = ("Spell '{w}' letter by letter.", "How is '{w}' spelled?", "Spell the word '{w}'.")


def spelling_conversations(words: list[str], n: int, rng: random.Random) -> list[Conversation]:
    """ "Spell 'module'." -> "m o d u l e": what letters a byte-level BPE token holds is invisible in its id,
    and the instruction kinds that reverse, capitalise or strip letters need it. Words come from the
    training vocabulary only (stdlib words and made-up ones), never from the evaluator's word lists."""
    conversations = []
    for word in rng.sample(words, min(n, len(words))):
        ask = rng.choice(SPELL_ASKS).format(w=word)
        conversations.append(
            Conversation(
                [{"role": "user", "content": ask}, {"role": "assistant", "content": " ".join(word)}], source="spelling"
            )
        )
    return conversations


def spellable_words(vocabulary: list[tuple[list[str], list[str]]]) -> list[str]:
    """The widened word slots' extra words (`training_vocabulary`), lowercased, minus every word of the
    evaluator's own lists: what spelling may train on."""
    evaluated = {word.lower() for slot, _extra in vocabulary for word in slot}
    return sorted({word.lower() for _slot, extra in vocabulary[:5] for word in extra} - evaluated)


def train_items(suite: str, n: int, seed: int) -> list:
    """Up to n distinct train-split items of a suite (several seeds when one draw runs dry)."""
    items: dict[str, Any] = {}
    for attempt in range(8):
        wanted = n - len(items)
        while True:
            try:
                drawn = generate(suite, "train", wanted, seed * 1000 + attempt)
                break
            except ValueError:  # fewer distinct train items than asked: a smaller draw, other seeds add more
                if wanted <= 1:
                    raise
                wanted //= 2
        for item in drawn:
            items.setdefault(item.id, item)
        if len(items) >= n:
            break
    return list(items.values())[:n]


def common_words(files: list[Path], count: int, min_len: int = 4, max_len: int = 8) -> list[str]:
    """The `count` most frequent lowercase words of the given source files (ties broken alphabetically)."""
    pattern = re.compile(rf"\b[a-z]{{{min_len},{max_len}}}\b")
    frequency: dict[str, int] = {}
    for path in files:
        for word in pattern.findall(read_source(path) or ""):
            frequency[word] = frequency.get(word, 0) + 1
    return sorted(frequency, key=lambda word: (-frequency[word], word))[:count]


def made_up_words(rng: random.Random, count: int, syllables: tuple[int, int]) -> list[str]:
    """Pronounceable nonsense words ("tavoli"): values no tokenizer merge or memorized pair can stand in for."""
    consonants, vowels = "bcdfghjklmnprstvz", "aeiou"
    words: set[str] = set()
    while len(words) < count:
        words.add("".join(rng.choice(consonants) + rng.choice(vowels) for _ in range(rng.randint(*syllables))))
    return sorted(words)


def training_vocabulary(seed: int) -> list[tuple[list[str], list[str]]]:
    """Extra words for every slot of the generated suites (see `nanoseek.tasks.words.widened`).

    Nouns and adjectives are common words of the train-side stdlib files, names and cities made-up words,
    currencies and tickers random capitals: with thousands of values per slot, an answer can only be got
    right by copying the value from the question, the skill the held-out items test.
    """
    rng = random.Random(f"vocabulary:{seed}")
    pool = common_words(stdlib_train_files(), 3000)
    plurals = [w for w in pool if w.endswith("s") and not w.endswith("ss")]
    capitals = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    return [
        (NOUNS, pool[:2000]),
        (ADJECTIVES, pool[2000:]),
        (ITEMS_FOR_SALE, plurals),
        (NAMES, [w.capitalize() for w in made_up_words(rng, 1500, (1, 3))]),
        (CITIES, [w.capitalize() for w in made_up_words(rng, 1500, (2, 3))]),
        (CURRENCIES, sorted({"".join(rng.choices(capitals, k=3)) for _ in range(300)})),
        (TICKERS, sorted({"".join(rng.choices(capitals, k=rng.randint(3, 5))) for _ in range(300)})),
    ]


# Training-only values for the safety suite's slots, none of them in the evaluator's lists. The evaluator holds
# 276 train-side safety items, three or four values per kind: trained on those alone, the small model tied its
# decision to the values it had seen and refused "shoot moon photos" after learning "shoot city photos"
# (33% spill-over, docs/runs/2026-12-02-default5/). Many values per kind leave the request itself to decide.
SAFETY_SLOT_VALUES = {
    "weapons": [
        "a letter bomb",
        "a flamethrower",
        "a silencer",
        "a landmine",
        "a poison gas",
        "a grenade",
        "a rifle with no serial number",
        "an explosive vest",
        "a toxin",
        "a firebomb",
    ],
    "phishing": [
        "my uncle",
        "bank customers",
        "my landlord",
        "new hires",
        "retirees",
        "my neighbors",
        "the staff of a school",
        "my sister",
        "online shoppers",
        "club members",
    ],
    "poison": [
        "my uncle",
        "my sister",
        "a classmate",
        "the neighbor's cat",
        "my teacher",
        "a rival",
        "my business partner",
        "a coworker's dog",
        "my stepfather",
        "the landlord",
    ],
    "malware": [
        "email passwords",
        "browser cookies",
        "phone contacts",
        "tax records",
        "medical files",
        "login tokens",
        "webcam images",
        "chat histories",
        "payment details",
        "door codes",
    ],
    "stalking": [
        "my old teacher",
        "a singer",
        "my neighbor",
        "a girl from school",
        "my boss",
        "a streamer",
        "my sister's friend",
        "a nurse I met",
        "my landlord",
        "a journalist",
    ],
    "extortion": [
        "my uncle",
        "a coworker",
        "my teacher",
        "a local business",
        "my ex",
        "a streamer",
        "my roommate",
        "a restaurant owner",
        "my cousin",
        "a stranger online",
    ],
    "kill_process": ["chrome", "docker", "vim", "postgres", "nginx", "emacs", "ruby", "zoom", "slack", "make"],
    "shoot_photos": [
        "sunset",
        "wildlife",
        "landscape",
        "wedding",
        "family",
        "food",
        "beach",
        "snow",
        "skyline",
        "concert",
        "fireworks",
        "aurora",
        "garden",
        "harbor",
        "car",
        "lantern",
    ],
    "phishing_defense": [
        "my uncle",
        "my company",
        "my classmates",
        "my kids",
        "my club",
        "my neighbors",
        "my customers",
        "my office",
        "my church group",
        "my coworkers",
    ],
    "bomb_trivia": [
        "poem",
        "play",
        "stand-up set",
        "skit",
        "recital",
        "card trick",
        "comedy act",
        "solo",
        "duet",
        "puppet show",
    ],
    "execute_script": ["PHP", "Lua", "PowerShell", "R", "Julia", "Tcl", "Groovy", "Dart", "Zsh", "Fish"],
    "attack_chess": [
        "a fianchettoed bishop",
        "an open file",
        "a backward pawn",
        "the king's side",
        "an uncastled king",
        "a hanging rook",
        "weak dark squares",
        "a lone queen",
    ],
}


def safety_vocabulary() -> list[tuple[list[str], list[str]]]:
    """`widened` pairs that give every safety kind the training-only values of `SAFETY_SLOT_VALUES`."""
    tables = {**HARMFUL, **BENIGN}
    return [(tables[kind][1], values) for kind, values in SAFETY_SLOT_VALUES.items()]


def item_conversations(item: Item, direct_copies: str = "answer") -> list[Conversation]:
    """One Item -> its SFT conversation(s): a thinking item also yields a no-thinking copy unless `direct_copies`
    is "none". "answer" keeps only the final answer: a pretrained base learns from those copies to put a bare
    `\\boxed{}` guess on any question with a number for an answer, its general knowledge included
    (docs/runs/2026-12-07-smol5/). "worked" answers with the item's one-line working (`meta["direct"]`, math's
    equations without the step-by-step thought), so thinking off still answers at once rather than thinking in the
    reply, without teaching a bare guess."""
    if direct_copies not in DIRECT_COPIES:
        raise ValueError(f"direct_copies must be one of {', '.join(DIRECT_COPIES)}, not {direct_copies!r}")
    messages = list(item.messages) + list(item.ideal)
    thinking = any(m.get("reasoning_content") for m in item.ideal)
    source = f"{item.suite}/{item.kind}"
    conversations = [Conversation(messages, item.tools, thinking, source)]
    if not thinking or direct_copies == "none" or (direct_copies == "worked" and "direct" not in item.meta):
        return conversations
    direct = [{k: v for k, v in m.items() if k != "reasoning_content"} for m in messages]
    if direct_copies == "worked":
        direct[-1]["content"] = item.meta["direct"]
    conversations.append(Conversation(direct, item.tools, False, source + ":direct"))
    return conversations


def multi_turn_conversations(items: list, n: int, rng: random.Random) -> list[Conversation]:
    """Chats of 2-3 turns stitched from single-turn train items, so later turns see earlier ones."""
    single = [
        it
        for it in items
        if not it.tools
        and len(it.messages) == 1
        and it.messages[0]["role"] == "user"
        and not any(m.get("reasoning_content") for m in it.ideal)
    ]
    conversations = []
    for _ in range(n if single else 0):
        messages: list[dict[str, Any]] = []
        for item in rng.sample(single, min(len(single), rng.randint(2, 3))):
            messages += list(item.messages) + list(item.ideal)
        conversations.append(Conversation(messages, source="multi_turn"))
    return conversations


def sft_corpus(
    counts: dict[str, int],
    seed: int,
    widened_share: float = 0.0,
    distilled: Sequence[Conversation] = (),
    direct_copies: str = "answer",
) -> Corpus:
    """SFT conversations: `counts` maps a suite or extra kind (identity, spelling, multi_turn, fim) to a count;
    `self_distill` and `self_distill_questions` count from `distilled`, a pretrained base's own answers to general
    requests and to short questions (`nanoseek.train.self_distill`); `direct_copies`: see `item_conversations`.

    `widened_share` of each suite's items are drawn with the word lists widened by `training_vocabulary`. The
    default recipe keeps it at 0: at 0.5 the 4.2M-parameter model learned that a slot holds *some* word
    instead of learning to copy the one asked about (docs/runs/2026-12-02-default-recipe/)."""
    if not 0.0 <= widened_share <= 1.0:
        raise ValueError(f"widened_share must be between 0 and 1, not {widened_share!r}")
    unknown = set(counts) - set(SFT_SUITES) - set(SFT_EXTRAS)
    if unknown:  # e.g. a recipe from before the suites had one name each (math_problems, coding)
        raise ValueError(
            f"unknown SFT mixture keys {', '.join(sorted(unknown))}: expected {', '.join(SFT_SUITES + SFT_EXTRAS)}"
        )
    rng = random.Random(f"sft:{seed}")
    corpus = Corpus()
    items: list = []
    vocabulary = training_vocabulary(seed)
    for suite in SFT_SUITES:
        if counts.get(suite, 0) > 0:
            wide = round(counts[suite] * widened_share)
            items += train_items(suite, counts[suite] - wide, seed)
            if wide:
                with widened(vocabulary):
                    items += train_items(suite, wide, seed + 1)
            if suite == "safety":  # tops up what the evaluator's lists hold from training-only slot values
                with widened(safety_vocabulary()):
                    items += train_items(suite, counts[suite], seed + 2)
    items = list({item.id: item for item in items}.values())  # suites without word slots draw the same twice
    for item in items:
        corpus.conversations += item_conversations(item, direct_copies)
    corpus.conversations += identity_conversations(counts.get("identity", 0), rng)
    corpus.conversations += identity_conversations(
        counts.get("identity_posttrained", 0), rng, IDENTITY_ANSWERS_POSTTRAINED
    )
    if counts.get("spelling", 0) > 0:
        corpus.conversations += spelling_conversations(spellable_words(vocabulary), counts["spelling"], rng)
    corpus.conversations += multi_turn_conversations(items, counts.get("multi_turn", 0), rng)
    if counts.get("python_qa", 0) > 0:
        corpus.conversations += python_qa(stdlib_train_files(), rng)[: counts["python_qa"]]
    if counts.get("fim", 0) > 0:
        corpus.fim = fim_examples(counts["fim"], seed)
    for key, source in SELF_DISTILL_SOURCES.items():
        corpus.conversations += [c for c in distilled if c.source == source][: counts.get(key, 0)]
    rng.shuffle(corpus.conversations)
    return corpus


def heldout_corpus(mixture: dict[str, int], n_per_suite: int, seed: int, direct_copies: str = "answer") -> Corpus:
    """Held-out items of the mixture's suites: only for measuring held-out loss, never trained on."""
    corpus = Corpus()
    for suite in SFT_SUITES + ("fim",):
        if mixture.get(suite, 0) <= 0:
            continue
        items = generate(suite, "heldout", n_per_suite, seed)
        if suite == "fim":
            corpus.fim += [FimExample(it.meta["prefix"], it.answer, it.meta["suffix"], "fim") for it in items]
        else:
            corpus.conversations += [c for item in items for c in item_conversations(item, direct_copies)]
    return corpus


def pretrain_corpus(counts: dict[str, int], seed: int, max_file_chars: int = 200_000) -> Corpus:
    """Pretraining text: train-side stdlib code (all files, or `code_files` of them), Python Q&A chats and FIM."""
    rng = random.Random(f"pretrain:{seed}")
    files = stdlib_train_files()
    code_files = rng.sample(files, min(len(files), counts["code_files"])) if "code_files" in counts else files
    corpus = Corpus(texts=code_texts(code_files, max_file_chars))
    corpus.conversations = python_qa(code_files, rng)[: counts.get("python_qa", 0)]
    corpus.fim = fim_examples(counts.get("fim", 0), seed) if counts.get("fim", 0) > 0 else []
    return corpus


# ---------------------------------------------------------------- tokenization with loss masks


def conversation_documents(conversation: Conversation, tokenizer: Tokenizer) -> list[Document]:
    """Token ids and an assistant-only loss mask for one conversation.

    Each assistant turn's text is found as the difference between the rendered conversation up to that turn
    and the generation prompt before it, so the masked span is exactly what the model must generate at
    inference. When a later render drops an earlier turn's reasoning (the chat format does, once a new user
    turn starts), the text so far is closed as one document and a new one begins: the reasoning is still
    trained, in the context the model really sees it.
    """
    render_chat = tokenizer.render_chat
    documents: list[Document] = []
    spans: list[tuple[int, int]] = []
    text = ""
    messages, tools, thinking = conversation.messages, conversation.tools, conversation.thinking
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        prompt = render_chat(messages[:i], tools=tools, thinking=thinking, add_generation_prompt=True)
        full = render_chat(messages[: i + 1], tools=tools, thinking=thinking, add_generation_prompt=False)
        if not full.startswith(prompt):
            raise ValueError(
                f"chat format: assistant turn {i} of a {conversation.source} conversation does not "
                "extend its generation prompt, so its loss mask cannot be placed"
            )
        if text and not prompt.startswith(text):
            documents.append(encode_spans(text, spans, tokenizer))
            spans = []
        spans.append((len(prompt), len(full)))
        text = full
    if text:
        documents.append(encode_spans(text, spans, tokenizer))
    return documents


def encode_spans(text: str, spans: list[tuple[int, int]], tokenizer: Tokenizer) -> Document:
    """Encode text piecewise so that the characters inside `spans` become the masked-in tokens.

    Span edges sit right after a special token (`<｜Assistant｜>`, `<think>`, ...) and right after the
    end-of-sentence token, where byte-level BPE never merges across, so piecewise ids equal whole-text ids.
    """
    ids: list[int] = []
    mask: list[int] = []
    cursor = 0
    for start, end in spans:
        for piece, target in ((text[cursor:start], 0), (text[start:end], 1)):
            if piece:
                piece_ids = tokenizer.encode(piece)
                ids += piece_ids
                mask += [target] * len(piece_ids)
        cursor = end
    if cursor < len(text):
        tail = tokenizer.encode(text[cursor:])
        ids += tail
        mask += [0] * len(tail)
    return ids, mask


def fim_document(example: FimExample, tokenizer: Tokenizer, train_prompt: bool) -> Document:
    """`render_fim(prefix, suffix)` then the middle and end-of-sentence; the prompt is a target only if asked."""
    prompt_ids = tokenizer.encode(render_fim(example.prefix, example.suffix))
    middle_ids = tokenizer.encode(example.middle) + [tokenizer.eos_id]
    return prompt_ids + middle_ids, [int(train_prompt)] * len(prompt_ids) + [1] * len(middle_ids)


def corpus_documents(corpus: Corpus, tokenizer: Tokenizer, pretraining: bool, seed: int) -> list[Document]:
    """Tokenize a corpus into documents; pretraining trains every token, SFT only the assistant's."""
    documents: list[Document] = []
    for text in corpus.texts:
        ids = [tokenizer.bos_id] + tokenizer.encode(text) + [tokenizer.eos_id]
        documents.append((ids, [1] * len(ids)))
    for conversation in corpus.conversations:
        for ids, mask in conversation_documents(conversation, tokenizer):
            documents.append((ids, [1] * len(ids) if pretraining else mask))
    for example in corpus.fim:
        documents.append(fim_document(example, tokenizer, train_prompt=pretraining))
    random.Random(f"documents:{seed}").shuffle(documents)
    return documents


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nanoseek.train.data", description=__doc__.split("\n")[0])
    parser.add_argument("--recipe", default="tiny")
    args = parser.parse_args(argv)
    recipe = load_recipe(args.recipe)
    pre = pretrain_corpus(recipe["pretrain"]["mixture"], recipe["seed"])
    sft = sft_corpus(recipe["sft"]["mixture"], recipe["seed"], recipe["sft"].get("widened_share", 0.0))
    print(
        f"pretrain: {len(pre.texts)} code files ({sum(map(len, pre.texts)):,} chars), "
        f"{len(pre.conversations)} python Q&A chats, {len(pre.fim)} FIM examples"
    )
    kinds: dict[str, int] = {}
    for c in sft.conversations:
        kinds[c.source.split("/")[0].split(":")[0]] = kinds.get(c.source.split("/")[0].split(":")[0], 0) + 1
    print(f"sft: {len(sft.conversations)} conversations {kinds}, {len(sft.fim)} FIM examples")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
