"""Codex-shaped requests on the Responses API: tools the client executes (`custom`, `shell`,
`local_shell`, `apply_patch`), their calls and outputs sent back as history, `developer` messages,
assistant `output_text` parts and `reasoning` items with `encrypted_content`.

A tiny model is trained in a fixture on one Codex-like episode (call a custom tool, then the
shell tool), so the calls come back as real `custom_tool_call` / `shell_call` items through the
official `openai` SDK, streamed and not; the third turn's prompt is checked token for token."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from localoai.handlers.responses.items import chat_tools
from localoai.protocol.responses import ResponseCreateRequest
from localoai.testing import running_server
from localoai.testing.openapi import sse_events
from localoai.testing.trained import train_assistant

CUSTOM = {"type": "custom", "name": "exec", "format": {"type": "text"}}
SHELL = {"type": "shell", "environment": {"type": "local"}}
TOOLS = [CUSTOM, SHELL]
INSTRUCTIONS = "Agent."
DEVELOPER = "Be brief."
QUESTION = "Show the notes."
SHELL_OUTPUT = [{"stdout": "buy milk\n", "stderr": "", "outcome": {"type": "exit", "exit_code": 0}}]
REASONING = {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "gAAAA-opaque"}
# What Codex sends besides the items: nothing stored on OpenAI's side, reasoning sent back encrypted.
REQUEST: dict[str, Any] = {"model": "codex", "instructions": INSTRUCTIONS, "tools": TOOLS, "tool_choice": "auto",
                           "parallel_tool_calls": False, "store": False, "include": ["reasoning.encrypted_content"],
                           "temperature": 0, "max_output_tokens": 40}


def offered_functions() -> list[dict[str, Any]]:
    """The tools as the server hands them to the chat template."""
    tools = ResponseCreateRequest.model_validate({"model": "m", "tools": TOOLS}).tools
    return [tool.model_dump(mode="json", exclude_none=True) for tool in chat_tools(tools) or []]


def episode() -> list[dict[str, Any]]:
    """The chat messages the whole exchange renders to (an earlier turn first)."""
    return [
        {"role": "system", "content": f"{INSTRUCTIONS}\n\n{DEVELOPER}"},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": QUESTION},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "exec", "arguments": '{"input": "ls notes"}'}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "todo.txt"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c2", "type": "function", "function": {"name": "shell",
                                                          "arguments": '{"commands": ["cat todo.txt"]}'}}]},
        {"role": "tool", "tool_call_id": "c2", "content": json.dumps(SHELL_OUTPUT)},
    ]


def markup(name: str, arguments: dict[str, Any]) -> str:
    return f'<tool_call>\n{json.dumps({"name": name, "arguments": arguments})}\n</tool_call>'


@pytest.fixture(scope="module")
def codex_server() -> Iterator[Any]:
    turns = [
        (episode()[:4], markup("exec", {"input": "ls notes"})),
        (episode()[:6], markup("shell", {"commands": ["cat todo.txt"]})),
    ]
    model, tokenizer = train_assistant(turns, tools=offered_functions())
    with running_server(model, tokenizer, name="codex") as server:
        yield server


def history() -> list[dict[str, Any]]:
    """The first turn's input as Codex sends it: developer message, an earlier exchange with its
    reasoning (encrypted) and an assistant message of `output_text` parts, then the question."""
    return [
        {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": DEVELOPER}]},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]},
        REASONING,
        {"type": "message", "role": "assistant", "id": "msg_0",
         "content": [{"type": "output_text", "text": "Hello.", "annotations": []}]},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": QUESTION}]},
    ]


def run(client: openai.OpenAI, items: list[Any], *, stream: bool) -> tuple[Any, list[str]]:
    """One turn: the response, and the event types when streamed."""
    if not stream:
        return client.responses.create(input=items, **REQUEST), []
    events = list(client.responses.create(input=items, stream=True, **REQUEST))
    assert [event.sequence_number for event in events] == list(range(len(events)))
    with client.responses.stream(input=items, **REQUEST) as accumulated:  # the SDK's accumulator takes it
        final = accumulated.get_final_response()
    assert final.output_text == events[-1].response.output_text
    return events[-1].response, [event.type for event in events]


@pytest.mark.parametrize("stream", [False, True], ids=["create", "stream"])
def test_codex_multi_turn_with_custom_and_shell_tools(codex_server: Any, stream: bool) -> None:
    client = codex_server.client(max_retries=0)
    items: list[Any] = history()

    first, types = run(client, items, stream=stream)
    assert first.status == "completed" and first.output_text == ""
    [custom] = first.output
    assert custom.type == "custom_tool_call" and custom.name == "exec" and custom.input == "ls notes"
    assert custom.id.startswith("ctc_") and custom.call_id.startswith("call_")
    assert [tool.type for tool in first.tools] == ["custom", "shell"]
    assert first.tools[0].format.type == "text"
    if stream:
        assert types == ["response.created", "response.in_progress", "response.output_item.added",
                         "response.custom_tool_call_input.delta", "response.custom_tool_call_input.done",
                         "response.output_item.done", "response.completed"]

    # Codex sends everything back: the earlier items, reasoning, the call and its output
    items += [{"type": "reasoning", "id": "rs_2", "summary": [{"type": "summary_text", "text": "Run it."}]}, custom,
              {"type": "custom_tool_call_output", "call_id": custom.call_id, "output": "todo.txt"}]
    second, types = run(client, items, stream=stream)
    [shell] = second.output
    assert shell.type == "shell_call" and shell.status == "completed" and shell.id.startswith("sh_")
    assert shell.action.commands == ["cat todo.txt"] and shell.call_id.startswith("call_")
    if stream:
        assert types == ["response.created", "response.in_progress", "response.output_item.added",
                         "response.shell_call_command.added", "response.shell_call_command.delta",
                         "response.shell_call_command.done", "response.output_item.done", "response.completed"]

    items += [shell, {"type": "shell_call_output", "call_id": shell.call_id, "output": SHELL_OUTPUT}]
    third, _ = run(client, items, stream=stream)
    assert third.status in ("completed", "incomplete")  # what it answers is untrained

    # the model saw exactly the conversation it was trained on; reasoning items are not rendered
    record = codex_server.store.get(third.id)
    tokenizer = codex_server.served.tokenizer
    assert record.prompt_text == tokenizer.apply_chat_template(episode(), tools=offered_functions(),
                                                               add_generation_prompt=True, tokenize=False)
    assert "gAAAA" not in record.prompt_text and "Run it." not in record.prompt_text
    assert not record.store_visible  # store: false, still recorded
    listed = [item["type"] for item in record.request["input_items"]]
    assert listed == ["message", "message", "reasoning", "message", "message", "reasoning", "custom_tool_call",
                      "custom_tool_call_output", "shell_call", "shell_call_output"]


def test_codex_turns_validate_against_openapi(codex_server: Any, openapi: Any) -> None:
    """The custom and shell calls, as streamed and as returned, in OpenAI's OpenAPI shapes."""
    url, items = f"{codex_server.base_url}/responses", history()
    first = openapi.check_stream(sse_events(url, {**REQUEST, "input": items, "stream": True}))
    [custom] = first["output"]
    assert custom["type"] == "custom_tool_call"
    items += [custom, {"type": "custom_tool_call_output", "call_id": custom["call_id"], "output": "todo.txt"}]
    second = openapi.check_stream(sse_events(url, {**REQUEST, "input": items, "stream": True, "store": True}))
    assert [item["type"] for item in second["output"]] == ["shell_call"]
    openapi.check(httpx.post(url, json={**REQUEST, "input": items}).json(), "Response")
    openapi.check_stream(sse_events(f"{url}/{second['id']}?stream=true"))  # replayed from the store


