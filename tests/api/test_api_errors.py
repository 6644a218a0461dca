"""Every documented error code and every kind of bad input, against live servers: each gets the right 4xx/5xx
with the JSON error body, no stack trace, and the server keeps serving. Also: keys (401), quotas (402) and
rate limits (429), the bounded queue (503) with keep-alives while queued, client disconnects cancelling
generation, /health, /metrics and the OpenAPI document."""

from __future__ import annotations

import json
import time

import httpx
import openai
import pytest

from tests.api.conftest import MAIN_KEY

AUTH = {"Authorization": f"Bearer {MAIN_KEY}"}
CHAT = {"model": "deepseek-chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}


def assert_error(response: httpx.Response, status: int, *words: str) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    for word in words:
        assert word.lower() in error["message"].lower()
    assert "Traceback" not in response.text
    return error


def still_serving(url: str) -> None:
    response = httpx.post(f"{url}/chat/completions", json=CHAT, headers=AUTH, timeout=60)
    assert response.status_code == 200 and response.json()["choices"][0]["message"]["role"] == "assistant"


@pytest.mark.parametrize(
    "body,status,words",
    [
        (b'{"model": "deepseek-chat", "messages": [', 400, ["JSON"]),
        (b'{"model": "deepseek-chat", "messages": "hi"}', 400, ["messages"]),
        (
            b'{"model": "deepseek-chat", "messages": [{"role": "user", "content": "hi"}], "temperature": "hot"}',
            400,
            ["temperature"],
        ),
        (b'{"model": 5, "messages": [{"role": "user", "content": "hi"}]}', 400, ["model"]),
        (b'{"model": "deepseek-chat", "messages": [{"role": "user", "content": "\xff\xfe"}]}', 400, ["UTF-8"]),
        (
            b'{"model": "deepseek-chat", "messages": [{"role": "user", "content": "hi"}], "temperature": 3}',
            422,
            ["temperature"],
        ),
        (b'{"model": "deepseek-chat", "messages": [{"role": "user", "content": "hi"}], "top_p": 1.5}', 422, ["top_p"]),
        (
            b'{"model": "deepseek-chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 100000}',
            422,
            ["max_tokens"],
        ),
        (
            b'{"model": "deepseek-chat", "messages": [{"role": "user", "content": "hi"}], "stop": '
            + json.dumps(["x"] * 17).encode()
            + b"}",
            422,
            ["16"],
        ),
        (b'{"model": "gpt-4", "messages": [{"role": "user", "content": "hi"}]}', 400, ["Model Not Exist", "gpt-4"]),
        (b'{"model": "deepseek-chat", "messages": ' + b"[" * 5000 + b"]" * 5000 + b"}", 400, ["nested"]),
        (b'{"model": "deepseek-chat", "messages": []}', 422, ["messages"]),
    ],
)
def test_bad_requests_get_the_right_status(api_server, body, status, words):
    response = httpx.post(
        f"{api_server.url}/chat/completions",
        content=body,
        headers={**AUTH, "Content-Type": "application/json"},
        timeout=60,
    )
    assert_error(response, status, *words)
    still_serving(api_server.url)


def test_huge_body_is_413_and_ten_thousand_messages_are_400(api_server):
    huge = {**CHAT, "messages": [{"role": "user", "content": "x" * 2_000_000}]}
    assert_error(httpx.post(f"{api_server.url}/chat/completions", json=huge, headers=AUTH, timeout=60), 413, "limit")

    def chunks():  # the same body without a Content-Length: caught while it streams in
        yield json.dumps(huge).encode()

    assert_error(httpx.post(f"{api_server.url}/chat/completions", content=chunks(), headers=AUTH, timeout=60), 413)
    many = {**CHAT, "messages": [{"role": "user", "content": "hi"}] * 10_000}
    assert_error(
        httpx.post(f"{api_server.url}/chat/completions", json=many, headers=AUTH, timeout=60), 400, "context length"
    )
    still_serving(api_server.url)


def test_keys_quota_and_rate_limit(api_server):
    url = api_server.url
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=url, api_key="sk-wrong", max_retries=0).models.list()
    assert_error(httpx.post(f"{url}/chat/completions", json=CHAT), 401, "API key")
    assert httpx.get(f"{url}/models", headers={"x-api-key": MAIN_KEY}).status_code == 200

    quota = openai.OpenAI(base_url=url, api_key="sk-quota", max_retries=0)
    balance = httpx.get(f"{url}/user/balance", headers={"Authorization": "Bearer sk-quota"}).json()
    assert balance == {
        "is_available": True,
        "balance_infos": [
            {"currency": "TOKENS", "total_balance": "40", "granted_balance": "40", "topped_up_balance": "0"}
        ],
    }
    # Requests are served, each clamped to what the quota has left, until what is left cannot hold the prompt
    # and one answer token (a sample that ends early on its end-of-sentence token leaves some for the next
    # one); then refused with 402. The quota is never overrun.
    used = 0
    for _ in range(10):
        try:
            usage = quota.chat.completions.create(**{**CHAT, "max_tokens": 40}).usage
            used += usage.total_tokens
        except openai.APIStatusError as refused:
            assert refused.status_code == 402
            break
    else:
        pytest.fail("10 requests never used up a 40-token quota")
    balance = httpx.get(f"{url}/user/balance", headers={"Authorization": "Bearer sk-quota"}).json()
    left = int(balance["balance_infos"][0]["total_balance"])
    assert used <= 40 and left == 40 - used and left <= usage.prompt_tokens

    limited = openai.OpenAI(base_url=url, api_key="sk-rate", max_retries=0)
    for _ in range(2):
        limited.chat.completions.create(**CHAT)
    with pytest.raises(openai.RateLimitError) as caught:
        limited.chat.completions.create(**CHAT)
    assert int(caught.value.response.headers["Retry-After"]) >= 1
    still_serving(url)


