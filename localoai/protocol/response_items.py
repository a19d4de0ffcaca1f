"""Responses input items (and their content parts) as `POST /v1/responses` and the Conversations API
accept them: allow-listed by `type` (a message may omit it), an unknown type refused naming its
index, a known one this server cannot use (hosted tool calls, `item_reference`) refused naming it.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Annotated, Any, Literal, Union

from pydantic import Discriminator, Field, Tag, model_validator

from localoai.protocol.base import InvalidParam, RequestModel, Unsupported
from localoai.protocol.client_tools import (
    CLIENT_CALL_ITEMS,
    ApplyPatchCallItem,
    ApplyPatchCallOutputItem,
    CustomToolCallItem,
    CustomToolCallOutputItem,
    LocalShellCallItem,
    LocalShellCallOutputItem,
    ShellCallItem,
    ShellCallOutputItem,
)
from localoai.protocol.content import RefusalPart, RefusedPart
from localoai.protocol.hosted_tools import WebSearchCallItem

# -- content parts -------------------------------------------------------------------------


class InputTextPart(RequestModel):
    type: Literal["input_text"]
    text: str
    prompt_cache_breakpoint: dict[str, Any] | None = None  # a caching hint: changes no output


class OutputTextPart(RequestModel):
    """An earlier assistant turn's text, as the API returned it (annotations and logprobs kept)."""

    type: Literal["output_text"]
    text: str
    annotations: list[dict[str, Any]] = []
    logprobs: list[dict[str, Any]] | None = None


class InputImagePart(RefusedPart):
    type: Literal["input_image"]


class InputFilePart(RefusedPart):
    type: Literal["input_file"]


class InputAudioPart(RefusedPart):
    type: Literal["input_audio"]


ContentPart = Annotated[
    Union[InputTextPart, OutputTextPart, RefusalPart, InputImagePart, InputFilePart, InputAudioPart],
    Field(discriminator="type"),
]
ToolOutputPart = Annotated[Union[InputTextPart, InputImagePart, InputFilePart], Field(discriminator="type")]
ItemStatus = Literal["in_progress", "completed", "incomplete"]

# -- input items ---------------------------------------------------------------------------


class MessageItem(RequestModel):
    type: Literal["message"] = "message"  # an "easy" message may omit it
    role: Literal["user", "system", "developer", "assistant"]
    content: str | list[ContentPart]
    id: str | None = None
    status: ItemStatus | None = None
    phase: Literal["commentary", "final_answer"] | None = None

    @model_validator(mode="after")
    def _parts_fit_the_role(self) -> MessageItem:
        allowed = ("output_text", "refusal") if self.role == "assistant" else ("input_text",)
        for index, part in enumerate(self.content if isinstance(self.content, list) else []):
            if part.type not in allowed:
                raise InvalidParam(
                    f"'{part.type}' parts are not allowed in {self.role} messages; use {' or '.join(allowed)}",
                    param=f"content[{index}].type",
                )
        return self


class FunctionCallItem(RequestModel):
    """A tool call the model made in an earlier turn (the client runs it)."""

    type: Literal["function_call"]
    call_id: str
    name: str
    arguments: str
    id: str | None = None
    status: ItemStatus | None = None
    namespace: str | None = None  # the `namespace` tool it belongs to (rendered as `{namespace}__{name}`)


class FunctionCallOutputItem(RequestModel):
    type: Literal["function_call_output"]
    call_id: str
    output: str | list[ToolOutputPart]
    id: str | None = None
    status: ItemStatus | None = None


class SummaryText(RequestModel):
    type: Literal["summary_text"]
    text: str


class ReasoningText(RequestModel):
    type: Literal["reasoning_text"]
    text: str


class ReasoningItem(RequestModel):
    """Reasoning from an earlier turn. Agents (Codex) send these back on every turn, so they are
    accepted, listed as input items, and their `content` is rendered as the next assistant turn's
    reasoning (see `handlers.responses.items`)."""

    type: Literal["reasoning"]
    id: str | None = None
    summary: list[SummaryText] = []
    content: list[ReasoningText] | None = None
    encrypted_content: str | None = None
    status: ItemStatus | None = None


