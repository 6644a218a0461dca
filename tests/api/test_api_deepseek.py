"""`nanoseek serve` over a DeepSeek-V3-layout checkpoint (MLA + MoE): the served greedy tokens, decoded by the native
C step over the latent cache, are transformers'."""

from __future__ import annotations

from pathlib import Path

import openai
import torch
import transformers

from nanoseek.engine.native_latent import LatentNativeDecoder
from nanoseek.model.loader import load_checkpoint


def test_served_greedy_completion_matches_transformers(start_server, mla_moe_checkpoint: Path) -> None:
    server = start_server(model=mla_moe_checkpoint, max_tokens_default=32)
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=120)
    prompt = "def fibonacci(n):"
    response = client.completions.create(model="deepseek-chat", prompt=prompt, max_tokens=32, temperature=0)
    tokenizer = load_checkpoint(mla_moe_checkpoint).tokenizer
    ids = torch.tensor([tokenizer.encode(tokenizer.bos_token + prompt)])
    reference = transformers.AutoModelForCausalLM.from_pretrained(mla_moe_checkpoint, dtype=torch.float32).eval()
    generated = reference.generate(
        ids, max_new_tokens=32, do_sample=False, attention_mask=torch.ones_like(ids), pad_token_id=0
    )[0, ids.shape[1] :].tolist()
    assert response.usage.completion_tokens == len(generated) == 32  # no early end of sentence on either side
    assert response.choices[0].text == tokenizer.decode(generated)
    assert isinstance(server.engine.native, LatentNativeDecoder)
    assert server.engine.stats()["kv_bytes_per_token"] == 3 * 24 * 4