def test_health_metrics_and_openapi(api_server):
    url = api_server.url
    health = httpx.get(f"{url}/health").json()
    assert health["status"] == "ok" and health["queue"] == 0
    assert health["decode"] == "native C step, fp32"  # which step decodes, without why not (paths in it)
    still_serving(url)
    metrics = httpx.get(f"{url}/metrics").text
    assert 'nanoseek_http_requests_total{method="POST",route="/chat/completions",status="200"}' in metrics
    assert "nanoseek_engine_running" in metrics and "nanoseek_completion_tokens_total" in metrics
    schema = httpx.get(f"{url}/openapi.json", timeout=60).json()  # built on first use: seconds on a busy machine
    assert {"/chat/completions", "/completions", "/models", "/user/balance", "/anthropic/v1/messages"} <= set(
        schema["paths"]
    )


def wait_for(condition, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


LONG = {
    "model": "deepseek-chat",
    "messages": [{"role": "user", "content": "hi"}],
    "max_tokens": 2000,
    "temperature": 0,
}  # greedy decoding of the random model never picks EOS: it runs until cancelled


def test_queue_keepalives_overload_disconnect_and_server_error(start_server):
    server = start_server(max_batch=1, max_queue=2, keepalive_seconds=0.2)
    url, engine = server.url, server.engine
    with httpx.Client(timeout=60) as http:
        with http.stream("POST", f"{url}/chat/completions", json={**LONG, "stream": True}) as running:
            lines = running.iter_lines()
            assert next(lines).startswith("data: ")  # the role chunk: the request holds the only slot
            with http.stream("POST", f"{url}/chat/completions", json={**LONG, "stream": True}) as queued:
                queued_lines = (line for line in queued.iter_lines() if line)
                role_chunk = json.loads(next(queued_lines).removeprefix("data: "))
                assert role_chunk["choices"][0]["delta"]["role"] == "assistant"
                assert next(queued_lines) == ": keep-alive"  # waiting for the slot, nothing generated yet
                with http.stream("POST", f"{url}/chat/completions", json=LONG) as queued_plain:
                    plain_chunks = queued_plain.iter_raw()  # keep a reference: a dropped iterator hangs up
                    assert next(plain_chunks).strip(b"\n") == b""  # blank keep-alive lines
                    full = http.post(f"{url}/chat/completions", json=CHAT)
                    assert_error(full, 503, "overloaded")
                    assert full.headers["Retry-After"] == "1"
                    stats = engine.stats()
                    assert (stats["running"], stats["waiting"]) == (1, 2), stats
    # all three clients hung up: their requests are cancelled and their KV reservations freed
    wait_for(
        lambda: (
            engine.stats()["running"] == 0
            and engine.stats()["waiting"] == 0
            and engine.stats()["kv_reserved_tokens"] == 0
        )
    )
    decoded = engine.stats()["decode_tokens"]
    time.sleep(0.5)
    assert engine.stats()["decode_tokens"] == decoded  # nothing is generated for nobody
    still_serving(url)

    with httpx.stream("POST", f"{url}/chat/completions", json={**LONG, "stream": True}, timeout=60) as cut:
        lines = (line for line in cut.iter_lines() if line.startswith("data: "))
        next(lines)
        engine.shutdown()  # a stream the engine can no longer finish ends cleanly, saying why
        rest = list(lines)
    assert rest[-1] == "data: [DONE]"
    assert json.loads(rest[-2][6:])["choices"][0]["finish_reason"] == "insufficient_system_resource"
    # with the engine gone, a new request is a 500 with the JSON body, and the HTTP server stays up
    assert_error(httpx.post(f"{url}/chat/completions", json=CHAT, timeout=60), 500, "server error")
    assert httpx.get(f"{url}/health").status_code == 200
