"""Tools the client executes itself (`custom`, `local_shell`, `shell`, `apply_patch`) and the
input items that carry their calls and outputs, as coding agents (Codex) send them.

These run on the user's machine, not on OpenAI's, so a local model can use them: each is offered
to the model as a function (`function_definition`, below). Shapes follow the `openai` SDK's
`types.responses`; fields Codex leaves out although the reference marks them required (a
`local_shell_call`'s `id` / `call_id` / `action.env`) are optional here. A `shell` tool whose
`environment` is an OpenAI container is hosted, and refused naming it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal, Union

from pydantic import Field, model_validator

from localoai.protocol.base import Count, Int64, RequestModel, Unsupported

ItemStatus = Literal["in_progress", "completed", "incomplete"]
ToolName = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-zA-Z0-9_-]+$")]

# -- tools ---------------------------------------------------------------------------------


class TextInputFormat(RequestModel):
    type: Literal["text"]


class GrammarInputFormat(RequestModel):
    """Accepted but NOT enforced yet: the model is shown the grammar, its output is not constrained
    to it until constrained decoding lands (as with function tools' `strict`)."""

    type: Literal["grammar"]
    syntax: Literal["lark", "regex"]
    definition: str


class CustomTool(RequestModel):
    """A tool whose input is free-form text (optionally described by a grammar)."""

    type: Literal["custom"]
    name: ToolName
    description: str | None = None
    format: Annotated[Union[TextInputFormat, GrammarInputFormat], Field(discriminator="type")] | None = None


class LocalShellTool(RequestModel):
    type: Literal["local_shell"]


class LocalShellEnvironment(RequestModel):
    type: Literal["local"]
    skills: list[dict[str, Any]] | None = None  # described to the client's own shell, not to the model


class ShellTool(RequestModel):
    type: Literal["shell"]
    environment: LocalShellEnvironment | None = None


def check_shell_environment(tool: Mapping[str, Any], *, param: str) -> None:
    """Refuse, naming it, a shell tool that would run in one of OpenAI's containers."""
    environment = tool.get("environment")
    kind = environment.get("type") if isinstance(environment, Mapping) else None
    if isinstance(kind, str) and kind in ("container_auto", "container_reference"):
        raise Unsupported(f"a shell environment of type '{kind}' is an OpenAI-hosted container and is not "
                          "available on a local model; use a local environment (the client runs the commands)",
                          param=param)


class ApplyPatchTool(RequestModel):
    type: Literal["apply_patch"]


ClientTool = Union[CustomTool, LocalShellTool, ShellTool, ApplyPatchTool]
CLIENT_TOOL_TYPES = frozenset({"custom", "local_shell", "shell", "apply_patch"})

# -- input items ---------------------------------------------------------------------------


class Caller(RequestModel):
    """Who made a call; only the model itself (`direct`) here: programs are a hosted feature."""

    type: Literal["direct"]


class CustomToolCallItem(RequestModel):
    type: Literal["custom_tool_call"]
    call_id: str
    name: str
    input: str
    id: str | None = None
    status: ItemStatus | None = None  # Codex sends it; the SDK's item has none
    namespace: str | None = None
    caller: Caller | None = None


class InputText(RequestModel):
    type: Literal["input_text"]
    text: str


class CustomToolCallOutputItem(RequestModel):
    type: Literal["custom_tool_call_output"]
    call_id: str
    output: str | list[InputText]
    id: str | None = None
    status: ItemStatus | None = None
    caller: Caller | None = None


class LocalShellAction(RequestModel):
    type: Literal["exec"]
    command: list[str]
    env: dict[str, str] | None = None
    timeout_ms: Count | None = None
    user: str | None = None
    working_directory: str | None = None


class LocalShellCallItem(RequestModel):
    type: Literal["local_shell_call"]
    action: LocalShellAction
    call_id: str | None = None
    id: str | None = None
    status: ItemStatus | None = None

    @model_validator(mode="after")
    def _identified(self) -> LocalShellCallItem:
        if self.call_id is None and self.id is None:
            raise ValueError("a local_shell_call needs a call_id (or an id)")
        return self


class LocalShellCallOutputItem(RequestModel):
    """`id` is the `call_id` of the call it answers (as the reference defines it)."""

    type: Literal["local_shell_call_output"]
    id: str
    output: str
    status: ItemStatus | None = None


class ShellAction(RequestModel):
    commands: list[str]
    max_output_length: Count | None = None
    timeout_ms: Count | None = None


class ShellCallItem(RequestModel):
    type: Literal["shell_call"]
    call_id: str
    action: ShellAction
    id: str | None = None
    status: ItemStatus | None = None
    environment: LocalShellEnvironment | None = None
    caller: Caller | None = None


class ShellOutcome(RequestModel):
    type: Literal["exit", "timeout"]
    exit_code: Int64 | None = None


class ShellOutputChunk(RequestModel):
    stdout: str
    stderr: str
    outcome: ShellOutcome
    created_by: str | None = None


class ShellCallOutputItem(RequestModel):
    type: Literal["shell_call_output"]
    call_id: str
    output: list[ShellOutputChunk]
    id: str | None = None
    max_output_length: Count | None = None
    status: ItemStatus | None = None
    caller: Caller | None = None


class CreateFile(RequestModel):
    type: Literal["create_file"]
    path: str
    diff: str


class UpdateFile(RequestModel):
    type: Literal["update_file"]
    path: str
    diff: str


class DeleteFile(RequestModel):
    type: Literal["delete_file"]
    path: str


PatchOperation = Annotated[Union[CreateFile, UpdateFile, DeleteFile], Field(discriminator="type")]


class ApplyPatchCallItem(RequestModel):
    type: Literal["apply_patch_call"]
    call_id: str
    operation: PatchOperation
    status: Literal["in_progress", "completed"] = "completed"
    id: str | None = None
    caller: Caller | None = None


class ApplyPatchCallOutputItem(RequestModel):
    type: Literal["apply_patch_call_output"]
    call_id: str
    status: Literal["completed", "failed"]
    output: str | None = None
    id: str | None = None
    caller: Caller | None = None


CLIENT_CALL_ITEMS: dict[str, type[RequestModel]] = {
    "custom_tool_call": CustomToolCallItem,
    "custom_tool_call_output": CustomToolCallOutputItem,
    "local_shell_call": LocalShellCallItem,
    "local_shell_call_output": LocalShellCallOutputItem,
    "shell_call": ShellCallItem,
    "shell_call_output": ShellCallOutputItem,
    "apply_patch_call": ApplyPatchCallItem,
    "apply_patch_call_output": ApplyPatchCallOutputItem,
}

BUILT_IN_NAMES: dict[str, str] = {"local_shell": "local_shell", "shell": "shell", "apply_patch": "apply_patch"}
"""The function name each built-in client tool is offered to the model under."""


def offered_name(tool: Any) -> str:
    """The name the model calls a tool by: its own for function and custom tools."""
    return BUILT_IN_NAMES.get(tool.type) or tool.name


# -- the functions client tools are offered to the model as ----------------------------------

_LOCAL_SHELL = {
    "name": "local_shell",
    "description": "Run a command on the user's machine and get its output.",
    "parameters": {
        "type": "object",
        "properties": {
            "command": {"type": "array", "items": {"type": "string"}, "description": "The command and its arguments."},
            "working_directory": {"type": "string"},
            "timeout_ms": {"type": "integer"},
            "env": {"type": "object", "additionalProperties": {"type": "string"}},
        },
        "required": ["command"],
    },
}
SHELL_FUNCTION = {
    "name": "shell",
    "description": "Run shell commands on the user's machine, in order, and get their output.",
    "parameters": {
        "type": "object",
        "properties": {
            "commands": {"type": "array", "items": {"type": "string"}},
            "timeout_ms": {"type": "integer"},
            "max_output_length": {"type": "integer"},
        },
        "required": ["commands"],
        "additionalProperties": False,
    },
}
_APPLY_PATCH = {
    "name": "apply_patch",
    "description": "Create, update or delete a file on the user's machine with a unified diff.",
    "parameters": {
        "type": "object",
        "properties": {
            "operation": {
                "type": "object",
                "properties": {
                    "type": {"type": "string", "enum": ["create_file", "update_file", "delete_file"]},
                    "path": {"type": "string"},
                    "diff": {"type": "string", "description": "The unified diff (not for delete_file)."},
                },
                "required": ["type", "path"],
            },
        },
        "required": ["operation"],
    },
}
_BUILT_IN_FUNCTIONS: dict[str, dict[str, Any]] = {"local_shell": _LOCAL_SHELL, "shell": SHELL_FUNCTION,
                                                  "apply_patch": _APPLY_PATCH}


def function_definition(tool: Any) -> dict[str, Any] | None:
    """The chat-template function a client tool is offered as; None for a function tool."""
    if isinstance(tool, CustomTool):
        described = "The tool's input, as free-form text."
        if isinstance(tool.format, GrammarInputFormat):
            described = (f"The tool's input. It must match this {tool.format.syntax} grammar:\n"
                         f"{tool.format.definition}")
        definition: dict[str, Any] = {"name": tool.name}
        if tool.description:
            definition["description"] = tool.description
        definition["parameters"] = {"type": "object", "properties": {"input": {"type": "string",
                                                                                "description": described}},
                                    "required": ["input"]}
        return definition
    return _BUILT_IN_FUNCTIONS.get(tool.type)
