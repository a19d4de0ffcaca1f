"""Hosted tools: `start(hosted_tools={"web_search": fn})` runs the model's web searches on the server
and returns them as `web_search_call` items, the model answering from the result within the same
response; without an implementation a hosted tool is not offered, visibly (echo, record, log)."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from localoai.handlers.responses.hosted_tools import WEB_SEARCH_FUNCTION
from localoai.testing import running_server
from localoai.testing.openapi import sse_events
from localoai.testing.trained import train_assistant

QUESTION = "What is the weather in paris?"
QUERY = "paris weather"
RESULT = "Sunny, 21 celsius."
ANSWER = "It is 21 celsius in paris."
FUNCTION = {"type": "function", "function": WEB_SEARCH_FUNCTION}


def search_turns() -> list[tuple[list[dict[str, Any]], str]]:
    call = {"role": "assistant", "content": None, "tool_calls": [
        {"id": "ws_0", "type": "function", "function": {"name": "web_search",
                                                        "arguments": json.dumps({"query": QUERY})}}]}
    asked = [{"role": "user", "content": QUESTION}]
    markup = f'<tool_call>\n{json.dumps({"name": "web_search", "arguments": {"query": QUERY}})}\n</tool_call>'
    return [(asked, markup), ([*asked, call, {"role": "tool", "tool_call_id": "ws_0", "content": RESULT}], ANSWER)]


@pytest.fixture(scope="module")
def searcher() -> Iterator[tuple[Any, list[tuple[str, str]]]]:
    searched: list[tuple[str, str]] = []

    def web_search(query: str) -> str:
        searched.append((query, threading.current_thread().name))
        return RESULT

    model, tokenizer = train_assistant(search_turns(), tools=[FUNCTION])
    with running_server(model, tokenizer, name="searcher", hosted_tools={"web_search": web_search}) as server:
        yield server, searched


def test_the_server_runs_the_search_and_the_model_answers(searcher: Any) -> None:
    server, searched = searcher
    client = server.client(max_retries=0)
    tools = [{"type": "web_search", "external_web_access": False}]
    response = client.responses.create(model=server.model, input=QUESTION, tools=tools, temperature=0)
    assert [item.type for item in response.output] == ["web_search_call", "message"]
    call, message = response.output
    assert call.status == "completed" and call.action.type == "search" and call.action.query == QUERY
    assert message.content[0].text == ANSWER
    assert searched[-1][0] == QUERY and searched[-1][1] != "MainThread"  # run off the event loop
    assert [tool.type for tool in response.tools] == ["web_search"]
    # both rounds recorded token-exact: the search call's round on its own record
    final, first = server.store.get(response.id), server.store.get(f"{response.id}_0")
    assert RESULT in final.prompt_text and final.prompt_text.startswith(first.prompt_text)
    assert "web_search" in first.completions[0]["text"] and not first.store_visible
    assert response.usage.input_tokens == len(first.prompt_token_ids) + len(final.prompt_token_ids)

    # Codex sends the call back: it renders with the result the server kept for it
    again = client.responses.create(model=server.model, tools=tools, temperature=0, max_output_tokens=5, input=[
        {"role": "user", "content": QUESTION}, *[item.model_dump(exclude_none=True) for item in response.output],
        {"role": "user", "content": "Thanks."}])
    assert RESULT in server.store.get(again.id).prompt_text


def test_the_stream_of_a_hosted_call_validates(searcher: Any, openapi: Any) -> None:
    server, _ = searcher
    tools = [{"type": "web_search"}]
    events = sse_events(f"{server.base_url}/responses", {"model": server.model, "input": QUESTION, "tools": tools,
                                                         "temperature": 0, "stream": True})
    final_response = openapi.check_stream(events)
    assert [item["type"] for item in final_response["output"]] == ["web_search_call", "message"]
    types = [event["type"] for event in events]
    assert types[types.index("response.output_item.added"):types.index("response.output_item.done") + 1] == [
        "response.output_item.added", "response.web_search_call.in_progress", "response.web_search_call.searching",
        "response.web_search_call.completed", "response.output_item.done"]


def test_a_hosted_tool_without_implementation_is_not_offered_and_says_so(
    server: Any, client: openai.OpenAI, caplog: pytest.LogCaptureFixture,
) -> None:
    tools = [{"type": "web_search", "external_web_access": False}, {"type": "image_generation"},
             {"type": "function", "name": "f"}]
    with caplog.at_level(logging.WARNING, logger="localoai.handlers.responses.handler"):
        response = client.responses.create(model=server.model, input="hi", tools=tools, max_output_tokens=2)
    assert [tool.type for tool in response.tools] == ["function"]
    record = server.store.get(response.id)
    assert record.request["tools_not_offered"] == ["web_search", "image_generation"]
    assert "web_search" not in record.prompt_text and "image_generation" not in record.prompt_text
    assert any("not offered" in message and "web_search" in message for message in caplog.messages)


def test_only_known_hosted_tools_can_be_registered(tiny: Any) -> None:
    model, tokenizer = tiny
    with pytest.raises(ValueError, match="image_generation"):
        with running_server(model, tokenizer, hosted_tools={"image_generation": lambda **_: ""}):
            pass
