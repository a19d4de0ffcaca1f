"""Tools the client executes (`custom`, `local_shell`, `shell`, `apply_patch`) as functions the
model can call, and back.

A chat template only knows function tools, so each client tool is offered as a function with a
parameters schema in the shape its call item carries: a `custom` tool takes `{"input": <text>}`
(a grammar, when given, is shown to the model in the parameter's description; it is NOT enforced
yet), `local_shell` `{"command": [...], ...}` (its `action`), `shell` `{"commands": [...], ...}`,
`apply_patch` `{"operation": {...}}`. Earlier calls and their outputs (the input items) render
as assistant tool calls and tool results in those same shapes, so the model sees its own calls
the way it makes them.

A call the parser finds under one of those names becomes the matching output item
(`custom_tool_call`, `local_shell_call`, `shell_call`, `apply_patch_call`). Arguments that do not
fit the item's shape (no `command` list, a bad `operation`) cannot make a valid item: the call is
then returned as a plain `function_call` with the model's arguments, and the reason is traced.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from openai.types.responses import (
    ResponseApplyPatchToolCall,
    ResponseCustomToolCall,
    ResponseCustomToolCallInputDeltaEvent,
    ResponseCustomToolCallInputDoneEvent,
    ResponseFunctionShellToolCall,
    ResponseOutputItemAddedEvent,
    ResponseOutputItemDoneEvent,
    ResponseShellCallCommandAddedEvent,
    ResponseShellCallCommandDeltaEvent,
    ResponseShellCallCommandDoneEvent,
    ResponseStreamEvent,
)
from openai.types.responses.response_output_item import LocalShellCall
from pydantic import BaseModel, ValidationError

from localoai.handlers.common import new_id
from localoai.protocol.hosted_tools import namespaced_name
from localoai.protocol.client_tools import (
    BUILT_IN_NAMES,
    ApplyPatchCallItem,
    ApplyPatchCallOutputItem,
    CustomToolCallItem,
    CustomToolCallOutputItem,
    LocalShellCallItem,
    LocalShellCallOutputItem,
    SHELL_FUNCTION,
    ShellCallItem,
    ShellCallOutputItem,
    offered_name,
)

ClientToolType = Literal["custom", "local_shell", "shell", "apply_patch"]
ItemStatus = Literal["in_progress", "completed", "incomplete"]

def client_tool_types(tools: Sequence[Any] | None) -> dict[str, ClientToolType]:
    """Offered client tools by the name the model calls them (function tools left out)."""
    return {offered_name(tool): tool.type for tool in tools or [] if tool.type != "function"}


# -- input items ---------------------------------------------------------------------------

_ID_PREFIXES = {
    "custom_tool_call": "ctc_", "custom_tool_call_output": "ctco_", "local_shell_call": "lsh_",
    "shell_call": "sh_", "shell_call_output": "sho_", "apply_patch_call": "apc_", "apply_patch_call_output": "apco_",
}
CLIENT_ITEMS = (CustomToolCallItem, CustomToolCallOutputItem, LocalShellCallItem, LocalShellCallOutputItem,
                ShellCallItem, ShellCallOutputItem, ApplyPatchCallItem, ApplyPatchCallOutputItem)


def stored_item(item: BaseModel) -> dict[str, Any]:
    """An input item as `input_items` lists it: as sent, with an id (and a status where its type has one)."""
    stored = item.model_dump(mode="json", exclude_none=True)
    kind = stored["type"]
    if "id" not in stored:
        stored["id"] = new_id(_ID_PREFIXES[kind])
    if kind in ("local_shell_call", "shell_call") and "status" not in stored:
        stored["status"] = "completed"
    return stored


def _arguments(payload: dict[str, Any]) -> str:
    return json.dumps({key: value for key, value in payload.items() if value is not None}, ensure_ascii=False)


def chat_tool_call(item: dict[str, Any]) -> dict[str, Any] | None:
    """A stored client-tool call as an assistant `tool_calls` entry, its arguments in the shape the
    function was offered with; None for other item types."""
    kind = item["type"]
    if kind == "custom_tool_call":
        name, arguments = item["name"], _arguments({"input": item["input"]})
        if item.get("namespace"):
            name = namespaced_name(item["namespace"], name)
    elif kind == "local_shell_call":
        action = {key: value for key, value in item["action"].items() if key != "type"}
        name, arguments = BUILT_IN_NAMES["local_shell"], _arguments(action)
    elif kind == "shell_call":
        name, arguments = BUILT_IN_NAMES["shell"], _arguments(item["action"])
    elif kind == "apply_patch_call":
        name, arguments = BUILT_IN_NAMES["apply_patch"], _arguments({"operation": item["operation"]})
    else:
        return None
    call_id = item.get("call_id") or item["id"]  # Codex may leave a local_shell_call's call_id out
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def tool_result(item: dict[str, Any]) -> tuple[str, str] | None:
    """A stored client-tool output as (the call id it answers, the text the model reads); None for
    other item types."""
    kind = item["type"]
    if kind == "custom_tool_call_output":
        output = item["output"]
        text = output if isinstance(output, str) else "\n".join(part["text"] for part in output)
        return item["call_id"], text
    if kind == "local_shell_call_output":
        return item["id"], item["output"]
    if kind == "shell_call_output":
        return item["call_id"], json.dumps(item["output"], ensure_ascii=False)
    if kind == "apply_patch_call_output":
        return item["call_id"], item.get("output") or item["status"]
    return None


# -- output items --------------------------------------------------------------------------


def _as_list(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


def call_item(kind: ClientToolType, item_id: str, call_id: str, name: str, arguments: str,
              status: ItemStatus, namespace: str | None = None) -> BaseModel:
    """The output item for a model's call of a client tool. Raises ValueError when its arguments
    do not fit the item's shape."""
    try:
        args = json.loads(arguments) if arguments else {}
    except ValueError:
        args = None
    if kind == "custom":
        text = args.get("input") if isinstance(args, dict) and set(args) == {"input"} else None
        return ResponseCustomToolCall(type="custom_tool_call", id=item_id, call_id=call_id, name=name,
                                      input=text if isinstance(text, str) else arguments,
                                      **({"namespace": namespace} if namespace else {}))
    if not isinstance(args, dict):
        raise ValueError(f"the arguments of {name!r} are not a JSON object")
    try:
        if kind == "local_shell":
            action = {"env": {}, **args, "type": "exec", "command": _as_list(args.get("command"))}
            return LocalShellCall(type="local_shell_call", id=item_id, call_id=call_id, status=status, action=action)
        if kind == "shell":
            unknown = sorted(set(args) - set(SHELL_FUNCTION["parameters"]["properties"]))
            if unknown:  # the reference's action has exactly these keys
                raise ValueError(f"the arguments of {name!r} have keys a shell action has not: {unknown}")
            action = {"commands": _as_list(args.get("commands")), "timeout_ms": args.get("timeout_ms"),
                      "max_output_length": args.get("max_output_length")}
            return ResponseFunctionShellToolCall(type="shell_call", id=item_id, call_id=call_id, status=status,
                                                 action=action, environment=None)
        return ResponseApplyPatchToolCall(type="apply_patch_call", id=item_id, call_id=call_id,
                                          status="completed" if status == "completed" else "in_progress",
                                          operation=args.get("operation"))
    except ValidationError as exc:
        where = "; ".join(f"{'.'.join(map(str, error['loc']))}: {error['msg']}" for error in exc.errors()[:3])
        raise ValueError(f"the arguments of {name!r} do not fit a {kind} call ({where})") from None


