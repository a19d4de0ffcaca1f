"""Reasoning end to end: a tiny model trained in a fixture to think in a `<think>` block before it
calls a tool and before it answers, driven through the official `openai` SDK on chat completions
and on Responses, streamed and not; its reasoning sent back on the next turn reaches the prompt, and
a reasoning effort becomes the chat template's `enable_thinking` switch."""

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
    train_reasoner,
)

RESPONSES_TOOL = {"type": "function", **WEATHER_TOOL["function"]}
THINKING_OFF = "<think>\n\n</think>\n\n"


@pytest.fixture(scope="module")
def reasoner_model() -> tuple[Any, Any]:
    return train_reasoner()


@pytest.fixture(scope="module")
def reasoner_server(reasoner_model: tuple[Any, Any]) -> Iterator[Any]:
    with running_server(*reasoner_model, name="reasoner") as server:
        assert server.served.reasoning_format == "qwen3"  # chosen from the chat template
        yield server


@pytest.fixture
def reasoner(reasoner_server: Any) -> openai.OpenAI:
    return reasoner_server.client(max_retries=0)


CHAT = {"model": "reasoner", "tools": [WEATHER_TOOL], "temperature": 0, "max_tokens": 60}


# -- chat completions --------------------------------------------------------------------------


def reasoning_tokens(reasoner_model: tuple[Any, Any], reasoning: str) -> int:
    """How many tokens the model spent on its `<think>` block (both tags included)."""
    return len(reasoner_model[1](f"<think>\n{reasoning}\n</think>", add_special_tokens=False)["input_ids"])


@pytest.mark.parametrize("stream", [False, True], ids=["create", "stream"])
def test_chat_reasoning_then_call_then_answer(reasoner_model: tuple[Any, Any], reasoner_server: Any,
                                              reasoner: openai.OpenAI, stream: bool) -> None:
    messages: list[dict[str, Any]] = [{"role": "user", "content": QUESTION}]
    if stream:
        with reasoner.chat.completions.stream(messages=messages, stream_options={"include_usage": True},
                                              **CHAT) as events:
            first = events.get_final_completion()
    else:
        first = reasoner.chat.completions.create(messages=messages, **CHAT)
    message = first.choices[0].message
    assert message.reasoning_content == THINK_BEFORE_CALL  # type: ignore[attr-defined]
    assert not message.content and first.choices[0].finish_reason == "tool_calls"
    (call,) = message.tool_calls
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "paris"}
    assert first.usage.completion_tokens_details.reasoning_tokens == reasoning_tokens(reasoner_model, THINK_BEFORE_CALL)
    trace = reasoner_server.store.get(first.id).completions[0]
    assert trace["reasoning_content"] == THINK_BEFORE_CALL and "<think>" in trace["text"]

    messages.append(message.model_dump(exclude_none=True, exclude={"parsed"}))  # reasoning_content included
    messages.append({"role": "tool", "tool_call_id": call.id, "content": TOOL_RESULT})
    second = reasoner.chat.completions.create(messages=messages, **CHAT)
    assert f"<think>\n{THINK_BEFORE_CALL}\n</think>" in reasoner_server.store.get(second.id).prompt_text
    assert second.choices[0].message.reasoning_content == THINK_BEFORE_ANSWER  # type: ignore[attr-defined]
    assert second.choices[0].message.content == ANSWER


def test_chat_stream_sends_reasoning_as_reasoning_content_deltas(reasoner: openai.OpenAI) -> None:
    chunks = list(reasoner.chat.completions.create(messages=[{"role": "user", "content": QUESTION}], stream=True,
                                                   **CHAT))
    deltas = [chunk.choices[0].delta for chunk in chunks if chunk.choices]
    reasoning = [text for d in deltas if (text := (d.model_extra or {}).get("reasoning_content"))]
    assert len(reasoning) > 1 and "".join(reasoning) == THINK_BEFORE_CALL  # streamed, not sent at the end
    assert not any(d.content for d in deltas)  # no markup leaks into content
    first_call = next(i for i, d in enumerate(deltas) if d.tool_calls)
    assert all(not (d.model_extra or {}).get("reasoning_content") for d in deltas[first_call:])


def test_chat_reasoning_effort_switches_thinking_in_the_prompt(reasoner_server: Any, reasoner: openai.OpenAI) -> None:
    messages = [{"role": "user", "content": "hello"}]
    off = reasoner.chat.completions.create(messages=messages, reasoning_effort="none", **{**CHAT, "max_tokens": 2})
    on = reasoner.chat.completions.create(messages=messages, reasoning_effort="high", **{**CHAT, "max_tokens": 2})
    assert reasoner_server.store.get(off.id).prompt_text.endswith(THINKING_OFF)
    assert not reasoner_server.store.get(on.id).prompt_text.endswith(THINKING_OFF)
    conflict = httpx.post(f"{reasoner_server.base_url}/chat/completions", json={
        "model": "reasoner", "messages": messages, "reasoning_effort": "minimal",
        "chat_template_kwargs": {"enable_thinking": True}})
    assert conflict.status_code == 400 and conflict.json()["error"]["param"] == "reasoning_effort"


