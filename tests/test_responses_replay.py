"""`GET /v1/responses/{id}?stream=true` (`client.responses.retrieve(id, stream=True)`): a stored
response's events replayed by the live stream's own builder, `starting_after` included."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from localoai.handlers.responses.events import ResponseEvents, usage
from localoai.handlers.responses.replay import replay_events
from localoai.parsers.tool_calls import HermesToolParser
from localoai.testing import ScriptedEngine, running_server


@pytest.fixture(scope="module")
def server(scripted_server: Any) -> Any:
    """This module's protocol tests run on the scripted engine (tests/conftest.py), not random weights."""
    return scripted_server



def collapsed(types: list[str]) -> list[str]:
    """Event types with runs of the same delta merged: a replay sends each item's text in one delta."""
    return [kind for index, kind in enumerate(types) if not (kind.endswith(".delta") and types[index - 1] == kind)]


def test_replay_of_a_streamed_response(client: openai.OpenAI, server: Any) -> None:
    live = list(client.responses.create(model=server.model, input="hello", max_output_tokens=6, stream=True,
                                        include=["message.output_text.logprobs"], top_logprobs=2))
    final = live[-1].response
    replayed = list(client.responses.retrieve(final.id, stream=True))
    assert [event.type for event in replayed] == collapsed([event.type for event in live])
    assert [event.sequence_number for event in replayed] == list(range(len(replayed)))
    assert replayed[-1].type == "response.incomplete"
    stored = client.responses.retrieve(final.id)
    assert replayed[-1].response.model_dump(mode="json") == stored.model_dump(mode="json")
    assert replayed[0].response.id == final.id and replayed[0].response.status == "in_progress"
    [delta] = [event for event in replayed if event.type == "response.output_text.delta"]
    assert delta.delta == final.output_text and delta.item_id == final.output[0].id
    assert [entry.token for entry in delta.logprobs] == [entry.token for entry in final.output[0].content[0].logprobs]
    # starting_after: only the events after that sequence number
    rest = list(client.responses.retrieve(final.id, stream=True, starting_after=2))
    assert [event.model_dump() for event in rest] == [event.model_dump() for event in replayed[3:]]


def test_replay_waits_for_a_running_background_response(client: openai.OpenAI, server: Any) -> None:
    queued = client.responses.create(model=server.model, input="hello", max_output_tokens=40, background=True,
                                     temperature=0)
    replayed = list(client.responses.retrieve(queued.id, stream=True))
    assert replayed[0].type == "response.created" and replayed[0].response.status == "queued"
    assert replayed[-1].type == "response.incomplete"
    assert replayed[-1].response.model_dump(mode="json") == \
        client.responses.retrieve(queued.id).model_dump(mode="json")
    assert replayed[-1].response.usage.output_tokens == 40


@pytest.fixture(scope="module")
def slow(tiny: tuple[Any, Any]) -> Iterator[Any]:
    """A server whose answers take a few milliseconds a token: a background response is still running when
    the client cancels it, however fast the machine."""
    model, tokenizer = tiny
    word = tokenizer.encode(" ok", add_special_tokens=False)[0]

    def script(prompt_ids: list[int], params: Any, index: int) -> Iterator[int]:
        while True:
            time.sleep(0.005)
            yield word

    engine = ScriptedEngine(tokenizer, script, context_length=model.config.max_position_embeddings)
    with running_server(model, tokenizer, name="tiny", engine=engine) as running:
        yield running


def test_replay_of_a_cancelled_response_ends_without_a_terminal_event(slow: Any) -> None:
    client = slow.client(max_retries=0)
    queued = client.responses.create(model=slow.model, input="hello", max_output_tokens=1500, background=True,
                                     temperature=0)
    cancelled = client.responses.cancel(queued.id)
    assert cancelled.status == "cancelled"
    replayed = list(client.responses.retrieve(queued.id, stream=True))
    types = [event.type for event in replayed]
    assert types[:2] == ["response.created", "response.in_progress"]
    assert not {"response.completed", "response.incomplete", "response.failed"} & set(types)
    assert len([t for t in types if t == "response.output_item.done"]) == len(cancelled.output)


def test_replay_errors(server: Any) -> None:
    base = f"{server.base_url}/responses"
    assert httpx.get(f"{base}/resp_missing", params={"stream": "true"}).status_code == 404
    client = server.client(max_retries=0)
    made = client.responses.create(model=server.model, input="x", max_output_tokens=1)
    for params, param in (({"starting_after": "1"}, "starting_after"), ({"stream": "yes"}, "stream"),
                          ({"stream": "true", "starting_after": "-1"}, "starting_after")):
        response = httpx.get(f"{base}/{made.id}", params=params)
        assert response.status_code == 400 and response.json()["error"]["param"] == param, response.text


def test_replay_rebuilds_calls_and_other_items_with_their_ids() -> None:
    """The builder alone: a live stream with a message, a function call, client tool calls; its
    replay names the same items (ids included) and ends on the stored response."""
    settings = {"id": "resp_1", "object": "response", "created_at": 0, "model": "m", "parallel_tool_calls": True,
                "tool_choice": "auto", "tools": [], "background": False}
    build = ResponseEvents(settings=settings, client_tools={"note": "custom", "shell": "shell"})
    stream = HermesToolParser(["f", "note", "shell"]).stream()
    text = ('Let me see. <tool_call>{"name": "f", "arguments": {"a": 1}}</tool_call>'
            '<tool_call>{"name": "note", "arguments": {"input": "x"}}</tool_call>'
            '<tool_call>{"name": "shell", "arguments": {"commands": ["ls"]}}</tool_call>')
    live = [build.created(), build.in_progress()]
    for piece in [*stream.feed(text), *stream.finish()]:
        live += build.call_delta(piece) if piece.index is not None else build.text_delta(piece.content)
    live += build.finished(usage(1, 2), incomplete=False)
    final = live[-1].response
    replayed = replay_events(final)
    assert [event.type for event in replayed] == collapsed([event.type for event in live])
    assert [json.loads(event.model_dump_json()) for event in replayed[2:]] == \
        [json.loads(event.model_dump_json()) for event in live[2:]]
    # a reasoning item (or any item without deltas here) is replayed whole
    reasoning = {"type": "reasoning", "id": "rs_1", "summary": []}
    with_reasoning = final.model_copy(update={"output": [openai.types.responses.ResponseReasoningItem(**reasoning),
                                                         *final.output]})
    again = replay_events(with_reasoning)
    assert [event.type for event in again[2:4]] == ["response.output_item.added", "response.output_item.done"]
    assert again[-1].response.output == with_reasoning.output
    assert [event.item for event in again if event.type == "response.output_item.done"] == with_reasoning.output


@pytest.mark.parametrize("status", ["completed", "incomplete"])
def test_replay_of_an_empty_response_has_its_empty_message(status: str) -> None:
    settings = {"id": "resp_2", "object": "response", "created_at": 0, "model": "m", "parallel_tool_calls": True,
                "tool_choice": "auto", "tools": []}
    build = ResponseEvents(settings=settings)
    live = [build.created(), build.in_progress(), *build.finished(usage(1, 0), incomplete=status == "incomplete")]
    replayed = replay_events(live[-1].response)
    assert [json.loads(event.model_dump_json()) for event in replayed[2:]] == \
        [json.loads(event.model_dump_json()) for event in live[2:]]
