"""Every Responses stream event and every Response object, as they go over the wire, validates
against OpenAI's OpenAPI description (`../shared/fixtures/openapi/openai-openapi.yaml`), through
many request shapes: text, logprobs, structured output, incomplete, background (queued, polled,
replayed), stored replays, forced function and namespace-member calls, every tool kind offered,
and every output item kind from the event builder alone (reasoning, client tool calls, a hosted
`web_search_call`). Real custom / shell calls over the wire: `test_responses_codex.py`."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from localoai.handlers.responses.events import ResponseEvents, usage
from localoai.handlers.responses.replay import replay_events
from localoai.parsers.tool_calls import StreamDelta
from localoai.testing import wait_until
from localoai.testing.openapi import OpenAPISchemas, sse_events


@pytest.fixture(scope="module")
def server(scripted_server: Any) -> Any:
    """This module's protocol tests run on the scripted engine (tests/conftest.py), not random weights."""
    return scripted_server


SHELL = {"type": "shell", "environment": {"type": "local"}}
NAMESPACE = {"type": "namespace", "name": "crm", "description": "Customers.", "tools": [
    {"type": "function", "name": "lookup", "parameters": {"type": "object", "properties": {},
                                                          "additionalProperties": False}}]}
SCHEMA = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"], "additionalProperties": False}


SHAPES: dict[str, dict[str, Any]] = {
    "text": {},
    "incomplete": {"max_output_tokens": 1},
    "logprobs": {"include": ["message.output_text.logprobs"], "top_logprobs": 2},
    "json_schema": {"text": {"format": {"type": "json_schema", "name": "n", "schema": SCHEMA, "strict": True},
                             "verbosity": "low"}},
    "json_object": {"text": {"format": {"type": "json_object"}}},
    "instructions_metadata": {"instructions": "Be brief.", "metadata": {"k": "v"}, "temperature": 0.5,
                              "top_p": 0.9, "store": False, "prompt_cache_key": "s1",
                              "client_metadata": {"x-codex-turn-metadata": "{}"}},
    "function": {"tools": [{"type": "function", "name": "f", "parameters": {"type": "object", "properties": {},
                                                                           "additionalProperties": False}}],
                 "tool_choice": "required"},
    "namespace": {"tools": [NAMESPACE], "tool_choice": "required"},
    # offered (their echo validated); their calls, over the wire, in test_responses_codex.py
    "client_tools": {"tools": [{"type": "custom", "name": "exec", "format": {"type": "text"}}, SHELL,
                               {"type": "local_shell"}, {"type": "apply_patch"}], "tool_choice": "auto"},
    "hosted_not_offered": {"tools": [{"type": "web_search", "external_web_access": False}], "tool_choice": "auto"},
    "no_tools": {"tools": [], "tool_choice": "auto", "parallel_tool_calls": True},
}


CONSTRAINED = ("json_schema", "json_object", "function", "namespace", "client_tools")
"""Shapes whose output a grammar constrains: the scripted engine enforces none, the model's engine does."""


@pytest.mark.parametrize("shape", list(SHAPES))
def test_streams_and_objects_validate(request: pytest.FixtureRequest, openapi: OpenAPISchemas, shape: str) -> None:
    server = request.getfixturevalue("model_server" if shape in CONSTRAINED else "server")
    body = {"model": server.model, "input": "hi", "max_output_tokens": 40 if "tool_choice" in SHAPES[shape] else 12,
            **SHAPES[shape]}
    final = openapi.check_stream(sse_events(f"{server.base_url}/responses", {**body, "stream": True}))
    created = httpx.post(f"{server.base_url}/responses", json=body, timeout=120)
    assert created.status_code == 200, created.text
    openapi.check(created.json(), "Response")
    if shape == "function":
        assert final["output"][0]["type"] == "function_call"
    if shape == "namespace":
        [call] = [item for item in final["output"] if item["type"] == "function_call"]
        assert (call["namespace"], call["name"]) == ("crm", "lookup")
    if body.get("store", True):  # stored: retrieved and replayed as a stream, both valid
        response_id = created.json()["id"]
        openapi.check(httpx.get(f"{server.base_url}/responses/{response_id}").json(), "Response")
        openapi.check_stream(sse_events(f"{server.base_url}/responses/{response_id}?stream=true"))


