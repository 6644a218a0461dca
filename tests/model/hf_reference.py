"""The transformers side of the parity tests (test_model_parity.py: Llama and Qwen2; test_deepseek.py: DeepSeek-V2
and V3): random reference models, token ids, the logit gap between two models and greedy continuations."""

from __future__ import annotations

import torch
import transformers

from nanoseek.model.cache import SimpleKVCache
from nanoseek.model.transformer import Transformer

TOLERANCE = 1e-4  # the largest logit difference that counts as the same model in fp32


def random_hf_model(
    config: transformers.PretrainedConfig, seed: int = 0, attn_implementation: str = "eager"
) -> torch.nn.Module:
    """A random transformers model whose every weight is far from its (zero/one) init, norms and DeepSeek's routing
    bias included, so that a mistake anywhere moves the logits (the rotary frequencies stay as computed)."""
    model = transformers.AutoModelForCausalLM.from_config(
        config, dtype=torch.float32, attn_implementation=attn_implementation
    )
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
            if name.endswith("norm.weight"):
                tensor.copy_(1.0 + 0.2 * torch.randn(tensor.shape, generator=generator))
            elif name.endswith("e_score_correction_bias"):
                tensor.copy_(0.3 * torch.randn(tensor.shape, generator=generator))
            elif "inv_freq" not in name:
                tensor.copy_(0.15 * torch.randn(tensor.shape, generator=generator))
    return model.eval()


def sample_ids(vocab: int, batch: int = 2, length: int = 40, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, vocab, (batch, length), generator=torch.Generator().manual_seed(seed))


def logit_gap(reference: torch.nn.Module, model: Transformer, ids: torch.Tensor) -> float:
    """The largest difference between the reference's logits and nanoseek's on `ids`."""
    with torch.no_grad():
        return (reference(ids).logits - model(ids)).abs().max().item()


def nanoseek_greedy(model: Transformer, prompt: torch.Tensor, new_tokens: int) -> list[int]:
    """The plain greedy loop over SimpleKVCache (the engine owns the real generation loop)."""
    cache = SimpleKVCache(model.config, batch_size=1)
    generated: list[int] = []
    with torch.no_grad():
        logits = model(prompt, cache=cache, last_only=True)
        for _ in range(new_tokens):
            generated.append(int(logits[0, -1].argmax()))
            logits = model(torch.tensor([[generated[-1]]]), cache=cache, last_only=True)
    return generated


def transformers_greedy(reference: torch.nn.Module, prompt: torch.Tensor, new_tokens: int) -> list[int]:
    output = reference.generate(
        prompt, max_new_tokens=new_tokens, do_sample=False, pad_token_id=0, attention_mask=torch.ones_like(prompt)
    )
    return output[0, prompt.shape[1] :].tolist()
