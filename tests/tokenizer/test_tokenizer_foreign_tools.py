"""Tools over a chat template that knows nothing of them (SmolLM2's ChatML): the tool list, the calls and the
results are rendered the Hermes way, and the output parser and grammar use the same `<tool_call>` shape."""

from __future__ import annotations

import json

from nanoseek.tokenizer.output_parser import HERMES_TOOLS, OutputParser, tool_format_for_template
from nanoseek.tokenizer.tokenizer import Tokenizer

# SmolLM2-135M-Instruct's template, as its GGUF file carries it
CHATML = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


def chatml_tokenizer(bpe_tokenizer: Tokenizer) -> Tokenizer:
    return Tokenizer(bpe_tokenizer.backend, {**bpe_tokenizer.config, "chat_template": CHATML})


def test_tools_join_the_system_prompt_hermes_style(bpe_tokenizer):
    prompt = chatml_tokenizer(bpe_tokenizer).render_chat([{"role": "user", "content": "Weather in Paris?"}], [WEATHER])
    assert prompt.startswith("<|im_start|>system\n# Tools\n\nYou may call one or more functions")
    assert "<tools>\n" + json.dumps(WEATHER) + "\n</tools>" in prompt
    assert '<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call><|im_end|>' in prompt
    assert prompt.endswith("<|im_start|>user\nWeather in Paris?<|im_end|>\n<|im_start|>assistant\n")
    assert tool_format_for_template(CHATML) is HERMES_TOOLS


def test_calls_and_results_travel_as_text_in_ordinary_turns(bpe_tokenizer):
    call = {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {"role": "assistant", "content": None, "tool_calls": [call, {**call, "id": "c2"}]},
        {"role": "tool", "tool_call_id": "c1", "content": "Sunny"},
        {"role": "tool", "tool_call_id": "c2", "content": "Rain"},
    ]
    prompt = chatml_tokenizer(bpe_tokenizer).render_chat(messages, [WEATHER])
    assert prompt.startswith("<|im_start|>system\nBe brief.\n\n# Tools\n")
    written = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
    assert f"<|im_start|>assistant\n{written}\n{written}<|im_end|>\n" in prompt
    responses = "<tool_response>\nSunny\n</tool_response>\n<tool_response>\nRain\n</tool_response>"
    assert prompt.endswith(f"<|im_start|>user\n{responses}<|im_end|>\n<|im_start|>assistant\n")
    # what the model writes back in that shape is read as a call
    parser = OutputParser(tool_format=HERMES_TOOLS, thinking=False, tools_enabled=True)
    parsed = [parser.feed(written), parser.finish()]
    [parsed_call] = [c for piece in parsed for c in piece.tool_calls]
    assert (parsed_call.name, json.loads(parsed_call.arguments)) == ("get_weather", {"city": "Paris"})


def test_a_template_that_renders_tools_gets_them_itself(bpe_tokenizer):
    template = (
        "{% for t in tools %}[{{ t.function.name }}]{% endfor %}{% for m in messages %}{{ m.content }}{% endfor %}"
    )
    tokenizer = Tokenizer(bpe_tokenizer.backend, {**bpe_tokenizer.config, "chat_template": template})
    assert tokenizer.render_chat([{"role": "user", "content": "hi"}], [WEATHER]) == "[get_weather]hi"
