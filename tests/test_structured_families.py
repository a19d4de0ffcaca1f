"""Forced tool calls (`tool_choice` required / named) on the real chat templates of each family that
has a tool-call parser, as `test_structured.py` does for the Hermes family; and
`parallel_tool_calls: false` under `tool_choice: auto`.

The tiny model gets each family's markup tokens as its real tokenizer has them: Mistral's
`[TOOL_CALLS]` is a special token (which `skip_special_tokens` would drop from the text), and
DeepSeek-R1's template opens a `<think>` block that the output starts inside.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from localoai.testing import running_server

WEATHER = {"type": "object", "properties": {"city": {"enum": ["paris", "tokyo"]}},
           "required": ["city"], "additionalProperties": False}
SEARCH = {"type": "object", "properties": {"k": {"type": "integer", "minimum": 1, "maximum": 5}},
          "required": ["k"], "additionalProperties": False}
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "description": "Weather", "parameters": WEATHER}},
    {"type": "function", "function": {"name": "search", "description": "Search", "parameters": SEARCH}},
]
SCHEMAS = {"get_weather": WEATHER, "search": SEARCH}
MESSAGES = [{"role": "user", "content": "What is the weather in paris?"}]

FAMILIES: dict[str, dict[str, Any]] = {
    "mistral": {"template": "mistralai-Mistral-Nemo-Instruct-2407.jinja", "special": [
        "[INST]", "[/INST]", "[TOOL_CALLS]", "[AVAILABLE_TOOLS]", "[/AVAILABLE_TOOLS]", "[TOOL_RESULTS]",
        "[/TOOL_RESULTS]"], "tokens": []},
    "deepseek": {"template": "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja", "special": [], "tokens": [
        "<｜User｜>", "<｜Assistant｜>", "<｜tool▁calls▁begin｜>", "<｜tool▁calls▁end｜>", "<｜tool▁call▁begin｜>",
        "<｜tool▁call▁end｜>", "<｜tool▁sep｜>", "<｜tool▁outputs▁begin｜>", "<｜tool▁outputs▁end｜>"]},
    "harmony": {"template": "openai-gpt-oss-120b.jinja", "special": [
        "<|start|>", "<|end|>", "<|message|>", "<|channel|>", "<|constrain|>", "<|return|>", "<|call|>"], "tokens": []},
}


@pytest.fixture(scope="module", params=list(FAMILIES))
def family(request: pytest.FixtureRequest, tiny: tuple[Any, Any], shared_fixtures: Path) -> Iterator[tuple[str, Any]]:
    name = request.param
    spec = FAMILIES[name]
    model, tokenizer = copy.deepcopy(tiny[0]), copy.deepcopy(tiny[1])
    tokenizer.add_special_tokens({"additional_special_tokens": spec["special"]}, replace_extra_special_tokens=False)
    tokenizer.add_tokens(spec["tokens"])
    tokenizer.chat_template = (shared_fixtures / "chat_templates" / spec["template"]).read_text()
    model.resize_token_embeddings(len(tokenizer))
    if name == "harmony":  # gpt-oss stops at <|return|> and <|call|>
        tokenizer.eos_token = "<|return|>"
        stops = tokenizer.convert_tokens_to_ids(["<|return|>", "<|call|>"])
        model.generation_config.eos_token_id = model.config.eos_token_id = stops
    with running_server(model, tokenizer, name="tiny") as server:
        yield name, server


def create(server: Any, **fields: Any) -> Any:
    bias = {}
    close = server.served.tokenizer.convert_tokens_to_ids("</think>")
    if server.served.reasoning_format == "deepseek_r1":  # random weights: end the free reasoning soon
        bias = {str(close): 12}
    return server.client(max_retries=0).chat.completions.create(
        model="tiny", messages=MESSAGES, tools=TOOLS, max_tokens=300, n=4, seed=5, logit_bias=bias or None, **fields)


def assert_valid_calls(choice: Any, names: set[str]) -> None:
    assert choice.finish_reason == "tool_calls", choice
    assert choice.message.tool_calls and not choice.message.content, choice
    for call in choice.message.tool_calls:
        assert call.function.name in names
        jsonschema.validate(json.loads(call.function.arguments), SCHEMAS[call.function.name])


@pytest.mark.parametrize("parallel", [True, False])
def test_required_calls_parse_as_calls(family: tuple[str, Any], parallel: bool) -> None:
    name, server = family
    completion = create(server, tool_choice="required", parallel_tool_calls=parallel)
    for choice in completion.choices:
        assert_valid_calls(choice, set(SCHEMAS))
        assert parallel or len(choice.message.tool_calls) == 1
    record = server.store.get(completion.id)
    if name == "mistral":  # the special token is in the text the parser read, and the trace's
        assert all(trace["text"].startswith("[TOOL_CALLS]") for trace in record.completions)
    if name == "deepseek":
        assert all("</think>" in trace["text"] for trace in record.completions)
    if name == "harmony":  # one call per message: <|call|> ends the turn
        assert all(trace["text"].startswith("<|channel|>commentary to=functions.") for trace in record.completions)
        assert all(len(choice.message.tool_calls) == 1 for choice in completion.choices)


def test_a_named_function_is_called(family: tuple[str, Any]) -> None:
    _, server = family
    completion = create(server, tool_choice={"type": "function", "function": {"name": "search"}})
    for choice in completion.choices:
        assert_valid_calls(choice, {"search"})
        assert len(choice.message.tool_calls) == 1


def test_responses_force_a_call_too(family: tuple[str, Any]) -> None:
    name, server = family
    if name == "deepseek":
        pytest.skip("Responses take no logit_bias: random weights would reason past max_output_tokens")
    response = server.client(max_retries=0).responses.create(
        model="tiny", input="weather?", max_output_tokens=300,
        tools=[{"type": "function", "name": "get_weather", "description": "Weather", "parameters": WEATHER}],
        tool_choice="required")
    calls = [item for item in response.output if item.type == "function_call"]
    assert len(calls) >= 1 and all(call.name == "get_weather" for call in calls)
    for call in calls:
        jsonschema.validate(json.loads(call.arguments), WEATHER)


def test_one_call_at_most_under_auto_without_parallel_calls(server: Any) -> None:
    """A bias toward `<tool_call>` makes the random model open call after call; with
    `parallel_tool_calls: false` the grammar lets it make one, then only the end may follow."""
    client = server.client(max_retries=0)
    opening = server.served.tokenizer.convert_tokens_to_ids("<tool_call>")
    strict = [{**tool, "function": {**tool["function"], "strict": True}} for tool in TOOLS]
    fields = dict(model="tiny", messages=MESSAGES, tools=strict, tool_choice="auto", max_tokens=200, n=4, seed=2,
                  logit_bias={str(opening): 6})
    free = client.chat.completions.create(**fields)
    assert max(len(choice.message.tool_calls or []) for choice in free.choices) > 1  # what the grammar prevents
    single = client.chat.completions.create(**fields, parallel_tool_calls=False)
    counts = [len(choice.message.tool_calls or []) for choice in single.choices]
    assert max(counts) == 1 and all(count <= 1 for count in counts)
    for call in (call for choice in single.choices for call in choice.message.tool_calls or []):
        jsonschema.validate(json.loads(call.function.arguments), SCHEMAS[call.function.name])  # text may come first
