"""The Responses API through the official `openai` SDK against a live server on a real tiny model,
plus raw HTTP for the SSE framing and the error envelopes.

The session model decodes greedily into the same token forever, so a greedy response is always
`incomplete`; the completed path (which `responses.stream().get_final_response()` needs) runs on a
module server whose end-of-sequence ids include that token, and which can be made to fail.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from localoai.handlers.responses.inputs import from_turn, turn_starts
from localoai.testing import ScriptedEngine, running_server, wait_until

TOOL = {"type": "function", "name": "get_weather", "description": "Weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}, "strict": False}
STREAM_ORDER = ["response.created", "response.in_progress", "response.output_item.added",
                "response.content_part.added"]
CLOSING = ["response.output_text.done", "response.content_part.done", "response.output_item.done"]


def create(client: openai.OpenAI, server: Any, **kwargs: Any) -> Any:
    kwargs.setdefault("input", "hello")
    kwargs.setdefault("max_output_tokens", 4)
    return client.responses.create(model=server.model, **kwargs)


def rendered(tokenizer: Any, messages: list[dict[str, Any]], **kwargs: Any) -> str:
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False, **kwargs)


@pytest.fixture(scope="module")
def server(scripted_server: Any) -> Any:
    """This module's protocol tests run on the scripted engine (tests/conftest.py), not random weights."""
    return scripted_server


@pytest.fixture(scope="module")
def ending(tiny: tuple[Any, Any]) -> Iterator[tuple[Any, threading.Event]]:
    """A server whose responses end after a few words (so they complete), and fail while the
    returned event is set."""
    model, tokenizer = tiny
    fail = threading.Event()
    words = tokenizer.encode(" ok", add_special_tokens=False)[:2]

    def script(prompt_ids: list[int], params: Any, index: int) -> Iterator[int]:
        if fail.is_set():
            raise RuntimeError("injected failure")
        yield from words

    engine = ScriptedEngine(tokenizer, script, context_length=model.config.max_position_embeddings)
    with running_server(model, tokenizer, name="ending", engine=engine) as running:
        yield running, fail


# --- create -------------------------------------------------------------------------------


def test_create_with_a_string_hits_max_output_tokens(client: openai.OpenAI, server: Any) -> None:
    reply = create(client, server, temperature=0, top_p=0.5, instructions="be terse", metadata={"run": "1"},
                   user="u1", truncation="disabled", parallel_tool_calls=False)
    assert reply.object == "response" and reply.id.startswith("resp_") and reply.model == "tiny"
    assert reply.status == "incomplete" and reply.incomplete_details.reason == "max_output_tokens"
    [message] = reply.output
    assert message.type == "message" and message.role == "assistant" and message.id.startswith("msg_")
    assert message.status == "incomplete"
    [part] = message.content
    assert part.type == "output_text" and part.annotations == [] and part.logprobs == []
    assert reply.output_text == part.text and part.text
    assert reply.usage.output_tokens == 4
    assert reply.usage.total_tokens == reply.usage.input_tokens + 4
    assert reply.usage.input_tokens_details.cached_tokens == 0
    assert reply.usage.output_tokens_details.reasoning_tokens == 0
    # the request's settings are echoed, as OpenAI does
    assert (reply.instructions, reply.metadata, reply.temperature, reply.top_p) == ("be terse", {"run": "1"}, 0, 0.5)
    assert (reply.max_output_tokens, reply.store, reply.truncation, reply.user) == (4, True, "disabled", "u1")
    assert (reply.tool_choice, reply.tools, reply.parallel_tool_calls) == ("auto", [], False)
    assert reply.text.format.type == "text" and reply.previous_response_id is None and reply.error is None
    record = server.store.get(reply.id)
    assert record.kind == "response" and record.store_visible and record.metadata == {"run": "1"}
    assert record.output == reply.model_dump(mode="json", exclude_unset=True)
    assert record.completions[0]["text"] == reply.output_text
    assert len(record.prompt_token_ids) == reply.usage.input_tokens


