"""End to end: a tiny model trained in a fixture to call a tool drives an agent loop through the
official `openai` SDK (the model calls the tool, the test returns the result, the model answers)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from localoai.testing import running_server
from localoai.testing.trained import ANSWER, QUESTION, TOOL_RESULT, WEATHER_TOOL, train_tool_caller


@pytest.fixture(scope="module")
def agent_server() -> Iterator[Any]:
    model, tokenizer = train_tool_caller()
    with running_server(model, tokenizer, name="agent") as server:
        yield server


def run_agent_loop(client: openai.OpenAI, *, stream: bool) -> tuple[Any, str]:
    messages: list[dict[str, Any]] = [{"role": "user", "content": QUESTION}]
    request: dict[str, Any] = {"model": "agent", "tools": [WEATHER_TOOL], "temperature": 0, "max_tokens": 40}
    if stream:
        with client.chat.completions.stream(messages=messages, **request) as events:
            first = events.get_final_completion()
    else:
        first = client.chat.completions.create(messages=messages, **request)
    call = first.choices[0].message.tool_calls[0]
    messages.append(first.choices[0].message.model_dump(exclude_none=True, exclude={"parsed"}))
    messages.append({"role": "tool", "tool_call_id": call.id, "content": TOOL_RESULT})
    second = client.chat.completions.create(messages=messages, **request)
    return first, second.choices[0].message.content or ""


@pytest.mark.parametrize("stream", [False, True], ids=["create", "stream"])
def test_agent_loop_on_chat_completions(agent_server: Any, stream: bool) -> None:
    first, answer = run_agent_loop(agent_server.client(max_retries=0), stream=stream)
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert not choice.message.content  # no markup leaks into content
    (call,) = choice.message.tool_calls
    assert call.type == "function" and call.id.startswith("call_")
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "paris"}
    assert answer == ANSWER


def test_streamed_tool_call_deltas_have_openai_shape(agent_server: Any) -> None:
    client = agent_server.client(max_retries=0)
    chunks = list(client.chat.completions.create(
        model="agent", messages=[{"role": "user", "content": QUESTION}], tools=[WEATHER_TOOL], temperature=0,
        max_tokens=40, stream=True))
    deltas = [c.choices[0].delta for c in chunks if c.choices and c.choices[0].delta.tool_calls]
    assert deltas, "no tool-call deltas were streamed"
    opening = deltas[0].tool_calls[0]
    assert opening.index == 0 and opening.id.startswith("call_") and opening.type == "function"
    assert opening.function.name == "get_weather"
    assert all(d.tool_calls[0].id is None and d.tool_calls[0].function.name is None for d in deltas[1:])
    arguments = "".join(d.tool_calls[0].function.arguments or "" for d in deltas)
    assert json.loads(arguments) == {"city": "paris"}
    assert all("<tool_call>" not in (c.choices[0].delta.content or "") for c in chunks if c.choices)
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["tool_calls"]


def test_without_tools_the_markup_is_plain_content(agent_server: Any) -> None:
    reply = agent_server.client(max_retries=0).chat.completions.create(
        model="agent", messages=[{"role": "user", "content": QUESTION}], temperature=0, max_tokens=40)
    assert reply.choices[0].message.tool_calls is None
    assert reply.choices[0].finish_reason in ("stop", "length")


def test_tool_call_is_in_the_trace(agent_server: Any) -> None:
    client = agent_server.client(max_retries=0)
    reply = client.chat.completions.create(model="agent", messages=[{"role": "user", "content": QUESTION}],
                                           tools=[WEATHER_TOOL], temperature=0, max_tokens=40,
                                           extra_body={"return_token_ids": True})
    record = agent_server.store.get(reply.id)
    tokenizer = agent_server.served.tokenizer
    # The trace keeps the raw tokens, markup included, exactly as sampled.
    assert "<tool_call>" in tokenizer.decode(record.completions[0]["completion_token_ids"])
    assert record.output["choices"][0]["message"]["tool_calls"][0]["function"]["name"] == "get_weather"