def test_background_response_validates_queued_polled_and_replayed(server: Any, openapi: OpenAPISchemas) -> None:
    body = {"model": server.model, "input": "hi", "max_output_tokens": 5, "background": True}
    queued = httpx.post(f"{server.base_url}/responses", json=body, timeout=60).json()
    openapi.check(queued, "Response")
    url = f"{server.base_url}/responses/{queued['id']}"
    wait_until(lambda: httpx.get(url).json()["status"] not in ("queued", "in_progress"), message="never finished")
    openapi.check(httpx.get(url).json(), "Response")
    openapi.check_stream(sse_events(f"{url}?stream=true"))
    openapi.check_stream(sse_events(f"{server.base_url}/responses", {**body, "stream": True}))


def test_every_output_item_kind_validates_from_the_builder(openapi: OpenAPISchemas) -> None:
    """Items a random model rarely makes (reasoning, several calls, a hosted tool's call), streamed
    and replayed from the stored response."""
    from openai.types.responses import ResponseFunctionWebSearch

    from localoai.handlers.responses.client_tools import ClientToolType

    settings = {"id": "resp_1", "object": "response", "created_at": 0, "model": "m", "parallel_tool_calls": True,
                "tool_choice": "auto", "tools": [], "error": None, "incomplete_details": None, "instructions": None,
                "metadata": {}, "temperature": 1.0, "top_p": 1.0}
    kinds: dict[str, ClientToolType] = {"note": "custom", "local_shell": "local_shell", "shell": "shell",
                                        "apply_patch": "apply_patch"}
    build = ResponseEvents(settings=settings, client_tools=kinds, namespaced={"crm__lookup": ("crm", "lookup")})
    calls = [("note", {"input": "x"}), ("local_shell", {"command": ["ls"], "timeout_ms": 5}),
             ("shell", {"commands": ["pwd"], "timeout_ms": 10, "max_output_length": 100}),
             ("apply_patch", {"operation": {"type": "create_file", "path": "a", "diff": "+a"}}),
             ("crm__lookup", {"id": "7"})]
    events = [build.created(), build.in_progress(), *build.reasoning_delta("Think."), *build.text_delta("Hi.")]
    for index, (name, arguments) in enumerate(calls):
        events += build.call_delta(StreamDelta(index=index, id=f"call_{index}", name=name, arguments=""))
        events += build.call_delta(StreamDelta(index=index, arguments=json.dumps(arguments)))
    events += build.whole_item(ResponseFunctionWebSearch(id="ws_1", type="web_search_call", status="completed",
                                                         action={"type": "search", "query": "q"}))
    events += build.finished(usage(3, 4, 1), incomplete=False)
    wire = [json.loads(event.model_dump_json(exclude_unset=True, by_alias=True)) for event in events]
    final = openapi.check_stream(wire)
    assert [item["type"] for item in final["output"]] == [
        "reasoning", "message", "custom_tool_call", "local_shell_call", "shell_call", "apply_patch_call",
        "function_call", "web_search_call"]
    replayed = replay_events(events[-1].response)
    openapi.check_stream([json.loads(event.model_dump_json(exclude_unset=True, by_alias=True)) for event in replayed])

    # a failure after the stream began: the output so far, an open item incomplete
    failing = ResponseEvents(settings=settings)
    events = [failing.created(), failing.in_progress(), *failing.text_delta("Hal"), failing.failed("boom")]
    failed = openapi.check_stream([json.loads(event.model_dump_json(exclude_unset=True, by_alias=True))
                                   for event in events])
    assert failed["status"] == "failed" and failed["output"][0]["status"] == "incomplete"


def test_the_validator_reports_each_violation(openapi: OpenAPISchemas) -> None:
    event = {"type": "response.function_call_arguments.done", "item_id": "fc_1", "output_index": 0,
             "sequence_number": 3, "arguments": "{}"}
    with pytest.raises(AssertionError, match="'name' is a required property"):
        openapi.check_event(event)
    openapi.check_event({**event, "name": "f"})
    shell = {"type": "shell_call", "id": "sh_1", "call_id": "c", "status": "completed", "environment": None,
             "action": {"commands": ["ls"]}}
    with pytest.raises(AssertionError, match="timeout_ms"):
        openapi.check(shell, "FunctionShellCall")
    with pytest.raises(AssertionError, match="not a Responses stream event"):
        openapi.check_event({"type": "response.telepathy"})