class CompactionItem(RequestModel):
    """A conversation compacted by `POST /v1/responses/compact`: its summary, rendered as a user
    message (see `handlers.responses.compaction`). Only this server's own can be read: OpenAI's are
    encrypted with a key it does not have."""

    type: Literal["compaction"]
    encrypted_content: Annotated[str, Field(max_length=20_971_520)]
    id: str | None = None
    created_by: str | None = None

    @model_validator(mode="after")
    def _readable(self) -> CompactionItem:
        if compaction_summary(self.encrypted_content) is None:
            raise Unsupported("this compaction item was not made by this server (POST /v1/responses/compact "
                              "here): its content cannot be read", param="encrypted_content")
        return self


COMPACTION_PREFIX = "localoai-compaction-v1:"
"""What starts this server's `encrypted_content`: the summary follows, base64url-encoded. Not a
secret (the model is the caller's own); opaque to clients, as OpenAI's is."""


def compaction_content(summary: str) -> str:
    return COMPACTION_PREFIX + base64.urlsafe_b64encode(summary.encode()).decode("ascii")


def compaction_summary(content: str) -> str | None:
    """The summary in this server's `encrypted_content`; None for anything else."""
    if not content.startswith(COMPACTION_PREFIX):
        return None
    try:
        encoded = content[len(COMPACTION_PREFIX):].encode("ascii")
        return base64.b64decode(encoded, altchars=b"-_", validate=True).decode()
    except (ValueError, UnicodeError):  # binascii.Error is a ValueError
        return None


def _item_type(item: Any) -> str | None:
    kind = (item.get("type") if isinstance(item, Mapping) else getattr(item, "type", None)) or "message"
    return kind if isinstance(kind, str) else None  # an "easy" message may omit its type; a non-string is no tag


def check_item_types(items: Any, field: str) -> None:
    """Refuse unknown item types by index, and known ones this server cannot hold by name, before
    pydantic tries the union (Responses' `input`, Conversations' `items`)."""
    for index, item in enumerate(items if isinstance(items, list) else []):
        kind = _item_type(item) if isinstance(item, Mapping) else None
        if kind is None or kind in INPUT_ITEM_TYPES:
            continue  # not an object, or a wrong type: pydantic names it
        if kind == "item_reference":
            raise Unsupported("item references are not supported; send the item itself (or, in a response, use "
                              "previous_response_id)", param=f"{field}[{index}]")
        if kind in HOSTED_ITEM_TYPES:
            raise Unsupported(f"items of type '{kind}' are not supported: they belong to a hosted tool or a "
                              "feature this server does not provide", param=f"{field}[{index}].type")
        raise InvalidParam(f"unknown item type {kind!r} at index {index}", param=f"{field}[{index}].type")


def allow_listed_items(field: str) -> Any:
    """A model's `mode="before"` validator that runs `check_item_types` on its `field`."""

    def check(cls: type, data: Any) -> Any:
        if isinstance(data, Mapping):
            check_item_types(data.get(field), field)
        return data

    return model_validator(mode="before")(classmethod(check))  # type: ignore[arg-type]


InputItem = Annotated[
    Union[
        Annotated[MessageItem, Tag("message")],
        Annotated[FunctionCallItem, Tag("function_call")],
        Annotated[FunctionCallOutputItem, Tag("function_call_output")],
        Annotated[ReasoningItem, Tag("reasoning")],
        Annotated[CompactionItem, Tag("compaction")],
        Annotated[WebSearchCallItem, Tag("web_search_call")],
        Annotated[CustomToolCallItem, Tag("custom_tool_call")],
        Annotated[CustomToolCallOutputItem, Tag("custom_tool_call_output")],
        Annotated[LocalShellCallItem, Tag("local_shell_call")],
        Annotated[LocalShellCallOutputItem, Tag("local_shell_call_output")],
        Annotated[ShellCallItem, Tag("shell_call")],
        Annotated[ShellCallOutputItem, Tag("shell_call_output")],
        Annotated[ApplyPatchCallItem, Tag("apply_patch_call")],
        Annotated[ApplyPatchCallOutputItem, Tag("apply_patch_call_output")],
    ],
    Discriminator(_item_type),
]
INPUT_ITEM_TYPES = frozenset({"message", "function_call", "function_call_output", "reasoning", "web_search_call",
                              "compaction", *CLIENT_CALL_ITEMS})

# Item types of the OpenAI reference that belong to hosted tools (or to features not built yet).
HOSTED_ITEM_TYPES = frozenset({
    "file_search_call", "computer_call", "computer_call_output", "image_generation_call",
    "code_interpreter_call", "mcp_list_tools", "mcp_approval_request", "mcp_approval_response", "mcp_call",
    "tool_search_call", "tool_search_output", "additional_tools", "configuration_update",
    "compaction_trigger", "program", "program_output",
})
