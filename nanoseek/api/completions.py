"""POST /completions: FIM (fill in the middle, beta) when `suffix` is given, plain text completion otherwise.

FIM renders `prompt` and `suffix` with the DeepSeek-Coder FIM tokens and the model writes the middle. It is
not available in thinking mode (deepseek-reasoner or `thinking: enabled`): that is a 400, as DeepSeek says.
`echo` puts the prompt in front of the text; `logprobs: N` returns the legacy completions logprobs object
(tokens, token_logprobs, top_logprobs as {token: logprob}, text_offset).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fastapi import APIRouter, Depends, Request

from nanoseek.api.auth import require_key
from nanoseek.api.chat import ERROR_RESPONSES, STREAM_RESPONSE, api_usage, finish
from nanoseek.api.errors import APIError
from nanoseek.api.prompts import check_prompt_size, encode_fim_prompt, encode_text_prompt
from nanoseek.api.protocol import CompletionChoice, CompletionLogprobs, CompletionRequest, TextCompletion, Usage
from nanoseek.api.serving import (
    KEEPALIVE,
    SSE_DONE,
    SSE_HEADERS,
    SSE_KEEPALIVE,
    ClosingStreamingResponse,
    choose_max_tokens,
    completion_id,
    engine_top_p,
    error_json,
    make_sampling_params,
    now,
    sse,
    start_generation,
    stop_list,
)
from nanoseek.api.settings import KeyPolicy, Settings
from nanoseek.engine.params import Request as EngineRequest
from nanoseek.engine.params import StreamEvent

router = APIRouter()


@dataclass
class TextAccumulator:
    want_logprobs: bool
    text_offset: int  # where the generated text starts in the returned text (after an echoed prompt)
    text: str = ""
    logprobs: CompletionLogprobs = field(default_factory=CompletionLogprobs)
    finish_reason: str | None = None
    usage: Usage | None = None

    def feed(self, event: StreamEvent) -> CompletionLogprobs | None:
        start = self.text_offset + len(self.text)
        self.text += event.text
        if event.finish_reason is not None:
            self.finish_reason = (
                "insufficient_system_resource" if event.finish_reason == "cancelled" else event.finish_reason
            )
        if event.usage is not None:
            self.usage = api_usage(event.usage, 0)
        if not self.want_logprobs or not event.logprobs:
            return None
        piece = CompletionLogprobs()
        offset = start
        for entry in event.logprobs:
            piece.tokens.append(entry.token)
            piece.token_logprobs.append(entry.logprob)
            piece.top_logprobs.append({t.token: t.logprob for t in entry.top_logprobs})
            piece.text_offset.append(offset)
            offset += len(entry.token)
        for name in ("tokens", "token_logprobs", "top_logprobs", "text_offset"):
            getattr(self.logprobs, name).extend(getattr(piece, name))
        return piece


@router.post(
    "/completions",
    response_model=TextCompletion,
    responses={**ERROR_RESPONSES, **STREAM_RESPONSE},
    summary="Create a completion; with `suffix`, a FIM (fill-in-the-middle) completion (beta)",
)
async def create_completion(
    body: CompletionRequest, request: Request, policy: KeyPolicy = Depends(require_key)
) -> ClosingStreamingResponse:
    state = request.app.state
    settings: Settings = state.settings
    served, _ = state.registry.resolve(body.model)
    # completions have no thinking mode (DeepSeek: FIM is non-thinking only): refused for the seed era's
    # thinking-only name and for an explicit request; the V4 names, which think by default in chat, complete
    if body.model == "deepseek-reasoner" or (body.thinking is not None and body.thinking.type == "enabled"):
        raise APIError(
            400,
            "FIM completion is not available in thinking mode: use deepseek-chat (or thinking disabled) "
            "with /beta/completions.",
            param="model",
        )
    tokenizer = served.tokenizer

    def plan() -> EngineRequest:
        chars = len(body.prompt) + len(body.suffix or "")
        check_prompt_size(chars, tokenizer, served.context_length)
        if body.suffix is not None:
            prompt_ids = encode_fim_prompt(tokenizer, body.prompt, body.suffix)
        else:
            prompt_ids = encode_text_prompt(tokenizer, body.prompt)
        logprobs_n = body.logprobs
        params = make_sampling_params(
            max_tokens=choose_max_tokens(body.max_tokens, len(prompt_ids), served, settings),
            temperature=1.0 if body.temperature is None else body.temperature,
            top_p=engine_top_p(body.top_p),
            frequency_penalty=body.frequency_penalty or 0.0,
            presence_penalty=body.presence_penalty or 0.0,
            stop=stop_list(body.stop),
            stop_token_ids=served.eos_ids,
            seed=body.seed,
            logprobs=logprobs_n is not None,
            top_logprobs=logprobs_n or 0,
        )
        return EngineRequest(prompt_ids=prompt_ids, params=params)

    source = await start_generation(request, policy, served, await state.planner.run(plan))
    state.metrics.requests_started(body.model)
    echo = body.prompt if body.echo else ""
    acc = TextAccumulator(want_logprobs=body.logprobs is not None, text_offset=len(echo))
    fingerprint, response_id, created = served.fingerprint, completion_id("cmpl"), now()

    def completion(choices: list[CompletionChoice], usage: Usage | None = None) -> TextCompletion:
        return TextCompletion(
            id=response_id,
            created=created,
            model=body.model,
            system_fingerprint=fingerprint,
            choices=choices,
            usage=usage,
        )

    async def collect():
        async for line in source.collect_into(acc):
            yield line
        if source.error is not None:
            return
        choice = CompletionChoice(
            text=echo + acc.text,
            index=0,
            finish_reason=acc.finish_reason or "stop",
            logprobs=acc.logprobs if acc.want_logprobs else None,
        )
        finish(request, body.model, acc.usage)
        yield completion([choice], acc.usage).model_dump_json()

    async def stream():
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        exclude = None if include_usage else {"usage"}
        try:
            if echo:
                yield sse(completion([CompletionChoice(text=echo, index=0, finish_reason=None)]), exclude)
            async for event in source:
                if event is KEEPALIVE or event.queued:
                    yield SSE_KEEPALIVE
                    continue
                logprobs = acc.feed(event)
                if event.text or event.finish_reason is not None:
                    choice = CompletionChoice(
                        text=event.text,
                        index=0,
                        logprobs=logprobs,
                        finish_reason=acc.finish_reason if event.finish_reason else None,
                    )
                    yield sse(completion([choice]), exclude)
            if include_usage:
                yield sse(completion([], acc.usage))
            finish(request, body.model, acc.usage)
            yield SSE_DONE
        except APIError as exc:
            yield f"data: {error_json(exc)}\n\n{SSE_DONE}"
        finally:
            source.close()

    if body.stream:
        return ClosingStreamingResponse(stream(), source, media_type="text/event-stream", headers=SSE_HEADERS)
    return ClosingStreamingResponse(collect(), source, media_type="application/json")
