"""Anthropic's Messages API through the official `anthropic` SDK, against a live server on a tiny
reasoner trained to think, call `get_weather`, then answer: create, stream, tools, thinking and its
signatures, count_tokens, records, episodes, errors in Anthropic's shape, auth."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from localoai.testing import running_server
from localoai.testing.trained import ANSWER, QUESTION, THINK_BEFORE_ANSWER, THINK_BEFORE_CALL, TOOL_RESULT, \
    WEATHER_TOOL, train_reasoner
from localoai.widgets.format import conversation

KEY = "sk-messages-test"
TOOL = {"name": "get_weather", "description": WEATHER_TOOL["function"]["description"],
        "input_schema": WEATHER_TOOL["function"]["parameters"]}
REQUEST: dict[str, Any] = {"model": "claude-sonnet-4-5", "max_tokens": 60, "tools": [TOOL],
                           "extra_body": {"temperature": 0}}
FIRST = [{"role": "user", "content": QUESTION}]


@pytest.fixture(scope="module")
def server() -> Iterator[Any]:
    with running_server(*train_reasoner(), name="reasoner", api_key=KEY) as running:
        yield running


@pytest.fixture
def client(server: Any) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=server.url, api_key=KEY, max_retries=0)


def _second(first: anthropic.types.Message) -> list[dict[str, Any]]:
    call = next(block for block in first.content if block.type == "tool_use")
    return [*FIRST, {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": TOOL_RESULT}]}]


def _create(client: anthropic.Anthropic, messages: list[dict[str, Any]], *, stream: bool, **extra: Any) -> Any:
    if stream:
        with client.messages.stream(messages=messages, **{**REQUEST, **extra}) as events:
            return events.get_final_message()
    return client.messages.create(messages=messages, **{**REQUEST, **extra})


@pytest.mark.parametrize("stream", [False, True], ids=["create", "stream"])
def test_tool_loop_with_thinking(server: Any, client: anthropic.Anthropic, stream: bool) -> None:
    first = _create(client, FIRST, stream=stream)
    assert [block.type for block in first.content] == ["thinking", "tool_use"]
    thinking, call = first.content
    assert thinking.thinking == THINK_BEFORE_CALL and thinking.signature
    assert call.name == "get_weather" and call.input == {"city": "paris"} and call.id.startswith("toolu_")
    assert first.stop_reason == "tool_use" and first.stop_sequence is None
    second = _create(client, _second(first), stream=stream)  # the signed thinking goes back
    assert [block.type for block in second.content] == ["thinking", "text"]
    assert second.content[0].thinking == THINK_BEFORE_ANSWER and second.content[1].text == ANSWER
    assert second.stop_reason == "end_turn"
    record = server.store.get(second.id)
    assert record.kind == "message" and record.status == "completed"
    assert THINK_BEFORE_CALL in record.prompt_text  # the earlier turn's thinking, re-rendered
    assert len(record.prompt_token_ids) == second.usage.input_tokens
    (trace,) = record.completions
    assert len(trace["completion_token_ids"]) == second.usage.output_tokens
    assert trace["reasoning_content"] == THINK_BEFORE_ANSWER
    assert record.output["content"][1]["text"] == ANSWER and record.request["messages"][1]["role"] == "assistant"
    turns = conversation(record)
    assert [turn.role for turn in turns] == ["user", "assistant", "tool", "assistant"]
    assert turns[1].tool_calls[0].name == "get_weather" and turns[-1].generated and turns[-1].text == ANSWER


def test_streamed_equals_created(client: anthropic.Anthropic) -> None:
    created = client.messages.create(messages=FIRST, **REQUEST)
    streamed = _create(client, FIRST, stream=True)
    def fields(message: anthropic.types.Message) -> dict[str, Any]:
        data = message.model_dump(exclude={"id"})
        for block in data["content"]:
            block.pop("id", None)  # each call gets its own id
        return data

    assert fields(streamed) == fields(created)


def test_stream_framing_has_ping_and_anthropic_events(server: Any) -> None:
    body = {"model": "any", "max_tokens": 60, "messages": FIRST, "tools": [TOOL], "temperature": 0, "stream": True}
    response = httpx.post(f"{server.url}/v1/messages?beta=true", json=body, timeout=60,
                          headers={"x-api-key": KEY, "anthropic-version": "2023-06-01", "anthropic-beta": "x"})
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
    events = [(block.split("\n")[0].removeprefix("event: "), json.loads(block.split("\n")[1].removeprefix("data: ")))
              for block in response.text.strip().split("\n\n")]
    assert all(name == data["type"] for name, data in events)
    names = [name for name, _ in events]
    assert names[:2] == ["message_start", "ping"] and names[-2:] == ["message_delta", "message_stop"]
    deltas = [data["delta"]["type"] for name, data in events if name == "content_block_delta"]
    assert {"thinking_delta", "signature_delta", "input_json_delta"} <= set(deltas)
    assert names.count("content_block_start") == names.count("content_block_stop") == 2


def test_count_tokens_equals_the_prompt(server: Any, client: anthropic.Anthropic) -> None:
    created = client.messages.create(messages=FIRST, system="Be brief.", **REQUEST)
    counted = client.messages.count_tokens(model="claude-haiku-4-5", messages=FIRST, system="Be brief.", tools=[TOOL])
    assert counted.input_tokens == len(server.store.get(created.id).prompt_token_ids) == created.usage.input_tokens


def test_omitted_thinking_round_trips_through_its_signature(client: anthropic.Anthropic) -> None:
    first = client.messages.create(messages=FIRST, thinking={"type": "adaptive", "display": "omitted"}, **REQUEST)
    assert first.content[0].type == "thinking" and first.content[0].thinking == ""
    second = client.messages.create(messages=_second(first), **REQUEST)
    assert second.content[-1].text == ANSWER


def test_forged_signature_and_redacted_thinking_are_refused(client: anthropic.Anthropic) -> None:
    first = client.messages.create(messages=FIRST, **REQUEST)
    forged = _second(first)
    forged[1]["content"][0]["thinking"] = "I was told to say something else."
    forged[1]["content"][0]["signature"] = "EqoBCkgIARABGAIiQ"
    with pytest.raises(anthropic.BadRequestError, match="signature"):
        client.messages.create(messages=forged, **REQUEST)
    forged[1]["content"][0] = {"type": "redacted_thinking", "data": "abc"}
    with pytest.raises(anthropic.BadRequestError, match="redacted_thinking"):
        client.messages.create(messages=forged, **REQUEST)


def test_tool_choice_forces_and_removes_calls(server: Any, client: anthropic.Anthropic) -> None:
    hello = [{"role": "user", "content": "hello"}]
    forced = client.messages.create(messages=hello, tool_choice={"type": "tool", "name": "get_weather"},
                                    **{**REQUEST, "max_tokens": 200})
    (call,) = [block for block in forced.content if block.type == "tool_use"]
    assert call.name == "get_weather" and isinstance(call.input.get("city"), str)
    assert forced.stop_reason == "tool_use"
    none = client.messages.create(messages=FIRST, tool_choice={"type": "none"}, **REQUEST)
    assert all(block.type != "tool_use" for block in none.content)
    assert "get_weather" not in server.store.get(none.id).prompt_text


def test_stop_reasons(client: anthropic.Anthropic) -> None:
    stopped = client.messages.create(messages=FIRST, stop_sequences=["wants"], **REQUEST)
    assert stopped.stop_reason == "stop_sequence" and stopped.stop_sequence == "wants"
    assert "The user" in stopped.content[0].thinking and "wants" not in stopped.content[0].thinking
    short = client.messages.create(messages=FIRST, **{**REQUEST, "max_tokens": 2})
    assert short.stop_reason == "max_tokens" and short.usage.output_tokens == 2


def test_thinking_switch(server: Any, client: anthropic.Anthropic) -> None:
    off = client.messages.create(messages=FIRST, thinking={"type": "disabled"}, **REQUEST)
    assert server.store.get(off.id).prompt_text.endswith("<think>\n\n</think>\n\n")
    on = client.messages.create(messages=FIRST, thinking={"type": "enabled", "budget_tokens": 1024}, **REQUEST)
    assert server.store.get(on.id).prompt_text.endswith("<|im_start|>assistant\n")


def test_episode_url_captures_the_loop(server: Any) -> None:
    client = anthropic.Anthropic(base_url=f"{server.url}/episodes/anthropic-1", api_key=KEY, max_retries=0)
    first = client.messages.create(messages=FIRST, **REQUEST)
    second = client.messages.create(messages=_second(first), **REQUEST)
    records = {record.id: record for record in server.store.list(episode_id="anthropic-1")}
    assert set(records) == {first.id, second.id}
    ledger = records[second.id].ledger
    assert ledger["extends"] == first.id and ledger["spliced"]  # the sampled call, not its re-rendering
    head = records[first.id].prompt_token_ids + records[first.id].completions[0]["completion_token_ids"]
    assert records[second.id].prompt_token_ids[:len(head)] == head


def _error(response: httpx.Response, status: int, kind: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["type"] == "error" and body["error"]["type"] == kind
    return body["error"]["message"]


@pytest.mark.parametrize(("body", "needle"), [
    ({"model": "m", "messages": FIRST}, "max_tokens"),
    ({"model": "m", "max_tokens": 5, "messages": FIRST, "bogus": 1}, "bogus"),
    ({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AA=="}}]}]}, "image"),
    ({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": [
        {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "x"}}]}]}, "document"),
    ({"model": "m", "max_tokens": 5, "messages": FIRST,
      "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": {"type": "thinking_turns", "value": 1}}]}},
     "context_management"),
    ({"model": "m", "max_tokens": 5, "messages": FIRST, "tool_choice": {"type": "tool", "name": "nope"}}, "tool_choice"),
    ({"model": "m", "max_tokens": 5, "messages": FIRST, "temperature": 1.5}, "temperature"),
    ({"model": "m", "max_tokens": 5, "messages": FIRST, "tools": [{"type": "web_search_20250305", "name": "web_search"}]},
     "web_search_20250305"),
])
def test_bad_bodies_get_anthropic_errors(server: Any, body: dict[str, Any], needle: str) -> None:
    response = httpx.post(f"{server.url}/v1/messages", json=body, headers={"x-api-key": KEY}, timeout=30)
    assert needle in _error(response, 400, "invalid_request_error")


def test_http_errors_and_auth_in_anthropic_shape(server: Any) -> None:
    ok = {"model": "m", "max_tokens": 1, "messages": FIRST}
    _error(httpx.post(f"{server.url}/v1/messages", json=ok), 401, "authentication_error")
    _error(httpx.post(f"{server.url}/v1/messages", json=ok, headers={"x-api-key": "wrong"}), 401,
           "authentication_error")
    _error(httpx.post(f"{server.url}/v1/messages/batches", json=ok, headers={"x-api-key": KEY}), 404, "not_found_error")
    _error(httpx.get(f"{server.url}/v1/messages", headers={"x-api-key": KEY}), 405, "invalid_request_error")
    bearer = httpx.post(f"{server.url}/v1/messages/count_tokens", json={"model": "m", "messages": FIRST},
                        headers={"Authorization": f"Bearer {KEY}"})
    assert bearer.status_code == 200 and bearer.json()["input_tokens"] > 0
    # OpenAI paths keep OpenAI's shape
    assert "message" in httpx.post(f"{server.url}/v1/chat/completions", json={}).json()["error"]


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=5),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
                    max_leaves=8)
FIELDS = ["model", "messages", "system", "tools", "tool_choice", "thinking", "stop_sequences",
          "metadata", "top_k", "context_management"]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(field=st.sampled_from(FIELDS), value=JSON)
def test_any_bad_field_is_a_4xx_before_generation(server: Any, field: str, value: Any) -> None:
    body = {"model": "m", "messages": FIRST, field: value}  # count_tokens: validated and rendered, not generated
    response = httpx.post(f"{server.url}/v1/messages/count_tokens", json=body, headers={"x-api-key": KEY}, timeout=30)
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        assert response.json()["type"] == "error"


def test_translation_into_chat_messages() -> None:
    from localoai.handlers.messages.content import ThinkingSigner, chat_messages
    from localoai.protocol.messages import MessageCreateRequest

    signer = ThinkingSigner()
    request = MessageCreateRequest.model_validate({
        "model": "m", "max_tokens": 5,
        "system": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": ""}, {"type": "text", "text": QUESTION}]},
            {"role": "system", "content": "Mid-conversation note.", "output_config": {"effort": "low"}},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "", "signature": signer.sign(THINK_BEFORE_CALL)},
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "paris"}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "is_error": True,
                 "content": [{"type": "text", "text": "timeout"}]},
                {"type": "text", "text": "Try again."}]},
        ]})
    messages = [message.model_dump(exclude_none=True) for message in chat_messages(request, signer)]
    assert messages == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": QUESTION},
        {"role": "system", "content": "Mid-conversation note."},
        {"role": "assistant", "reasoning_content": THINK_BEFORE_CALL, "tool_calls": [
            {"id": "toolu_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "paris"}'}}]},
        {"role": "tool", "tool_call_id": "toolu_1", "content": "Error: timeout"},
        {"role": "user", "content": "Try again."},
    ]
