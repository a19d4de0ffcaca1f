"""Tool calls on the Responses API, end to end: a tiny model trained in a fixture to call a tool
drives an agent loop through the official `openai` SDK. The model's call comes back as a
`function_call` output item, the test sends a `function_call_output` (with the earlier items in
`input`, or through `previous_response_id`), and the model answers."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from localoai.testing import running_server
from localoai.testing.trained import ANSWER, QUESTION, TOOL_RESULT, WEATHER_TOOL, episode, train_tool_caller

TOOL = {"type": "function", **WEATHER_TOOL["function"]}  # the Responses (flat) shape
REQUEST: dict[str, Any] = {"model": "agent", "tools": [TOOL], "temperature": 0, "max_output_tokens": 40}
CALL_EVENTS = ["response.output_item.added", "response.function_call_arguments.delta",
               "response.function_call_arguments.done", "response.output_item.done"]
PARSED = {"output": {"__all__": {"parsed_arguments"}}}  # the SDK's own addition when streaming


@pytest.fixture(scope="module")
def agent_server() -> Iterator[Any]:
    model, tokenizer = train_tool_caller()
    with running_server(model, tokenizer, name="agent") as server:
        yield server


@pytest.fixture
def agent(agent_server: Any) -> openai.OpenAI:
    return agent_server.client(max_retries=0)


def first_turn(client: openai.OpenAI, *, stream: bool) -> Any:
    if not stream:
        return client.responses.create(input=QUESTION, **REQUEST)
    with client.responses.stream(input=QUESTION, **REQUEST) as events:
        return events.get_final_response()


def assert_weather_call(response: Any) -> Any:
    assert response.status == "completed" and response.output_text == ""
    [call] = response.output  # only the call: no message item without text
    assert call.type == "function_call" and call.status == "completed"
    assert call.id.startswith("fc_") and call.call_id.startswith("call_")
    assert call.name == "get_weather" and json.loads(call.arguments) == {"city": "paris"}
    return call


def no_markup(response: Any) -> None:
    for item in response.output:
        for part in getattr(item, "content", None) or []:
            assert "<tool_call>" not in part.text


@pytest.mark.parametrize("follow_up", ["input", "previous_response_id"])
@pytest.mark.parametrize("stream", [False, True], ids=["create", "stream"])
def test_agent_loop_on_responses(agent_server: Any, agent: openai.OpenAI, stream: bool, follow_up: str) -> None:
    first = first_turn(agent, stream=stream)
    call = assert_weather_call(first)
    no_markup(first)
    retrieved = agent.responses.retrieve(first.id)
    assert retrieved.model_dump(mode="json") == first.model_dump(mode="json", exclude=PARSED if stream else None)
    result = {"type": "function_call_output", "call_id": call.call_id, "output": TOOL_RESULT}
    if follow_up == "input":
        # OpenAI's documented loop: the response's output items go back as they came
        second = agent.responses.create(input=[{"role": "user", "content": QUESTION}, *first.output, result],
                                        **REQUEST)
    else:
        second = agent.responses.create(input=[result], previous_response_id=first.id, **REQUEST)
    assert second.status == "completed" and second.output_text == ANSWER
    [message] = second.output
    assert message.type == "message" and message.status == "completed"
    no_markup(second)
    # Either way the model saw the conversation it was trained on, the call given back as the
    # model made it (the arguments are rendered as an object whatever their JSON spacing).
    tokenizer = agent_server.served.tokenizer
    expected = tokenizer.apply_chat_template(episode(call.call_id), tools=[WEATHER_TOOL], add_generation_prompt=True,
                                             tokenize=False)
    assert agent_server.store.get(second.id).prompt_text == expected
    items = agent.responses.input_items.list(second.id, order="asc").data
    assert [item.type for item in items] == ["message", "function_call", "function_call_output"]
    assert (items[1].call_id, items[1].name, items[1].arguments) == (call.call_id, call.name, call.arguments)
    if follow_up == "previous_response_id":  # the stored output item is replayed as it was returned
        assert items[1].id == call.id


def test_streamed_tool_call_events(agent: openai.OpenAI) -> None:
    events = list(agent.responses.create(input=QUESTION, stream=True, **REQUEST))
    types = [event.type for event in events]
    deltas = [event for event in events if event.type == "response.function_call_arguments.delta"]
    assert types == ["response.created", "response.in_progress", CALL_EVENTS[0], *[CALL_EVENTS[1]] * len(deltas),
                     *CALL_EVENTS[2:], "response.completed"]
    assert [event.sequence_number for event in events] == list(range(len(events)))
    final = events[-1].response
    call = assert_weather_call(final)
    added, done_arguments, done = events[2], events[-3], events[-2]
    assert added.output_index == done_arguments.output_index == done.output_index == 0
    assert all(event.output_index == 0 and event.item_id == call.id for event in deltas)
    assert added.item.type == "function_call" and added.item.status == "in_progress" and added.item.arguments == ""
    assert (added.item.id, added.item.call_id, added.item.name) == (call.id, call.call_id, "get_weather")
    assert done_arguments.item_id == call.id and done_arguments.arguments == call.arguments
    assert "".join(event.delta for event in deltas) == call.arguments
    assert done.item == call
    assert agent.responses.retrieve(final.id).model_dump(mode="json") == final.model_dump(mode="json")


def test_unparsed_markup_stays_text_and_its_error_is_traced(agent_server: Any, agent: openai.OpenAI) -> None:
    # Cut off inside the <tool_call> block: the markup is unterminated, so it comes back as text.
    cut = agent.responses.create(input=QUESTION, **{**REQUEST, "max_output_tokens": 4})
    assert cut.status == "incomplete" and cut.incomplete_details.reason == "max_output_tokens"
    [message] = cut.output
    assert message.type == "message" and message.status == "incomplete"
    assert cut.output_text.startswith("<tool_call>")
    trace = agent_server.store.get(cut.id).completions[0]
    assert "unterminated" in trace["tool_parse_error"]
    streamed = list(agent.responses.create(input=QUESTION, stream=True, **{**REQUEST, "max_output_tokens": 4}))
    types = [event.type for event in streamed]
    assert types[2:4] == ["response.output_item.added", "response.content_part.added"]
    assert "response.function_call_arguments.delta" not in types and types[-1] == "response.incomplete"
    assert streamed[-1].response.output_text == cut.output_text


def test_without_tools_or_with_tool_choice_none_nothing_is_parsed(agent_server: Any, agent: openai.OpenAI) -> None:
    for fields in ({"tools": None}, {"tool_choice": "none"}):
        reply = agent.responses.create(input=QUESTION, **{**REQUEST, **fields})
        assert all(item.type == "message" for item in reply.output)
        assert "tool_parse_error" not in agent_server.store.get(reply.id).completions[0]


# --- the event builder alone ----------------------------------------------------------------


def test_text_then_calls_then_text_are_items_in_order() -> None:
    """Items are streamed one after the other, each with its own output_index; the SDK's
    accumulator takes the stream, and every item's deltas add up to the item the response carries."""
    from openai.lib.streaming.responses._responses import ResponseStreamState

    from localoai.handlers.responses.events import ResponseEvents, usage
    from localoai.parsers.tool_calls import HermesToolParser

    settings = {"id": "resp_1", "object": "response", "created_at": 0, "model": "m", "parallel_tool_calls": True,
                "tool_choice": "auto", "tools": []}
    build = ResponseEvents(settings=settings)
    stream = HermesToolParser(["f"]).stream()
    text = ('Let me look. <tool_call>{"name": "f", "arguments": {"a": 1}}</tool_call>\n'
            '<tool_call>{"name": "f", "arguments": {}}</tool_call>\n  Done.')
    events = [build.created(), build.in_progress()]
    for piece in [*stream.feed(text[:20]), *stream.feed(text[20:]), *stream.finish()]:
        events += build.call_delta(piece) if piece.index is not None else build.text_delta(piece.content)
    events += build.finished(usage(1, 2), incomplete=False)
    final = events[-1].response
    assert [(item.type, item.status) for item in final.output] == [
        ("message", "completed"), ("function_call", "completed"), ("function_call", "completed"),
        ("message", "completed")]
    assert [item.content[0].text for item in final.output if item.type == "message"] == ["Let me look.", "Done."]
    assert [item.arguments for item in final.output if item.type == "function_call"] == ['{"a":1}', "{}"]
    assert [event.sequence_number for event in events] == list(range(len(events)))
    added = [event for event in events if event.type == "response.output_item.added"]
    done = [event for event in events if event.type == "response.output_item.done"]
    assert [event.output_index for event in added] == [event.output_index for event in done] == [0, 1, 2, 3]
    assert [event.item for event in done] == final.output
    for index, item in enumerate(final.output):
        deltas = "".join(event.delta for event in events if getattr(event, "output_index", None) == index
                         and event.type.endswith(".delta"))
        assert deltas == (item.arguments if item.type == "function_call" else item.content[0].text)
    state = ResponseStreamState(input_tools=openai.omit, text_format=openai.omit)
    for event in events:
        state.handle_event(event)
    assert state._completed_response.model_dump(exclude={"output": {"__all__": {"parsed_arguments", "content"}}}) \
        == final.model_dump(exclude={"output": {"__all__": {"content"}}})
    assert state._completed_response.output_text == final.output_text == "Let me look.Done."
