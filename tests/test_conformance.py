"""Conformance against real-world material in ../shared/fixtures (skipped with a reason when absent):
OpenAI's OpenAPI description (every documented request field is declared: honoured or refused,
never an unknown argument) and the chat templates of real model families (our message
conversion renders through each, or fails with an OpenAI-shaped 400)."""

from __future__ import annotations

import copy
import json
from functools import lru_cache
from pathlib import Path
from typing import Any

import pytest

from localoai.chat_template import render_chat
from localoai.errors import InvalidRequestError
from localoai.protocol.base import parse_request
from localoai.protocol.chat import ChatCompletionRequest
from localoai.protocol.completions import CompletionRequest
from localoai.protocol.responses import CompactRequest, ResponseCreateRequest


@lru_cache(maxsize=1)
def _openapi(path: Path) -> dict[str, Any]:
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with path.open() as handle:
        return yaml.load(handle, Loader=loader)


def _properties(schemas: dict[str, Any], schema: dict[str, Any]) -> set[str]:
    if "$ref" in schema:
        return _properties(schemas, schemas[schema["$ref"].split("/")[-1]])
    names = set(schema.get("properties", {}))
    for part in schema.get("allOf", []):
        names |= _properties(schemas, part)
    return names


@pytest.mark.parametrize(
    ("schema", "model"),
    [("CreateChatCompletionRequest", ChatCompletionRequest), ("CreateCompletionRequest", CompletionRequest),
     ("CreateResponse", ResponseCreateRequest), ("CompactResponseMethodPublicBody", CompactRequest)],
)
def test_every_documented_request_field_is_declared(shared_fixtures: Path, schema: str, model: type) -> None:
    spec = _openapi(shared_fixtures / "openapi" / "openai-openapi.yaml")
    schemas = spec["components"]["schemas"]
    documented = _properties(schemas, schemas[schema])
    assert documented, f"{schema} has no properties in the spec"
    missing = documented - set(model.model_fields)
    assert not missing, f"documented but unknown to {model.__name__} (would be refused as unrecognized): {missing}"


TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
CONVERSATION = [
    {"role": "system", "content": "You answer briefly."},
    {"role": "user", "content": "What is the weather in paris?"},
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": "abc123XYZ", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "paris"}'}}]},
    {"role": "tool", "tool_call_id": "abc123XYZ", "content": "21 celsius and sunny"},
    {"role": "assistant", "content": "It is 21 celsius."},
    {"role": "user", "content": "And tomorrow?"},
]


# DeepSeek-R1's template renders an assistant tool call only when `message['content'] is none`,
# and transformers drops None-valued content before rendering, so no caller can reach that branch.
DROPS_TOOL_CALLS = {"deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja"}
# Phi-3.5's template has no `tool` role: the result would vanish from the prompt, so the server refuses.
NO_TOOL_ROLE = {"microsoft-Phi-3.5-mini-instruct.jinja"}


def _templates(fixtures: Path) -> list[Path]:
    return sorted((fixtures / "chat_templates").glob("*.jinja"))


def test_real_chat_templates_render_tool_conversations(shared_fixtures: Path, tiny: Any) -> None:
    _, base_tokenizer = tiny
    request = parse_request(ChatCompletionRequest, json.dumps(
        {"model": "m", "messages": CONVERSATION, "tools": TOOLS}))
    templates = _templates(shared_fixtures)
    assert templates, "no chat templates in the shared fixtures"
    rendered_with_tools = 0
    dropped: set[str] = set()
    refused: set[str] = set()
    for path in templates:
        tokenizer = copy.copy(base_tokenizer)
        tokenizer.chat_template = path.read_text()
        try:
            prompt = render_chat(tokenizer, request.messages, tools=request.tools)
        except InvalidRequestError as error:  # the template cannot render this conversation: a clean 400
            assert error.status == 400 and (error.param or "").startswith("messages"), path.name
            refused.add(path.name)
            continue
        for text in ("What is the weather in paris?", "21 celsius and sunny", "And tomorrow?"):
            assert text in prompt.text, f"{path.name} lost {text!r}"
        assert prompt.token_ids == tokenizer(prompt.text, add_special_tokens=False)["input_ids"]
        if "tool_calls" in path.read_text():
            if "get_weather" in prompt.text and '"paris"' in prompt.text.replace("'", '"'):
                rendered_with_tools += 1
            else:
                dropped.add(path.name)
    assert dropped == DROPS_TOOL_CALLS & {p.name for p in templates}
    assert refused == NO_TOOL_ROLE & {p.name for p in templates}
    assert rendered_with_tools >= len(templates) // 2, "most real templates should render a tool conversation"