def test_reasoning_parser_none_leaves_the_block_in_the_content(reasoner_model: tuple[Any, Any]) -> None:
    with running_server(*reasoner_model, name="plain", reasoning_parser="none") as server:
        reply = server.client(max_retries=0).chat.completions.create(
            messages=[{"role": "user", "content": QUESTION}], **{**CHAT, "model": "plain"})
    message = reply.choices[0].message
    assert message.content == f"<think>\n{THINK_BEFORE_CALL}\n</think>" and message.tool_calls
    assert "reasoning_content" not in (message.model_extra or {})
    with pytest.raises(ValueError, match="unknown reasoning parser"):
        with running_server(*reasoner_model, name="bad", reasoning_parser="bogus"):
            pass


# -- Responses ---------------------------------------------------------------------------------


def first_response(client: openai.OpenAI, *, stream: bool, **extra: Any) -> Any:
    request = {"model": "reasoner", "input": QUESTION, "tools": [RESPONSES_TOOL], "temperature": 0,
               "max_output_tokens": 60, **extra}
    if stream:
        with client.responses.stream(**request) as events:
            return events.get_final_response()
    return client.responses.create(**request)


@pytest.mark.parametrize("stream", [False, True], ids=["create", "stream"])
def test_responses_reasoning_item_then_call(reasoner_model: tuple[Any, Any], reasoner_server: Any,
                                            reasoner: openai.OpenAI, stream: bool) -> None:
    response = first_response(reasoner, stream=stream)
    spent = reasoning_tokens(reasoner_model, THINK_BEFORE_CALL)
    assert response.usage.output_tokens_details.reasoning_tokens == spent < response.usage.output_tokens
    reasoning, call = response.output
    assert reasoning.type == "reasoning" and reasoning.id.startswith("rs_") and reasoning.summary == []
    assert [(part.type, part.text) for part in reasoning.content] == [("reasoning_text", THINK_BEFORE_CALL)]
    assert reasoning.status == "completed"
    assert call.type == "function_call" and call.name == "get_weather"
    assert json.loads(call.arguments) == {"city": "paris"}
    stored = reasoner.responses.retrieve(response.id)  # the streamed final is what was stored
    assert stored.model_dump(exclude_none=True) == response.model_dump(exclude_none=True)
    assert reasoner_server.store.get(response.id).completions[0]["reasoning_content"] == THINK_BEFORE_CALL

    answer = reasoner.responses.create(
        model="reasoner", previous_response_id=response.id, tools=[RESPONSES_TOOL], temperature=0,
        max_output_tokens=60, input=[{"type": "function_call_output", "call_id": call.call_id, "output": TOOL_RESULT}])
    assert f"<think>\n{THINK_BEFORE_CALL}\n</think>" in reasoner_server.store.get(answer.id).prompt_text
    assert [item.type for item in answer.output] == ["reasoning", "message"]
    assert answer.output[0].content[0].text == THINK_BEFORE_ANSWER
    assert answer.output_text == ANSWER


def test_responses_reasoning_stream_events(reasoner: openai.OpenAI) -> None:
    events = list(reasoner.responses.create(model="reasoner", input=QUESTION, tools=[RESPONSES_TOOL], temperature=0,
                                            max_output_tokens=60, stream=True))
    kinds = [event.type for event in events]
    opened = kinds.index("response.output_item.added")
    assert events[opened].item.type == "reasoning" and events[opened].item.content == []
    assert kinds[opened + 1] == "response.content_part.added" and events[opened + 1].part.type == "reasoning_text"
    deltas = [event.delta for event in events if event.type == "response.reasoning_text.delta"]
    assert len(deltas) > 1 and "".join(deltas) == THINK_BEFORE_CALL
    done = next(event for event in events if event.type == "response.reasoning_text.done")
    assert done.text == THINK_BEFORE_CALL and done.output_index == 0
    closing = kinds.index("response.reasoning_text.done")
    assert kinds[closing:closing + 3] == ["response.reasoning_text.done", "response.content_part.done",
                                          "response.output_item.done"]
    assert [event.sequence_number for event in events] == list(range(len(events)))
    assert "response.output_text.delta" not in kinds  # no markup leaks into a message


def test_reasoning_items_sent_back_in_input_are_rendered(reasoner_server: Any, reasoner: openai.OpenAI) -> None:
    first = first_response(reasoner, stream=False)
    reasoning, call = first.output
    answer = reasoner.responses.create(
        model="reasoner", tools=[RESPONSES_TOOL], temperature=0, max_output_tokens=60,
        input=[{"role": "user", "content": QUESTION}, reasoning.model_dump(exclude_none=True),
               call.model_dump(exclude_none=True),
               {"type": "function_call_output", "call_id": call.call_id, "output": TOOL_RESULT}])
    assert f"<think>\n{THINK_BEFORE_CALL}\n</think>" in reasoner_server.store.get(answer.id).prompt_text
    assert answer.output_text == ANSWER


def test_responses_reasoning_effort_switches_thinking(reasoner_server: Any, reasoner: openai.OpenAI) -> None:
    off = reasoner.responses.create(model="reasoner", input="hello", max_output_tokens=2,
                                    reasoning={"effort": "minimal", "summary": "auto"})
    assert reasoner_server.store.get(off.id).prompt_text.endswith(THINKING_OFF)
    assert off.reasoning is not None and off.reasoning.effort == "minimal" and off.reasoning.summary == "auto"
    on = reasoner.responses.create(model="reasoner", input="hello", max_output_tokens=2, reasoning={"effort": "low"})
    assert not reasoner_server.store.get(on.id).prompt_text.endswith(THINKING_OFF)
    counted = reasoner.responses.input_tokens.count(model="reasoner", input="hello", reasoning={"effort": "none"})
    assert counted.input_tokens == len(reasoner_server.store.get(off.id).prompt_token_ids)
