"""`POST /v1/responses/compact` and `compaction` input items, through the official `openai` SDK: the
answer's shape (the user messages, then one compaction item; valid against OpenAI's OpenAPI
description), the summary's record and trace, a later request rendering the summary in place of
the turns it replaced, `previous_response_id` chains, episodes, and the refusals (a compaction item
this server did not make, server-side `context_management`). On the scripted engine here; on a real
model, and under openai-agents' `OpenAIResponsesCompactionSession`, at the end."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from localoai.handlers.responses.compaction import COMPACTION_REQUEST
from localoai.handlers.responses.items import COMPACTED_HISTORY
from localoai.protocol.response_items import compaction_content, compaction_summary
from localoai.testing import ScriptedEngine, running_server
from localoai.testing.openapi import sse_events

CONVERSATION: list[dict[str, Any]] = [
    {"role": "user", "content": "plan a trip to paris"},
    {"role": "assistant", "content": [{"type": "output_text", "text": "Checking the weather.", "annotations": []}]},
    {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": '{"city": "paris"}'},
    {"type": "function_call_output", "call_id": "call_1", "output": "21 celsius"},
    {"role": "user", "content": [{"type": "input_text", "text": "and the museums?"}]},
]


@pytest.fixture(scope="module")
def server(scripted_server: Any) -> Any:
    return scripted_server


def compact(client: openai.OpenAI, server: Any, **kwargs: Any) -> Any:
    return client.responses.compact(model=server.model, extra_body={"max_output_tokens": 6}, **kwargs)


def as_input(compacted: Any) -> list[dict[str, Any]]:
    """The output as the next input. The SDK types the kept user messages as assistant output messages,
    so dumping them warns; their fields come out as sent."""
    return [item.model_dump(mode="json", exclude_none=True, warnings=False) for item in compacted.output]


def test_the_user_messages_then_one_compaction_item(client: openai.OpenAI, server: Any, tiny: Any,
                                                    openapi: Any) -> None:
    _, tokenizer = tiny
    compacted = compact(client, server, input=CONVERSATION, instructions="be brief")
    assert compacted.object == "response.compaction" and compacted.id.startswith("resp_")
    *kept, summary = compacted.output
    assert [(item.type, item.role, [part.text for part in item.content]) for item in kept] == [
        ("message", "user", ["plan a trip to paris"]), ("message", "user", ["and the museums?"])]
    assert summary.type == "compaction" and summary.id.startswith("cmp_")
    assert compacted.usage.output_tokens == 6
    assert compacted.usage.total_tokens == compacted.usage.input_tokens + 6
    raw = httpx.post(f"{server.base_url}/responses/compact",
                     json={"model": server.model, "input": "hi", "max_output_tokens": 2}).json()
    openapi.check(raw, "CompactResource")

    # The summary is a generation like any other: recorded with its trace, not retrievable.
    record = server.store.get(compacted.id)
    assert record.kind == "response.compaction" and not record.store_visible and record.status == "completed"
    [trace] = record.completions
    assert compaction_summary(summary.encrypted_content) == trace["text"].strip()
    assert len(trace["completion_token_ids"]) == 6 and len(record.prompt_token_ids) == compacted.usage.input_tokens
    assert record.prompt_text == tokenizer.apply_chat_template([
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "plan a trip to paris"},
        {"role": "assistant", "content": "Checking the weather.", "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": {"city": "paris"}}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "21 celsius"},
        {"role": "user", "content": "and the museums?"},
        {"role": "user", "content": COMPACTION_REQUEST},
    ], add_generation_prompt=True, tokenize=False)
    assert [item["type"] for item in record.request["input_items"]] == [item.get("type", "message")
                                                                       for item in CONVERSATION]
    assert httpx.get(f"{server.base_url}/responses/{compacted.id}").status_code == 404


def test_a_compacted_conversation_goes_on_from_its_summary(client: openai.OpenAI, server: Any) -> None:
    compacted = compact(client, server, input=CONVERSATION)
    summary = compaction_summary(compacted.output[-1].encrypted_content)
    reply = client.responses.create(model=server.model, max_output_tokens=2,
                                    input=[*as_input(compacted), {"role": "user", "content": "go on"}])
    prompt = server.store.get(reply.id).prompt_text
    assert f"{COMPACTED_HISTORY}{summary}" in prompt and "go on" in prompt and "plan a trip to paris" in prompt
    assert "Checking the weather." not in prompt and "21 celsius" not in prompt
    listed = client.responses.input_items.list(reply.id, order="asc").data
    assert [item.type for item in listed] == ["message", "message", "compaction", "message"]
    assert listed[2].encrypted_content == compacted.output[-1].encrypted_content

    # Compacting again summarizes the summary: the kept user messages, then one new compaction item.
    again = compact(client, server, previous_response_id=reply.id)
    assert [item.type for item in again.output] == ["message", "message", "message", "compaction"]
    assert f"{COMPACTED_HISTORY}{summary}" in server.store.get(again.id).prompt_text


def test_compact_follows_a_previous_response_chain(client: openai.OpenAI, server: Any) -> None:
    first = client.responses.create(model=server.model, input="hello there", max_output_tokens=3)
    compacted = compact(client, server, previous_response_id=first.id, input="one more thing")
    kept = [item.content[0].text for item in compacted.output if item.type == "message"]
    assert kept == ["hello there", "one more thing"]
    record = server.store.get(compacted.id)
    assert first.output_text in record.prompt_text
    assert [item["type"] for item in record.request["input_items"]] == ["message", "message", "message"]


def test_a_compaction_joins_its_episode(server: Any) -> None:
    with server.episode() as episode:
        episode_client = episode.client(max_retries=0)
        episode_client.responses.create(model=server.model, input="hello", max_output_tokens=2)
        compacted = compact(episode_client, server, input="hello")
        turns = episode.trajectory().turns
    assert [turn.kind for turn in turns] == ["response", "response.compaction"]
    assert turns[1].record_id == compacted.id and len(turns[1].completion_token_ids) == 6


@pytest.mark.parametrize(("body", "param", "status"), [
    ({"input": [{"type": "compaction", "encrypted_content": "gAAAAABpM0Yj-openai"}]},
     "input[0].encrypted_content", 400),
    ({"input": [{"type": "compaction", "encrypted_content": "localoai-compaction-v1:%%%"}]},
     "input[0].encrypted_content", 400),
    ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "input[0]", 400),
    ({"input": "hi", "tools": []}, "tools", 400),
    ({"input": "hi", "max_output_tokens": 0}, "max_output_tokens", 400),
    ({"previous_response_id": "resp_missing"}, "previous_response_id", 404),
    ({}, "input", 400),
    ({"input": []}, "input", 400),
    ({"model": "other", "input": "hi"}, "model", 404),
])
def test_refusals_name_the_field(server: Any, body: dict[str, Any], param: str, status: int) -> None:
    answer = httpx.post(f"{server.base_url}/responses/compact", json={"model": server.model, **body})
    assert answer.status_code == status, answer.text
    assert answer.json()["error"]["param"] == param


LONG = " ".join(["paris weather report"] * 60)  # ~480 tokens of the tiny tokenizer
TOOL = {"type": "function", "name": "get_weather", "parameters": {"type": "object", "properties": {}}, "strict": False}


def long_conversation(turns: int = 3) -> list[dict[str, Any]]:
    """Short questions, long tool results: well past 1,000 tokens, and short once compacted."""
    items: list[dict[str, Any]] = []
    for number in range(turns):
        items += [{"role": "user", "content": f"question {number}"},
                  {"type": "function_call", "call_id": f"call_{number}", "name": "get_weather", "arguments": "{}"},
                  {"type": "function_call_output", "call_id": f"call_{number}", "output": f"result {number}: {LONG}"}]
    return items


def test_context_management_compacts_the_input_before_the_answer(
        client: openai.OpenAI, server: Any, openapi: Any) -> None:
    management = [{"type": "compaction", "compact_threshold": 1000}]
    reply = client.responses.create(model=server.model, input=long_conversation(), tools=[TOOL],
                                    max_output_tokens=4, extra_body={"context_management": management})
    compaction, *answer = reply.output
    assert compaction.type == "compaction" and [item.type for item in answer] == ["message"]
    summary = compaction_summary(compaction.encrypted_content)
    record = server.store.get(reply.id)
    assert f"{COMPACTED_HISTORY}{summary}" in record.prompt_text and "question 2" in record.prompt_text
    assert "result 0:" not in record.prompt_text and reply.usage.input_tokens < 1000
    [summarized] = server.store.list(kind="response.compaction", limit=1)
    assert compaction_summary(compaction.encrypted_content) == summarized.completions[0]["text"].strip()
    assert "result 0:" in summarized.prompt_text and summarized.request["context_management"] == management

    # The chain goes on from the summary: what came before it is not rendered again.
    after = client.responses.create(model=server.model, previous_response_id=reply.id, input="and tomorrow?",
                                    max_output_tokens=4, tools=[TOOL], extra_body={"context_management": management})
    assert [item.type for item in after.output] == ["message"]  # under the threshold now: no compaction
    prompt = server.store.get(after.id).prompt_text
    assert f"{COMPACTED_HISTORY}{summary}" in prompt and "result 0:" not in prompt and "and tomorrow?" in prompt

    # Streamed, the compaction item comes first, whole; every event is as OpenAI describes it.
    final = openapi.check_stream(sse_events(f"{server.base_url}/responses", {
        "model": server.model, "input": long_conversation(), "tools": [TOOL], "max_output_tokens": 4,
        "stream": True, "context_management": management}))
    assert [item["type"] for item in final["output"]] == ["compaction", "message"]

    # Under the threshold nothing is compacted; a render cannot hold a compaction.
    short = client.responses.create(model=server.model, input="hi", max_output_tokens=2,
                                    extra_body={"context_management": management})
    assert [item.type for item in short.output] == ["message"]
    rendered = httpx.post(f"{server.base_url}/responses/render", json={
        "model": server.model, "input": long_conversation(), "context_management": management})
    assert rendered.status_code == 400 and rendered.json()["error"]["param"] == "context_management"


def test_moderation_is_refused_and_any_service_tier_accepted(client: openai.OpenAI, server: Any) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        client.responses.create(model=server.model, input="hi", extra_body={"moderation": {"type": "omni"}})
    assert refused.value.body["param"] == "moderation" and refused.value.body["code"] == "unsupported_parameter"
    for tier in ("fast", "ultrafast", "flex"):  # a processing tier changes nothing here
        assert client.responses.create(model=server.model, input="hi", max_output_tokens=1,
                                       service_tier=tier).status == "incomplete"
    assert compact(client, server, input="hi", service_tier="fast", prompt_cache_key="k",
                   safety_identifier="s").output[-1].type == "compaction"


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(summary=st.text())
def test_a_summary_survives_its_encoding(summary: str) -> None:
    assert compaction_summary(compaction_content(summary)) == summary


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(content=st.one_of(st.text(max_size=40), st.text(max_size=40).map(lambda text: "localoai-compaction-v1:" + text),
                         st.text(max_size=40).map(compaction_content)))
def test_any_encrypted_content_is_read_or_refused_never_a_failure(server: Any, content: str) -> None:
    answer = httpx.post(f"{server.base_url}/responses/input_tokens", json={
        "model": server.model, "input": [{"type": "compaction", "encrypted_content": content}]})
    readable = compaction_summary(content) is not None
    assert answer.status_code == (200 if readable else 400), answer.text
    if not readable:
        assert answer.json()["error"]["param"] == "input[0].encrypted_content"


# -- on a real model -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def gpt_named(tiny: tuple[Any, Any]) -> Iterator[Any]:
    """A server named "gpt-tiny" (openai-agents' compaction session takes OpenAI model names only) whose
    answers end after a few words, so that the agent's turns complete."""
    model, tokenizer = tiny
    words = tokenizer.encode(" ok then", add_special_tokens=False)

    def script(prompt_ids: list[int], params: Any, index: int) -> Iterator[int]:
        yield from words

    engine = ScriptedEngine(tokenizer, script, context_length=model.config.max_position_embeddings)
    with running_server(model, tokenizer, name="gpt-tiny", engine=engine) as running:
        yield running


def test_a_real_model_writes_the_summary_its_trace_holds(model_server: Any, model_client: openai.OpenAI,
                                                         tiny: Any) -> None:
    _, tokenizer = tiny
    compacted = model_client.responses.compact(model="tiny", input=CONVERSATION,
                                               extra_body={"max_output_tokens": 12})
    [trace] = model_server.store.get(compacted.id).completions
    summary = compaction_summary(compacted.output[-1].encrypted_content)
    assert summary == tokenizer.decode(trace["completion_token_ids"], skip_special_tokens=True).strip()
    assert len(trace["logprobs"]) == len(trace["completion_token_ids"]) == compacted.usage.output_tokens
    count = model_client.responses.input_tokens.count(model="tiny", input=[*as_input(compacted),
                                                                         {"role": "user", "content": "go on"}])
    rendered = tokenizer.apply_chat_template([
        {"role": "user", "content": "plan a trip to paris"}, {"role": "user", "content": "and the museums?"},
        {"role": "user", "content": COMPACTED_HISTORY + summary}, {"role": "user", "content": "go on"}],
        add_generation_prompt=True, tokenize=True)
    assert count.input_tokens == len(rendered if isinstance(rendered, list) else rendered["input_ids"])


def test_openai_agents_compaction_session(gpt_named: Any, tmp_path: Any) -> None:
    """openai-agents' `OpenAIResponsesCompactionSession` compacts a session's history through
    `responses.compact`; the agent's next turn reads the summary (the harness's traffic: a scripted
    engine serves it, the real model's summaries are the test above)."""
    from agents import Agent, OpenAIResponsesModel, Runner, SQLiteSession, set_tracing_disabled
    from agents.memory import OpenAIResponsesCompactionSession

    set_tracing_disabled(True)  # no trace export to OpenAI
    async def run() -> list[dict[str, Any]]:
        client = gpt_named.async_client(max_retries=0)
        agent = Agent(name="a", model=OpenAIResponsesModel("gpt-tiny", client))
        session = OpenAIResponsesCompactionSession("s", SQLiteSession("s", str(tmp_path / "s.db")), client=client,
                                                   model="gpt-tiny", should_trigger_compaction=lambda _: False)
        await Runner.run(agent, "plan a trip to paris", session=session)
        await session.run_compaction({"force": True, "compaction_mode": "input"})
        await Runner.run(agent, "go on", session=session)
        return await session.get_items()

    items = asyncio.run(run())
    assert [item.get("type", "message") for item in items][:2] == ["message", "compaction"]
    compactions = [record for record in gpt_named.store.list() if record.kind == "response.compaction"]
    assert len(compactions) == 1
    [last] = [record for record in gpt_named.store.list() if record.kind == "response"
              and "go on" in record.prompt_text]
    summary = compaction_summary(items[1]["encrypted_content"])
    assert COMPACTED_HISTORY + summary in last.prompt_text


def test_openai_agents_context_management(gpt_named: Any) -> None:
    """openai-agents' `ModelSettings(context_management=...)`: a turn past the threshold is compacted
    first, and the agent gets its answer with the compaction item before it."""
    from agents import Agent, ModelSettings, OpenAIResponsesModel, Runner, set_tracing_disabled

    set_tracing_disabled(True)
    settings = ModelSettings(context_management=[{"type": "compaction", "compact_threshold": 1000}])
    agent = Agent(name="a", model=OpenAIResponsesModel("gpt-tiny", gpt_named.async_client(max_retries=0)),
                  model_settings=settings)
    result = asyncio.run(Runner.run(agent, f"summarize this report: {LONG} {LONG} {LONG}"))
    assert result.final_output.strip() == "ok then"
    [response] = result.raw_responses
    assert [item.type for item in response.output] == ["compaction", "message"]


def test_the_turn_after_a_compacted_answer_extends_it_in_the_token_ledger(server: Any) -> None:
    """Stateless chaining (the input, then the output, then the new message): the compacted turn's
    exact tokens start the next turn's prompt."""
    management = [{"type": "compaction", "compact_threshold": 1000}]
    with server.episode() as episode:
        episode_client = episode.client(max_retries=0)
        first = episode_client.responses.create(model=server.model, input=long_conversation(), tools=[TOOL],
                                                max_output_tokens=4, extra_body={"context_management": management})
        second = episode_client.responses.create(
            model=server.model, tools=[TOOL], max_output_tokens=4,
            input=[*long_conversation(), *as_input(first), {"role": "user", "content": "and tomorrow?"}])
        turns = episode.trajectory().turns
    assert [turn.kind for turn in turns] == ["response.compaction", "response", "response"]
    assert turns[2].record_id == second.id and turns[2].ledger["extends"] == first.id
    assert turns[2].prompt_token_ids[:len(turns[1].input_ids)] == turns[1].input_ids


def test_a_request_refused_for_its_schema_compacts_nothing(client: openai.OpenAI, server: Any) -> None:
    """Validation comes before the compaction that `context_management` asks for."""
    before = server.store.count(kind="response.compaction")
    with pytest.raises(openai.BadRequestError) as refused:
        client.responses.create(model=server.model, input=long_conversation(), max_output_tokens=4, extra_body={
            "context_management": [{"type": "compaction", "compact_threshold": 1000}],
            "text": {"format": {"type": "json_schema", "name": "x", "schema": {"not": {}}}}})
    assert refused.value.body["param"] == "text.format.schema"
    server.flush_records()
    assert server.store.count(kind="response.compaction") == before