def test_instructions_and_developer_messages_are_one_system_message(
        client: openai.OpenAI, server: Any, tiny: Any) -> None:
    _, tokenizer = tiny
    reply = create(client, server, instructions="rule one", input=[
        {"role": "developer", "content": "rule two"},
        {"type": "message", "role": "system", "content": [{"type": "input_text", "text": "rule three"}]},
        {"role": "user", "content": [{"type": "input_text", "text": "hi"}, {"type": "input_text", "text": "there"}]},
    ])
    expected = rendered(tokenizer, [{"role": "system", "content": "rule one\n\nrule two\n\nrule three"},
                                    {"role": "user", "content": "hi\nthere"}])
    assert server.store.get(reply.id).prompt_text == expected


def test_item_lists_with_assistant_turns_and_tool_calls_are_rendered(
        client: openai.OpenAI, server: Any, tiny: Any) -> None:
    _, tokenizer = tiny
    reply = create(client, server, tools=[TOOL], input=[
        {"role": "user", "content": "weather in paris?"},
        {"role": "assistant", "content": [{"type": "output_text", "text": "Let me check.", "annotations": []}]},
        {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": '{"city": "paris"}'},
        {"type": "function_call_output", "call_id": "call_1", "output": "21 celsius"},
        {"role": "user", "content": "and so?"},
    ])
    prompt = server.store.get(reply.id).prompt_text
    assert '"name": "get_weather"' in prompt and "<tools>" in prompt
    assert '<tool_call>{"name": "get_weather", "arguments": {"city": "paris"}}</tool_call>' in prompt
    assert "<tool_response>\n21 celsius\n</tool_response>" in prompt
    chat_tool = {"type": "function", "function": {k: TOOL[k] for k in ("name", "description", "parameters")}}
    assert prompt == rendered(tokenizer, [
        {"role": "user", "content": "weather in paris?"},
        {"role": "assistant", "content": "Let me check.", "tool_calls": [{"id": "call_1", "type": "function",
         "function": {"name": "get_weather", "arguments": {"city": "paris"}}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "21 celsius"},
        {"role": "user", "content": "and so?"},
    ], tools=[chat_tool])
    assert [tool.name for tool in reply.tools] == ["get_weather"]
    no_tools = create(client, server, tools=[TOOL], tool_choice="none")
    assert "<tools>" not in server.store.get(no_tools.id).prompt_text and no_tools.tool_choice == "none"


def test_reasoning_items_are_accepted_listed_and_not_rendered(client: openai.OpenAI, server: Any) -> None:
    reasoning = {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "think hard"}],
                 "encrypted_content": "opaque"}
    reply = create(client, server, input=[{"role": "user", "content": "hi"}, reasoning])
    assert "think hard" not in server.store.get(reply.id).prompt_text
    items = client.responses.input_items.list(reply.id, order="asc").data
    assert items[1].type == "reasoning" and items[1].id == "rs_1" and items[1].encrypted_content is None
    included = client.responses.input_items.list(reply.id, order="asc", include=["reasoning.encrypted_content"])
    assert included.data[1].encrypted_content == "opaque"


# --- streaming ------------------------------------------------------------------------------


def test_stream_events_and_the_non_streamed_response_agree(client: openai.OpenAI, server: Any) -> None:
    events = list(create(client, server, temperature=0, stream=True))
    types = [event.type for event in events]
    assert types[:4] == STREAM_ORDER and types[-4:] == [*CLOSING, "response.incomplete"]
    assert set(types[4:-4]) == {"response.output_text.delta"} and len(types[4:-4]) >= 1
    assert [event.sequence_number for event in events] == list(range(len(events)))
    final = events[-1].response
    assert "".join(event.delta for event in events[4:-4]) == final.output_text
    assert {event.response.id for event in events if hasattr(event, "response")} == {final.id}
    assert events[2].item.id == events[3].item_id == final.output[0].id
    retrieved = client.responses.retrieve(final.id)
    assert retrieved.model_dump(mode="json") == final.model_dump(mode="json")
    # the non-streamed answer is the same response (greedy: the same text)
    full = create(client, server, temperature=0)
    assert full.output_text == final.output_text and full.usage == final.usage and full.status == final.status


def test_sse_framing_is_typed_events_without_done(server: Any) -> None:
    body = {"model": server.model, "input": "hi", "max_output_tokens": 2, "stream": True}
    with httpx.stream("POST", f"{server.base_url}/responses", json=body) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        text = response.read().decode()
    messages = [block for block in text.split("\n\n") if block]
    assert all(block.startswith("event: response.") and "\ndata: {" in block for block in messages)
    assert "[DONE]" not in text


def test_sdk_stream_accumulates_to_the_stored_response(client: openai.OpenAI, ending: Any) -> None:
    server, _ = ending
    owned = server.client(max_retries=0)
    with owned.responses.stream(model=server.model, input="hello", max_output_tokens=8, temperature=0) as stream:
        types = [event.type for event in stream]
        final = stream.get_final_response()
    assert types[:4] == STREAM_ORDER and types[-4:] == [*CLOSING, "response.completed"]
    assert set(types[4:-4]) <= {"response.output_text.delta"}
    assert final.status == "completed" and final.completed_at is not None and final.incomplete_details is None
    assert final.output[0].status == "completed"
    retrieved = owned.responses.retrieve(final.id)
    parsed = {"output": {"__all__": {"content": {"__all__": {"parsed"}}}}}  # the SDK's own addition
    assert retrieved.model_dump(mode="json") == final.model_dump(mode="json", exclude=parsed)


def test_failure_after_the_stream_began_is_response_failed(ending: Any) -> None:
    server, fail = ending
    owned = server.client(max_retries=0)
    fail.set()
    try:
        events = list(owned.responses.create(model=server.model, input="hi", max_output_tokens=3, stream=True))
        with pytest.raises(openai.InternalServerError):
            owned.responses.create(model=server.model, input="hi", max_output_tokens=3)
    finally:
        fail.clear()
    assert events[-1].type == "response.failed" and events[0].type == "response.created"
    failed = events[-1].response
    assert failed.status == "failed" and failed.error.code == "server_error"
    assert "injected" not in failed.error.message
    assert server.store.get(failed.id).status == "failed"


# --- previous_response_id -------------------------------------------------------------------


def test_three_turn_chain_renders_the_whole_conversation(client: openai.OpenAI, server: Any, tiny: Any) -> None:
    _, tokenizer = tiny
    first = create(client, server, input="turn one", instructions="old rules", max_output_tokens=2)
    second = create(client, server, input="turn two", previous_response_id=first.id, max_output_tokens=2)
    third = create(client, server, input=[{"role": "user", "content": "turn three"}], instructions="new rules",
                   previous_response_id=second.id, max_output_tokens=2)
    assert third.previous_response_id == second.id and third.instructions == "new rules"
    record = server.store.get(third.id)
    assert record.previous_response_id == second.id
    assert record.prompt_text == rendered(tokenizer, [
        {"role": "system", "content": "new rules"},  # instructions are not carried over
        {"role": "user", "content": "turn one"},
        {"role": "assistant", "content": first.output_text},
        {"role": "user", "content": "turn two"},
        {"role": "assistant", "content": second.output_text},
        {"role": "user", "content": "turn three"},
    ])
    items = client.responses.input_items.list(third.id, order="asc").data
    assert [item.type for item in items] == ["message"] * 5
    assert [item.role for item in items] == ["user", "assistant", "user", "assistant", "user"]
    assert items[1].id == first.output[0].id and items[3].id == second.output[0].id
    counted = client.responses.input_tokens.count(model=server.model, input="turn three",
                                                   instructions="new rules", previous_response_id=second.id)
    assert counted.input_tokens == third.usage.input_tokens == len(record.prompt_token_ids)


def test_unknown_previous_response_is_404(server: Any) -> None:
    response = httpx.post(f"{server.base_url}/responses",
                          json={"model": server.model, "input": "x", "previous_response_id": "resp_missing"})
    assert response.status_code == 404
    assert response.json()["error"]["param"] == "previous_response_id"


# --- stored responses -----------------------------------------------------------------------


def test_retrieve_delete_and_404s(client: openai.OpenAI, server: Any) -> None:
    reply = create(client, server, max_output_tokens=2)
    assert client.responses.retrieve(reply.id).output_text == reply.output_text
    with pytest.raises(openai.BadRequestError, match="background"):
        client.responses.cancel(reply.id)
    deleted = httpx.delete(f"{server.base_url}/responses/{reply.id}")
    assert deleted.json() == {"id": reply.id, "object": "response", "deleted": True}
    for call in (lambda: client.responses.retrieve(reply.id), lambda: client.responses.delete(reply.id),
                 lambda: client.responses.input_items.list(reply.id)):
        with pytest.raises(openai.NotFoundError):
            call()
    chat = client.chat.completions.create(model=server.model, messages=[{"role": "user", "content": "x"}],
                                          max_tokens=1, store=True)
    missing = httpx.get(f"{server.base_url}/responses/{chat.id}")
    assert missing.status_code == 404 and set(missing.json()["error"]) == {"message", "type", "param", "code"}


def test_store_false_is_recorded_but_not_retrievable(client: openai.OpenAI, server: Any) -> None:
    reply = create(client, server, store=False, max_output_tokens=2)
    assert reply.store is False
    record = server.store.get(reply.id)
    assert record is not None and not record.store_visible
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(reply.id)
    with pytest.raises(openai.NotFoundError):
        create(client, server, previous_response_id=reply.id)


def test_input_items_pagination(client: openai.OpenAI, server: Any) -> None:
    given = [{"role": "user", "content": f"message {i}"} for i in range(5)]
    reply = create(client, server, input=given, max_output_tokens=1)
    newest = client.responses.input_items.list(reply.id, limit=2)  # desc by default, as OpenAI
    assert [item.content[0].text for item in newest.data] == ["message 4", "message 3"] and newest.has_more
    rest = client.responses.input_items.list(reply.id, limit=10, after=newest.data[-1].id)
    assert [item.content[0].text for item in rest.data] == ["message 2", "message 1", "message 0"]
    assert not rest.has_more
    ascending = [item.content[0].text for item in client.responses.input_items.list(reply.id, order="asc", limit=2)]
    assert ascending == [f"message {i}" for i in range(5)]  # the SDK follows the cursor
    assert all(item.id.startswith("msg_") for item in newest.data)
    bad = httpx.get(f"{server.base_url}/responses/{reply.id}/input_items", params={"after": "msg_nope"})
    assert bad.status_code == 404 and bad.json()["error"]["param"] == "after"


def test_input_tokens_is_the_generation_prompt_length(client: openai.OpenAI, server: Any) -> None:
    fields: dict[str, Any] = {"input": [{"role": "developer", "content": "d"}, {"role": "user", "content": "u"}],
                              "instructions": "i", "tools": [TOOL]}
    counted = client.responses.input_tokens.count(model=server.model, **fields)
    assert counted.object == "response.input_tokens"
    assert counted.input_tokens == create(client, server, max_output_tokens=1, **fields).usage.input_tokens


# --- refusals -------------------------------------------------------------------------------


@pytest.mark.parametrize(("fields", "param", "named"), [
    ({"tools": [TOOL, {"type": "programmatic_tool_calling"}]}, "tools[1].type", "programmatic_tool_calling"),
    ({"tools": [{"type": "mcp", "server_label": "x"}]}, "tools[0].type", "mcp"),
    ({"input": [{"role": "user", "content": "x"}, {"type": "telepathy"}]}, "input[1].type", "index 1"),
    ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "input[0]", "item references"),
    ({"input": [{"type": "image_generation_call", "id": "ig_1"}]}, "input[0].type", "image_generation_call"),
    ({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]}, "input[0].content[0]",
     "input_image"),
    ({"text": {"format": {"type": "json_schema", "name": "x", "schema": {"not": {}}}}}, "text.format.schema", "'not'"),
    ({"tool_choice": "required"}, "tool_choice", "only allowed when 'tools' are specified"),
    ({"tools": [TOOL], "tool_choice": {"type": "file_search"}}, "tool_choice", "file_search"),
    ({"background": True, "store": False}, "background", "store"),
    ({"include": ["file_search_call.results"]}, "include[0]", "file_search_call.results"),
    ({"reasoning": {"summary": "detailed"}}, "reasoning.summary", "summarizer"),
    ({"seed": 1}, "seed", "Unrecognized"),
])
def test_refused_requests_name_what_is_refused(server: Any, fields: dict[str, Any], param: str, named: str) -> None:
    body = {"model": server.model, "input": "x", "max_output_tokens": 1, **fields}
    response = httpx.post(f"{server.base_url}/responses", json=body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param and named in error["message"] and error["type"] == "invalid_request_error"


def test_truncation_auto_drops_the_oldest_turns_until_the_input_fits(
        client: openai.OpenAI, server: Any, tiny: Any) -> None:
    model, tokenizer = tiny
    window = model.config.max_position_embeddings
    long = " ".join(["paris weather report"] * 40)  # a few hundred tokens
    turns: list[dict[str, Any]] = [{"role": "developer", "content": "rule one"}]
    for number in range(8):
        turns += [{"role": "user", "content": f"question {number}: {long}"},
                  {"type": "function_call", "call_id": f"call_{number}", "name": "get_weather", "arguments": "{}"},
                  {"type": "function_call_output", "call_id": f"call_{number}", "output": long},
                  {"role": "assistant", "content": f"answer {number}"}]
    turns.append({"role": "user", "content": "last question"})
    with pytest.raises(openai.BadRequestError) as refused:
        create(client, server, input=turns, tools=[TOOL], max_output_tokens=8)
    assert refused.value.body["code"] == "context_length_exceeded"

    reply = create(client, server, input=turns, tools=[TOOL], max_output_tokens=8, truncation="auto")
    assert reply.truncation == "auto" and reply.usage.input_tokens + 8 <= window
    record = server.store.get(reply.id)
    prompt = record.prompt_text
    assert "rule one" in prompt and "last question" in prompt and "question 0:" not in prompt
    kept = [number for number in range(8) if f"question {number}:" in prompt]
    assert kept and kept == list(range(kept[0], 8))  # whole turns, the newest ones
    assert f"answer {kept[0] - 1}" not in prompt and f"call_{kept[0] - 1}" not in prompt
    assert len(record.request["input_items"]) == len(turns)  # the input items are all listed and replayed
    # Counted as truncated, leaving one token of room (the response left eight): as many or more kept.
    counted = client.responses.input_tokens.count(model=server.model, input=turns, tools=[TOOL], truncation="auto")
    assert reply.usage.input_tokens <= counted.input_tokens < window

    # An input of more characters than any tokens of the window could hold is truncated as well.
    many = [turns[0], *turns[1:-1] * 3, turns[-1]]
    with pytest.raises(openai.BadRequestError, match="characters"):
        create(client, server, input=many, tools=[TOOL], max_output_tokens=8)
    assert create(client, server, input=many, tools=[TOOL], max_output_tokens=8, truncation="auto").usage.input_tokens \
        == reply.usage.input_tokens

    # One turn that alone exceeds the window is refused all the same.
    with pytest.raises(openai.BadRequestError) as alone:
        create(client, server, input=" ".join([long] * 12), max_output_tokens=8, truncation="auto")
    assert alone.value.body["code"] == "context_length_exceeded"


ITEM_KINDS = [("message", "user"), ("message", "assistant"), ("message", "system"), ("message", "developer"),
              ("function_call", None), ("function_call_output", None), ("reasoning", None)]


@settings(max_examples=200, deadline=None)
@given(kinds=st.lists(st.sampled_from(ITEM_KINDS), max_size=30))
def test_truncation_starts_turns_at_user_messages_and_keeps_the_instructions(kinds: list[Any]) -> None:
    items = [{"type": kind, "role": role, "n": index} if role else {"type": kind, "n": index}
             for index, (kind, role) in enumerate(kinds)]
    starts = turn_starts(items)
    assert starts[0] == 0 and starts == sorted(set(starts))
    instructions = [item for item in items if item.get("role") in ("system", "developer")]
    for start in starts[1:]:
        assert items[start].get("role") == "user"
        shown = from_turn(items, start)
        assert shown[-len(items) + start:] == items[start:]  # the newest items, in order, none changed
        assert [item for item in shown if item.get("role") in ("system", "developer")] == instructions
        dropped = [item for item in items[:start] if item.get("role") not in ("system", "developer")]
        assert dropped and not any(item in shown for item in dropped)


def test_unknown_model_is_404(server: Any) -> None:
    response = httpx.post(f"{server.base_url}/responses", json={"model": "nope", "input": "x"})
    assert response.status_code == 404 and response.json()["error"]["code"] == "model_not_found"


# --- background -----------------------------------------------------------------------------

RUNNING = ("queued", "in_progress")


def settled(client: openai.OpenAI, response_id: str, timeout: float = 30.0) -> Any:
    """Poll a background response until it is no longer queued or in progress."""
    wait_until(lambda: client.responses.retrieve(response_id).status not in RUNNING, timeout,
               f"{response_id} still running")
    return client.responses.retrieve(response_id)


def test_background_response_is_polled_to_its_final_state(ending: Any) -> None:
    server, _ = ending
    owned = server.client(max_retries=0)
    queued = owned.responses.create(model=server.model, input="hello", max_output_tokens=8, temperature=0,
                                    background=True, metadata={"run": "bg"})
    assert queued.status == "queued" and queued.background is True and queued.output == [] and queued.usage is None
    final = settled(owned, queued.id)
    assert final.status == "completed" and final.background is True and final.id == queued.id
    assert final.usage.output_tokens >= 1 and final.output[0].status == "completed"
    assert final.metadata == {"run": "bg"} and final.created_at == queued.created_at
    assert owned.responses.retrieve(final.id).model_dump(mode="json") == final.model_dump(mode="json")
    record = server.store.get(final.id)
    assert record.status == "completed" and record.store_visible
    # the same response as a foreground request (greedy)
    foreground = owned.responses.create(model=server.model, input="hello", max_output_tokens=8, temperature=0)
    assert foreground.output_text == final.output_text and foreground.background is False
    # a finished response cannot be cancelled
    with pytest.raises(openai.BadRequestError, match="completed"):
        owned.responses.cancel(final.id)


def test_background_stream_sends_the_task_events(ending: Any) -> None:
    server, _ = ending
    owned = server.client(max_retries=0)
    events = list(owned.responses.create(model=server.model, input="hello", max_output_tokens=8, temperature=0,
                                         background=True, stream=True))
    types = [event.type for event in events]
    assert types[:4] == STREAM_ORDER and types[-4:] == [*CLOSING, "response.completed"]
    assert events[0].response.status == "queued" and events[0].response.background is True
    assert [event.sequence_number for event in events] == list(range(len(events)))
    final = events[-1].response
    assert owned.responses.retrieve(final.id).model_dump(mode="json") == final.model_dump(mode="json")


def test_cancel_stops_a_long_background_response(model_client: openai.OpenAI, model_server: Any) -> None:
    limit = 1500  # greedy, the session model never ends: it would run to the limit
    queued = create(model_client, model_server, background=True, temperature=0, max_output_tokens=limit)
    assert model_client.responses.retrieve(queued.id).status in RUNNING  # recorded before the create returned
    engine = model_server.served.engine
    wait_until(lambda: engine.stats()["rows"] > 0, message="it never started decoding")
    cancelled = model_client.responses.cancel(queued.id)  # answered once the engine stopped it, not at the limit
    assert cancelled.status == "cancelled" and cancelled.id == queued.id and cancelled.background is True
    record = model_server.store.get(queued.id)
    assert record.status == "cancelled"
    produced = len(record.completions[0]["completion_token_ids"])
    assert 0 < produced < limit
    # the engine really stopped: nothing more is produced or recorded
    wait_until(lambda: engine.stats()["running"] == 0 and model_server.served.recorder.pending == 0)
    record = model_server.store.get(queued.id)
    assert record.status == "cancelled" and len(record.completions[0]["completion_token_ids"]) == produced
    retrieved = model_client.responses.retrieve(queued.id)
    assert retrieved.model_dump(mode="json") == cancelled.model_dump(mode="json")
    if retrieved.output:  # the text so far, its item incomplete
        assert retrieved.output[0].status == "incomplete" and retrieved.output_text == record.completions[0]["text"]
    # cancelling again answers the same cancelled response
    assert model_client.responses.cancel(queued.id).model_dump(mode="json") == cancelled.model_dump(mode="json")
    # and the engine is free: a new request is served at once
    # (greedy: a sampled end-of-sequence token would make it complete)
    assert create(model_client, model_server, max_output_tokens=2, temperature=0).status == "incomplete"


def test_cancel_errors(client: openai.OpenAI, server: Any) -> None:
    with pytest.raises(openai.NotFoundError):
        client.responses.cancel("resp_missing")
    foreground = create(client, server, max_output_tokens=1)
    with pytest.raises(openai.BadRequestError, match="background=true"):
        client.responses.cancel(foreground.id)
    # greedy, so it surely runs out of tokens (a sampled end-of-sequence token would complete it)
    done = settled(client, create(client, server, background=True, max_output_tokens=2, temperature=0).id)
    assert done.status == "incomplete"
    with pytest.raises(openai.BadRequestError, match="incomplete"):
        client.responses.cancel(done.id)
    with pytest.raises(openai.BadRequestError, match="store"):
        create(client, server, background=True, store=False)


def test_deleting_a_running_background_response_stops_it(model_client: openai.OpenAI, model_server: Any) -> None:
    queued = create(model_client, model_server, background=True, temperature=0, max_output_tokens=1500)
    model_client.responses.delete(queued.id)
    # the task would have written its record again once its generation ended
    wait_until(lambda: model_server.served.engine.stats()["running"] == 0 and model_server.served.recorder.pending == 0)
    assert model_server.store.get(queued.id) is None
    with pytest.raises(openai.NotFoundError):
        model_client.responses.retrieve(queued.id)


# --- logprobs -------------------------------------------------------------------------------

LOGPROBS = ["message.output_text.logprobs"]


def test_output_text_logprobs(client: openai.OpenAI, server: Any) -> None:
    reply = create(client, server, temperature=0, include=LOGPROBS, top_logprobs=3)
    assert reply.top_logprobs == 3
    [part] = reply.output[0].content
    assert len(part.logprobs) == reply.usage.output_tokens == 4
    assert "".join(entry.token for entry in part.logprobs) == part.text
    for entry in part.logprobs:
        assert entry.logprob <= 0 and bytes(entry.bytes).decode() == entry.token
        assert len(entry.top_logprobs) == 3
        assert entry.top_logprobs[0].token == entry.token  # greedy: the best alternative is the token
        assert entry.top_logprobs[0].logprob == pytest.approx(entry.logprob)
        assert [top.logprob for top in entry.top_logprobs] == sorted((t.logprob for t in entry.top_logprobs),
                                                                      reverse=True)
    # the same numbers as chat completions' logprobs for the same prompt
    chat = client.chat.completions.create(model=server.model, messages=[{"role": "user", "content": "hello"}],
                                          max_tokens=4, temperature=0, logprobs=True, top_logprobs=3)
    assert [(e.token, e.bytes) for e in chat.choices[0].logprobs.content] == \
        [(e.token, e.bytes) for e in part.logprobs]
    assert [e.logprob for e in chat.choices[0].logprobs.content] == \
        pytest.approx([e.logprob for e in part.logprobs], abs=1e-4)
    # top_logprobs alone, or the include without top_logprobs
    assert create(client, server, top_logprobs=2).output[0].content[0].logprobs == []
    bare = create(client, server, include=LOGPROBS).output[0].content[0].logprobs
    assert len(bare) == 4 and all(entry.top_logprobs == [] for entry in bare)
    assert server.store.get(reply.id).output == reply.model_dump(mode="json", exclude_unset=True)


def test_streamed_logprobs_go_with_their_deltas(client: openai.OpenAI, server: Any) -> None:
    events = list(create(client, server, temperature=0, include=LOGPROBS, top_logprobs=2, stream=True))
    deltas = [event for event in events if event.type == "response.output_text.delta"]
    streamed = [entry for event in deltas for entry in event.logprobs]
    assert len(streamed) == 4 and all(len(entry.top_logprobs) == 2 for entry in streamed)
    for event in deltas:
        assert "".join(entry.token for entry in event.logprobs) == event.delta
    [part] = events[-1].response.output[0].content
    assert [(e.token, e.logprob) for e in part.logprobs] == [(e.token, e.logprob) for e in streamed]
    [done] = [event for event in events if event.type == "response.output_text.done"]
    assert [e.token for e in done.logprobs] == [e.token for e in streamed]
    plain = list(create(client, server, stream=True))
    assert all(event.logprobs == [] for event in plain if event.type == "response.output_text.delta")