@dataclass
class ClientToolCall:
    """A call of a client tool as the event builder streams it. Its item can only be built once
    its arguments are whole, so its events all go out when it closes (the parsers hand over each
    call whole anyway): `output_item.added`, the type's own events, `output_item.done`."""

    kind: ClientToolType
    call_id: str
    name: str
    arguments: list[str] = field(default_factory=list)
    status: ItemStatus = "in_progress"
    id: str = ""
    namespace: str | None = None
    """The `namespace` tool a custom tool belongs to, if any."""

    def __post_init__(self) -> None:
        self.id = self.id or new_id({"custom": "ctc_", "local_shell": "lsh_", "shell": "sh_",
                                     "apply_patch": "apc_"}[self.kind])

    def item(self, status: ItemStatus | None = None) -> BaseModel:
        return call_item(self.kind, self.id, self.call_id, self.name, "".join(self.arguments),
                         status or self.status, self.namespace)

    def closing_events(self, index: int, event: Callable[..., Any]) -> list[ResponseStreamEvent]:
        """The call's events, `event(EventType, **fields)` stamping each with its sequence number.
        Raises ValueError (before any event is made) when the arguments do not fit."""
        done = self.item("completed")
        self.status = "completed"
        added = done.model_copy(update={"status": "in_progress"}) if hasattr(done, "status") else done
        events = []
        if isinstance(done, ResponseCustomToolCall):
            events.append(event(ResponseOutputItemAddedEvent, type="response.output_item.added", output_index=index,
                                item=done.model_copy(update={"input": ""})))
            events.append(event(ResponseCustomToolCallInputDeltaEvent, type="response.custom_tool_call_input.delta",
                                item_id=self.id, output_index=index, delta=done.input))
            events.append(event(ResponseCustomToolCallInputDoneEvent, type="response.custom_tool_call_input.done",
                                item_id=self.id, output_index=index, input=done.input))
        elif isinstance(done, ResponseFunctionShellToolCall):
            empty = added.model_copy(update={"action": done.action.model_copy(update={"commands": []})})
            events.append(event(ResponseOutputItemAddedEvent, type="response.output_item.added", output_index=index,
                                item=empty))
            for command_index, command in enumerate(done.action.commands):
                ids = {"output_index": index, "command_index": command_index}
                events.append(event(ResponseShellCallCommandAddedEvent, type="response.shell_call_command.added",
                                    command="", **ids))
                events.append(event(ResponseShellCallCommandDeltaEvent, type="response.shell_call_command.delta",
                                    delta=command, **ids))
                events.append(event(ResponseShellCallCommandDoneEvent, type="response.shell_call_command.done",
                                    command=command, **ids))
        else:  # local_shell_call and apply_patch_call have no events of their own
            events.append(event(ResponseOutputItemAddedEvent, type="response.output_item.added", output_index=index,
                                item=added))
        events.append(event(ResponseOutputItemDoneEvent, type="response.output_item.done", output_index=index,
                            item=done))
        return events
