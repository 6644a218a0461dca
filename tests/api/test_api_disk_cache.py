"""The context cache on disk through the API: a prompt answered before a server restart is a cache hit after it
(usage.prompt_cache_hit_tokens), with the same greedy answer."""

from __future__ import annotations

from tests.api.conftest import MAIN_KEY


def test_prompt_cache_hits_survive_a_server_restart(start_server, tmp_path):
    import openai

    document = " ".join(f"line {i}: the quick brown fox jumps over the lazy dog." for i in range(40))
    messages = [{"role": "system", "content": document}, {"role": "user", "content": "Summarise."}]

    def ask(server):
        client = openai.OpenAI(base_url=server.url, api_key=MAIN_KEY, max_retries=0, timeout=120)
        return client.chat.completions.create(model="deepseek-chat", messages=messages, max_tokens=6, temperature=0)

    settings = {"cache_dir": tmp_path, "disk_cache_gb": 0.5}
    first = start_server(**settings)
    cold = ask(first)
    assert cold.usage.model_extra["prompt_cache_hit_tokens"] == 0
    first.stop()  # the engine shuts down and its queued blocks reach the disk
    restarted = start_server(**settings)
    warm = ask(restarted)
    hit = warm.usage.model_extra["prompt_cache_hit_tokens"]
    assert hit == cold.usage.prompt_tokens // 64 * 64 and hit > 0
    assert warm.choices[0].message.content == cold.choices[0].message.content


def test_disk_blocks_are_per_key_after_a_restart(start_server, tmp_path):
    import openai

    keys = tmp_path / "keys.txt"
    keys.write_text("sk-alice\nsk-bob\n")
    document = " ".join(f"note {i}: a shared system prompt that both keys might send." for i in range(30))
    messages = [{"role": "system", "content": document}, {"role": "user", "content": "Go."}]

    def hit(server, key: str) -> int:
        client = openai.OpenAI(base_url=server.url, api_key=key, max_retries=0, timeout=120)
        response = client.chat.completions.create(model="deepseek-chat", messages=messages, max_tokens=2)
        return response.usage.model_extra["prompt_cache_hit_tokens"]

    settings = {"cache_dir": tmp_path / "cache", "disk_cache_gb": 0.5, "api_keys_file": keys}
    first = start_server(**settings)
    assert hit(first, "sk-alice") == 0
    first.stop()
    restarted = start_server(**settings)
    assert hit(restarted, "sk-bob") == 0  # another key: no oracle for alice's prompt, from disk either
    assert hit(restarted, "sk-alice") > 0
