"""Small random nanoseek Transformers for the model tests that need weights but no checkpoint on disk."""

from __future__ import annotations

import torch

from nanoseek.model.config import ModelConfig
from nanoseek.model.transformer import Transformer


def random_model(std: float = 0.2, **overrides: object) -> Transformer:
    """A random Llama (vocab 200, hidden 64, 2 layers, 4 heads over 2 KV heads, unless overridden), drawn from
    seed 0 with weights of standard deviation `std`."""
    shape = dict(
        vocab_size=200,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
    )
    torch.manual_seed(0)
    model = Transformer(ModelConfig(**{**shape, **overrides})).eval()
    model.init_weights(std=std)
    return model