def test_stored_chain_replays_client_tool_items(codex_server: Any) -> None:
    """With `store` and `previous_response_id` the call items are replayed from the store."""
    client = codex_server.client(max_retries=0)
    first = client.responses.create(input=history(), **{**REQUEST, "store": True})
    [custom] = first.output
    second = client.responses.create(
        input=[{"type": "custom_tool_call_output", "call_id": custom.call_id, "output": "todo.txt"}],
        previous_response_id=first.id, **{**REQUEST, "store": True, "instructions": INSTRUCTIONS})
    assert [item.type for item in second.output] == ["shell_call"]
    assert client.responses.retrieve(second.id).model_dump(mode="json") == second.model_dump(mode="json")
    items = client.responses.input_items.list(second.id, order="asc").data
    assert [item.type for item in items][-2:] == ["custom_tool_call", "custom_tool_call_output"]
    assert items[-2].id == custom.id and items[-2].input == "ls notes"


# --- every client item type renders, on the session model --------------------------------------


def test_every_client_tool_item_renders_as_tool_calls_and_results(client: openai.OpenAI, server: Any,
                                                                  tiny: Any) -> None:
    _, tokenizer = tiny
    patch = {"type": "update_file", "path": "a.py", "diff": "@@\n-a\n+b\n"}
    tools = [{"type": "local_shell"}, {"type": "apply_patch"}, {"type": "custom", "name": "note"}]
    reply = client.responses.create(model=server.model, max_output_tokens=1, tools=tools, input=[
        {"role": "user", "content": "go"},
        # Codex leaves a local_shell_call's id and the action's env out
        {"type": "local_shell_call", "call_id": "c1", "status": "completed",
         "action": {"type": "exec", "command": ["ls", "-a"], "working_directory": "/w"}},
        {"type": "local_shell_call_output", "id": "c1", "output": '{"output": "a.py"}'},
        {"type": "apply_patch_call", "call_id": "c2", "status": "completed", "operation": patch},
        {"type": "apply_patch_call_output", "call_id": "c2", "status": "failed", "output": "no such file"},
        {"type": "custom_tool_call", "call_id": "c3", "name": "note", "input": "done"},
        {"type": "custom_tool_call_output", "call_id": "c3", "output": [{"type": "input_text", "text": "ok"}]},
    ])

    def call(call_id: str, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
        return {"role": "assistant", "content": None, "tool_calls": [
            {"id": call_id, "type": "function", "function": {"name": name, "arguments": json.dumps(arguments)}}]}

    functions = [tool.model_dump(mode="json", exclude_none=True) for tool in chat_tools(
        ResponseCreateRequest.model_validate({"model": "m", "tools": tools}).tools) or []]
    assert [function["function"]["name"] for function in functions] == ["local_shell", "apply_patch", "note"]
    expected = tokenizer.apply_chat_template([
        {"role": "user", "content": "go"},
        call("c1", "local_shell", {"command": ["ls", "-a"], "working_directory": "/w"}),
        {"role": "tool", "tool_call_id": "c1", "content": '{"output": "a.py"}'},
        call("c2", "apply_patch", {"operation": patch}),
        {"role": "tool", "tool_call_id": "c2", "content": "no such file"},
        call("c3", "note", {"input": "done"}),
        {"role": "tool", "tool_call_id": "c3", "content": "ok"},
    ], tools=functions, add_generation_prompt=True, tokenize=False)
    assert server.store.get(reply.id).prompt_text == expected
    items = client.responses.input_items.list(reply.id, order="asc").data
    assert [item.type for item in items][1:] == ["local_shell_call", "local_shell_call_output", "apply_patch_call",
                                                 "apply_patch_call_output", "custom_tool_call",
                                                 "custom_tool_call_output"]
    assert all(item.id for item in items) and items[2].id == "c1"
    assert [tool.type for tool in reply.tools] == ["local_shell", "apply_patch", "custom"]


@pytest.mark.parametrize(("fields", "param", "named"), [
    ({"tools": [{"type": "shell", "environment": {"type": "container_auto"}}]}, "tools[0].environment",
     "container_auto"),
    ({"tools": [{"type": "web_search"}], "tool_choice": {"type": "web_search"}}, "tool_choice", "web_search"),
    ({"tools": [{"type": "namespace", "name": "mcp", "tools": [{"type": "function", "name": "a"}]},
                {"type": "function", "name": "mcp__a"}]}, "tools[1]", "unique"),
    ({"tools": [{"type": "namespace", "name": "mcp", "tools": []}]}, "tools[0].tools", "at least 1"),
    ({"tools": [{"type": "shell"}, {"type": "function", "name": "shell"}]}, "tools[1]", "unique"),
    ({"input": [{"type": "code_interpreter_call", "id": "ci"}]}, "input[0].type", "code_interpreter_call"),
    ({"input": [{"type": "mcp_call", "id": "m"}]}, "input[0].type", "mcp_call"),
    ({"input": [{"type": "local_shell_call", "status": "completed",
                 "action": {"type": "exec", "command": ["ls"]}}]}, "input[0]", "call_id"),
])
def test_hosted_tools_stay_refused(server: Any, fields: dict[str, Any], param: str, named: str) -> None:
    body = {"model": server.model, "input": "x", "max_output_tokens": 1, **fields}
    response = httpx.post(f"{server.base_url}/responses", json=body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param and named in error["message"], error


# --- the event builder alone ------------------------------------------------------------------


def test_builder_maps_each_client_tool_call_to_its_item_type() -> None:
    from openai.lib.streaming.responses._responses import ResponseStreamState

    from localoai.handlers.responses.events import ResponseEvents, usage
    from localoai.parsers.tool_calls import HermesToolParser

    settings = {"id": "resp_1", "object": "response", "created_at": 0, "model": "m", "parallel_tool_calls": True,
                "tool_choice": "auto", "tools": []}
    names = {"note": "custom", "local_shell": "local_shell", "shell": "shell", "apply_patch": "apply_patch"}
    build = ResponseEvents(settings=settings, client_tools=names)  # type: ignore[arg-type]
    calls = [
        ("note", {"input": "free text"}),
        ("local_shell", {"command": "ls", "timeout_ms": 5}),  # a lone string is the whole command
        ("shell", {"commands": ["pwd", "ls"]}),
        ("apply_patch", {"operation": {"type": "delete_file", "path": "x"}}),
        ("apply_patch", {"operation": {"type": "rename"}}),  # does not fit: a plain function_call, traced
    ]
    text = "".join(f'<tool_call>{json.dumps({"name": n, "arguments": a})}</tool_call>' for n, a in calls)
    stream = HermesToolParser(list(names)).stream()
    events = [build.created(), build.in_progress()]
    for piece in [*stream.feed(text), *stream.finish()]:
        events += build.call_delta(piece)
    events += build.finished(usage(1, 2), incomplete=False)
    final = events[-1].response
    assert [item.type for item in final.output] == ["custom_tool_call", "local_shell_call", "shell_call",
                                                    "apply_patch_call", "function_call"]
    note, local, shell, patch, fallback = final.output
    assert note.input == "free text" and note.name == "note"
    assert local.action.command == ["ls"] and local.action.timeout_ms == 5 and local.action.env == {}
    assert local.status == shell.status == patch.status == "completed"
    assert shell.action.commands == ["pwd", "ls"]
    assert patch.operation.type == "delete_file" and patch.operation.path == "x"
    assert fallback.name == "apply_patch" and json.loads(fallback.arguments) == {"operation": {"type": "rename"}}
    assert "do not fit" in build.call_errors[0]
    assert [event.sequence_number for event in events] == list(range(len(events)))
    added = [event for event in events if event.type == "response.output_item.added"]
    done = [event for event in events if event.type == "response.output_item.done"]
    assert [event.output_index for event in added] == [event.output_index for event in done] == [0, 1, 2, 3, 4]
    assert [event.item for event in done] == final.output
    assert added[0].item.input == "" and added[2].item.action.commands == [] and added[1].item.status == "in_progress"
    commands = [event for event in events if event.type == "response.shell_call_command.done"]
    assert [(event.command_index, event.command) for event in commands] == [(0, "pwd"), (1, "ls")]
    state = ResponseStreamState(input_tools=openai.omit, text_format=openai.omit)
    for event in events:
        state.handle_event(event)
    assert state._completed_response.model_dump(exclude={"output": {"__all__": {"parsed_arguments"}}}) \
        == final.model_dump()


# --- what the current Codex sends besides its items, on the session model ---------------------


def codex_body(server: Any, **fields: Any) -> dict[str, Any]:
    """A request as Codex 0.17x shapes it (see tests/test_codex_cli.py for the real one)."""
    return {"model": server.model, "input": [{"type": "message", "role": "user",
                                              "content": [{"type": "input_text", "text": "hi"}]}],
            "tools": [], "tool_choice": "auto", "parallel_tool_calls": True, "reasoning": {"summary": "auto"},
            "store": False, "include": ["reasoning.encrypted_content"], "prompt_cache_key": "0193-session",
            "client_metadata": {"x-codex-turn-metadata": '{"turn_id": "t1"}', "session_id": "0193-session"},
            "text": {"verbosity": "low"}, "max_output_tokens": 2, **fields}


def test_codex_fields_are_accepted_and_echoed(server: Any) -> None:
    response = httpx.post(f"{server.base_url}/responses", json=codex_body(server))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["text"]["verbosity"] == "low" and body["prompt_cache_key"] == "0193-session"
    assert body["tools"] == [] and body["tool_choice"] == "auto"


@pytest.mark.parametrize(("headers", "episode"), [
    ({"session_id": "0193a-b"}, "0193a-b"),
    ({"session-id": "0193a-c", "x-openai-subagent": "review"}, "0193a-c"),
    ({"session_id": "0193a-d", "X-Episode-Id": "mine"}, "mine"),  # an episode named otherwise wins
    ({"session_id": "not a valid id!"}, None),  # not ours to refuse: no episode
])
def test_codex_session_header_selects_the_episode(server: Any, headers: dict[str, str], episode: str | None) -> None:
    response = httpx.post(f"{server.base_url}/responses", json=codex_body(server), headers=headers)
    assert response.status_code == 200, response.text
    assert server.store.get(response.json()["id"]).episode_id == episode


def test_namespace_calls_render_under_their_flat_name(server: Any, tiny: Any) -> None:
    """Codex sends a namespaced call back with its `namespace`: the model sees it as it is offered."""
    namespace = {"type": "namespace", "name": "multi_agent_v1", "description": "Sub-agents.", "tools": [
        {"type": "function", "name": "spawn_agent", "strict": False,
         "parameters": {"type": "object", "properties": {"task": {"type": "string"}}}}]}
    items = [
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "go"}]},
        {"type": "function_call", "call_id": "c1", "name": "spawn_agent", "namespace": "multi_agent_v1",
         "arguments": '{"task": "t"}'},
        {"type": "function_call_output", "call_id": "c1", "output": "spawned"},
        # after a compaction a developer message can follow user messages: merged into the system turn
        {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "Be brief."}]},
    ]
    response = httpx.post(f"{server.base_url}/responses", json=codex_body(server, input=items, tools=[namespace]))
    assert response.status_code == 200, response.text
    record = server.store.get(response.json()["id"])
    _, tokenizer = tiny
    function = {"type": "function", "function": {"name": "multi_agent_v1__spawn_agent", "description": "Sub-agents.",
                                                 "parameters": namespace["tools"][0]["parameters"]}}
    expected = tokenizer.apply_chat_template([
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "go"},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function", "function": {
            "name": "multi_agent_v1__spawn_agent", "arguments": '{"task": "t"}'}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "spawned"},
    ], tools=[function], add_generation_prompt=True, tokenize=False)
    assert record.prompt_text == expected
    assert record.request["input_items"][1]["namespace"] == "multi_agent_v1"
