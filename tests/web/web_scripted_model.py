"""A real checkpoint whose answers we know: the tiny random model rewired into a bigram chain.

A random model writes gibberish and may never close its thought, so "deep thinking shows a thought and then
an answer" cannot be checked on it. This builds, from a copy of the tiny checkpoint, a model that still runs
through the whole real stack (tokenizer, chat format, engine, API parsers, SSE) but whose next token depends
only on the current one, following a chain we choose:

    <think> -> REASONING tokens -> </think> -> ANSWER tokens -> first ANSWER token -> ... (until max_tokens)

The non-thinking generation prompt ends in `</think>` too (see tokenizer/chat_format.py), so deepseek-chat
answers ANSWER repeated, and deepseek-reasoner thinks REASONING first. How: every attention and MLP output
projection is zeroed, so the last hidden state is the current token's embedding; each chain token's embedding
becomes its own unit vector and an untied output projection maps that vector to the next token with a logit
margin of 32, which no sampling temperature the API allows can overturn.
"""

from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from nanoseek.tokenizer import special_tokens
from nanoseek.tokenizer.tokenizer import Tokenizer

LOGIT_SCALE = 4.0  # RMSNorm turns a unit vector into sqrt(hidden)=8 times itself: margin 8 * 4 = 32


def make_scripted_checkpoint(source: Path, destination: Path, *, reasoning: str, answer: str) -> Path:
    shutil.copytree(source, destination)
    tokenizer = Tokenizer.load(destination)
    think_begin, think_end = (
        tokenizer.token_id(special_tokens.THINK_BEGIN),
        tokenizer.token_id(special_tokens.THINK_END),
    )
    reasoning_ids, answer_ids = tokenizer.encode(reasoning), tokenizer.encode(answer)
    chain = [think_begin, *reasoning_ids, think_end, *answer_ids]
    if len(set(chain)) != len(chain):
        raise ValueError(f"a bigram chain needs distinct tokens; {reasoning!r} + {answer!r} repeats one")
    successor = dict(itertools.pairwise(chain))
    successor[answer_ids[-1]] = answer_ids[0]  # the answer repeats until max_tokens

    config = json.loads((destination / "config.json").read_text())
    hidden = config["hidden_size"]
    if len(chain) > hidden:
        raise ValueError(f"{len(chain)} chain tokens need a hidden size of at least that, not {hidden}")
    weights = load_file(destination / "model.safetensors")
    for name, tensor in weights.items():
        if name.endswith(("self_attn.o_proj.weight", "mlp.down_proj.weight")):
            tensor.zero_()
    weights["model.norm.weight"].fill_(1.0)
    embeddings = weights["model.embed_tokens.weight"]
    output = torch.zeros_like(embeddings)
    for dimension, token in enumerate(chain):
        embeddings[token].zero_()
        embeddings[token, dimension] = 1.0
        output[successor[token], dimension] = LOGIT_SCALE
    weights["lm_head.weight"] = output
    config["tie_word_embeddings"] = False
    save_file(weights, destination / "model.safetensors", metadata={"format": "pt"})
    (destination / "config.json").write_text(json.dumps(config, indent=2))
    return destination
