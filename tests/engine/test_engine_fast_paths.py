"""The engine's speed paths give the same answers as the plain ones: oneDNN-packed projections, the compiled
(frozen-weight) decode steps (the native C step has tests/engine/test_native_decode.py), and the fresh threads that keep OpenMP pools out of the caller's thread."""

from __future__ import annotations

import copy
import io
import threading

import pytest
import torch
import torch.nn.functional as F

from nanoseek.engine import Request, SamplingParams
from nanoseek.engine.engine import in_fresh_thread
from nanoseek.model.transformer import Linear


def greedy(max_tokens: int) -> SamplingParams:
    return SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True)


def test_packed_linear_matches_f_linear_and_falls_back_once_the_weight_changes():
    torch.manual_seed(0)
    layer = Linear(48, 80, bias=True)
    if not layer.pack():
        pytest.skip("this torch build has no oneDNN")
    rows = torch.randn(5, 3, 48)
    with torch.no_grad():
        assert torch.allclose(layer(rows), F.linear(rows, layer.weight, layer.bias), atol=1e-6)
        layer.weight.add_(1.0)  # what an optimizer step does: the packed copy is now stale
        assert torch.allclose(layer(rows), F.linear(rows, layer.weight, layer.bias), atol=1e-6)
    # With gradients on, the plain path runs and gradients reach the weight.
    layer(rows).sum().backward()
    assert layer.weight.grad is not None


def test_a_packed_layer_can_be_copied_and_saved_and_the_copy_computes_the_same():
    # oneDNN's blocked tensor has no storage: deepcopy of a packed model failed (CI: the lifetime test copied
    # the shared model after another test's engine had packed it).
    torch.manual_seed(0)
    layer = Linear(48, 80, bias=True)
    if not layer.pack():
        pytest.skip("this torch build has no oneDNN")
    copied = copy.deepcopy(layer)
    buffer = io.BytesIO()
    torch.save(layer, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    rows = torch.randn(5, 3, 48)
    with torch.no_grad():
        for other in (copied, loaded):
            assert other.packed is None and other.pack()
            assert torch.allclose(other(rows), layer(rows), atol=1e-6)
    assert layer.packed is not None, "copying must not unpack the original"


def test_packed_model_gives_the_same_batched_greedy_tokens_as_unpacked(checkpoint, make_engine):
    prompts = [[5, 6, 7, 8], [9, 10, 11, 12], [13, 14, 15, 16]]
    packed_engine = make_engine(native_decode=False)  # the packed projections decode too, not the C step
    assert packed_engine.packed_weights or not torch.backends.mkldnn.is_available()
    packed = [c.token_ids for c in packed_engine.generate([Request(p, greedy(24)) for p in prompts])]
    packed_engine.shutdown()
    for module in checkpoint.model.modules():
        if isinstance(module, Linear):
            module.packed = None
    unpacked = []
    with torch.no_grad():
        for prompt in prompts:  # the model by hand, one prompt at a time, plain F.linear everywhere
            ids = list(prompt)
            for _ in range(24):
                logits = checkpoint.model(torch.tensor([ids]))[0, -1]
                ids.append(int(logits.argmax()))
            unpacked.append(ids[len(prompt) :])
    assert packed == unpacked


def greedy_by_hand(model: torch.nn.Module, prompt: list[int], new_tokens: int) -> list[int]:
    ids = list(prompt)
    with torch.no_grad():
        for _ in range(new_tokens):
            ids.append(int(model(torch.tensor([ids]))[0, -1].argmax()))
    return ids[len(prompt) :]


# Inductor compiles C++ for each graph: ~275 s on a 2-core machine with a cold inductor cache (a fresh CI clone),
# a few seconds with a warm one.
@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_compiled_decode_matches_eager_and_follows_weight_changes(checkpoint, make_engine):
    # Batch 1, a batch in lock-step (equal prompts) and one at different lengths: each its own graph.
    prompts = [[3, 1, 4, 1, 5, 9, 2, 6], [2, 7, 1, 8, 2], [1, 4, 1, 4, 2, 1, 3, 5]]
    eager_engine = make_engine(native_decode=False)
    alone = eager_engine.generate([Request(prompts[0], greedy(32))])[0].token_ids
    batched = [c.token_ids for c in eager_engine.generate([Request(p, greedy(32)) for p in prompts])]
    assert batched[0] == alone
    compiled_engine = make_engine(compile_decode=True, native_decode=False)
    assert compiled_engine.warm_up() > 0
    assert compiled_engine.generate([Request(prompts[0], greedy(32))])[0].token_ids == alone
    assert [c.token_ids for c in compiled_engine.generate([Request(p, greedy(32)) for p in prompts])] == batched
    assert [c.token_ids for c in compiled_engine.generate([Request(prompts[0], greedy(32))] * 2)] == [alone] * 2
    # The compiled graphs hold frozen copies of the weights: once training changes a weight, decoding must
    # follow the new weights, not the frozen ones.
    with torch.no_grad():
        checkpoint.model.lm_head.weight.mul_(-1.0)
    flipped = compiled_engine.generate([Request(prompts[1], greedy(12))])[0].token_ids
    assert flipped == greedy_by_hand(checkpoint.model, prompts[1], 12)
    with torch.no_grad():
        checkpoint.model.lm_head.weight.mul_(-1.0)


def test_in_fresh_thread_returns_results_and_raises_errors_from_another_thread():
    caller = threading.get_ident()
    assert in_fresh_thread(lambda a, b=0: (a + b, threading.get_ident()), 2, b=3)[0] == 5
    assert in_fresh_thread(threading.get_ident) != caller
    with pytest.raises(ZeroDivisionError):
        in_fresh_thread(lambda: 1 / 0)
