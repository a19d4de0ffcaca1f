"""gpt-oss's harmony format end to end: a tiny model trained in a fixture to write harmony (reasoning on
the analysis channel, a call to `functions.get_weather` on the commentary channel, the answer on the
final channel) through the official `openai` SDK. Harmony's markup is special tokens, so this also
checks that the server decodes them for the parser and that none reach the caller."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from localoai.testing import running_server
from localoai.testing.trained import (
    ANSWER,
    QUESTION,
    THINK_BEFORE_ANSWER,
    THINK_BEFORE_CALL,
    TOOL_RESULT,
    WEATHER_TOOL,
    train_harmony_reasoner,
)

RESPONSES_TOOL = {"type": "function", **WEATHER_TOOL["function"]}
CHAT = {"model": "harmony", "tools": [WEATHER_TOOL], "temperature": 0, "max_tokens": 120}
RENDERED_REASONING = f"<|channel|>analysis<|message|>{THINK_BEFORE_CALL}<|end|>"


@pytest.fixture(scope="module")
def harmony_server() -> Iterator[Any]:
    with running_server(*train_harmony_reasoner(), name="harmony") as server:
        assert server.served.reasoning_format == "harmony"  # chosen from the chat template
        yield server


@pytest.fixture
def harmony(harmony_server: Any) -> openai.OpenAI:
    return harmony_server.client(max_retries=0)


@pytest.mark.parametrize("stream", [False, True], ids=["create", "stream"])
def test_chat_harmony_agent_loop(harmony_server: Any, harmony: openai.OpenAI, stream: bool) -> None:
    messages: list[dict[str, Any]] = [{"role": "user", "content": QUESTION}]
    if stream:
        with harmony.chat.completions.stream(messages=messages, **CHAT) as events:
            first = events.get_final_completion()
    else:
        first = harmony.chat.completions.create(messages=messages, **CHAT)
    message = first.choices[0].message
    assert message.reasoning_content == THINK_BEFORE_CALL  # type: ignore[attr-defined]
    assert not message.content and first.choices[0].finish_reason == "tool_calls"
    (call,) = message.tool_calls
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "paris"}
    assert "<|channel|>" in harmony_server.store.get(first.id).completions[0]["text"]  # the trace keeps the markup

    messages.append(message.model_dump(exclude_none=True, exclude={"parsed"}))
    messages.append({"role": "tool", "tool_call_id": call.id, "content": TOOL_RESULT})
    second = harmony.chat.completions.create(messages=messages, **CHAT)
    assert RENDERED_REASONING in harmony_server.store.get(second.id).prompt_text  # sent back as `thinking`
    assert second.choices[0].message.reasoning_content == THINK_BEFORE_ANSWER  # type: ignore[attr-defined]
    assert second.choices[0].message.content == ANSWER and second.choices[0].finish_reason == "stop"


@pytest.mark.parametrize("stream", [False, True], ids=["create", "stream"])
def test_responses_harmony_agent_loop(harmony_server: Any, harmony: openai.OpenAI, stream: bool) -> None:
    request = {"model": "harmony", "input": QUESTION, "tools": [RESPONSES_TOOL], "temperature": 0,
               "max_output_tokens": 120}
    if stream:
        with harmony.responses.stream(**request) as events:
            first = events.get_final_response()
    else:
        first = harmony.responses.create(**request)
    reasoning, call = first.output
    assert reasoning.type == "reasoning" and reasoning.content[0].text == THINK_BEFORE_CALL
    assert call.type == "function_call" and json.loads(call.arguments) == {"city": "paris"}
    stored = harmony.responses.retrieve(first.id)
    assert stored.model_dump(exclude_none=True) == first.model_dump(exclude_none=True)

    answer = harmony.responses.create(
        model="harmony", previous_response_id=first.id, tools=[RESPONSES_TOOL], temperature=0, max_output_tokens=120,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": TOOL_RESULT}])
    assert RENDERED_REASONING in harmony_server.store.get(answer.id).prompt_text
    assert [item.type for item in answer.output] == ["reasoning", "message"]
    assert answer.output[0].content[0].text == THINK_BEFORE_ANSWER and answer.output_text == ANSWER


def test_harmony_reasoning_effort_goes_to_the_template(harmony_server: Any, harmony: openai.OpenAI) -> None:
    reply = harmony.responses.create(model="harmony", input="hello", max_output_tokens=2, reasoning={"effort": "high"})
    assert "Reasoning: high" in harmony_server.store.get(reply.id).prompt_text
    refused = httpx.post(f"{harmony_server.base_url}/chat/completions", json={
        "model": "harmony", "messages": [{"role": "user", "content": "hello"}], "reasoning_effort": "minimal"})
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "reasoning_effort"
