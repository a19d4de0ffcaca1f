"""`POST /v1/messages` (Anthropic's Messages API) request body, in the order of Anthropic's reference.

Text, tool use, tool results and thinking are what a local causal LM can read; `image`, `document`
and the server-side tool blocks are refused by name. Fields Claude Code sends that change nothing
here (`metadata`, `cache_control`, `output_config.effort` on a template without an effort switch,
`service_tier`) are accepted; `context_management` is honoured when it keeps all thinking (what
Claude Code asks) and refused otherwise, since clearing thinking would change the prompt.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import Field, StrictBool, StrictFloat, StrictInt, model_validator

from localoai.protocol.base import InvalidParam, RequestModel, Unsupported
from localoai.protocol.content import RefusedPart

Number = StrictFloat | StrictInt


class CacheControl(RequestModel):
    """Prompt caching hints: they change nothing here (the engine's prefix cache reuses any shared prefix by itself)."""

    type: Literal["ephemeral"]
    ttl: str | None = None


class TextBlock(RequestModel):
    type: Literal["text"]
    text: str
    cache_control: CacheControl | None = None
    citations: list[dict[str, Any]] | None = None


class ToolUseBlock(RequestModel):
    type: Literal["tool_use"]
    id: str
    name: str
    input: dict[str, Any]
    cache_control: CacheControl | None = None
    caller: dict[str, Any] | None = None


class ToolResultBlock(RequestModel):
    type: Literal["tool_result"]
    tool_use_id: str
    content: str | list[TextBlock] | None = None
    is_error: StrictBool | None = None
    cache_control: CacheControl | None = None


class ThinkingBlock(RequestModel):
    type: Literal["thinking"]
    thinking: str
    signature: str


class RedactedThinkingBlock(RequestModel):
    type: Literal["redacted_thinking"]
    data: str


class ImageBlock(RefusedPart):
    type: Literal["image"]


class DocumentBlock(RefusedPart):
    type: Literal["document"]


class SearchResultBlock(RefusedPart):
    type: Literal["search_result"]


ContentBlock = Annotated[
    Union[TextBlock, ToolUseBlock, ToolResultBlock, ThinkingBlock, RedactedThinkingBlock, ImageBlock,
          DocumentBlock, SearchResultBlock],
    Field(discriminator="type"),
]


class MessageParam(RequestModel):
    # `system` inside `messages` is what Claude Code sends for mid-conversation instructions; it is
    # folded into the prompt as the template renders a later system message.
    role: Literal["user", "assistant", "system"]
    content: str | list[ContentBlock]
    # Claude Code's per-turn effort (beta `per-turn-control`): the request's thinking switch is one per
    # prompt, so this changes nothing a template renders.
    output_config: OutputConfig | None = None


class Tool(RequestModel):
    @model_validator(mode="before")
    @classmethod
    def _no_server_tools(cls, data: Any) -> Any:
        kind = data.get("type") if isinstance(data, dict) else None
        if kind not in (None, "custom"):
            raise Unsupported(f"tools of type {kind!r} are run by Anthropic's servers; only client tools "
                              "(name, description, input_schema) can be offered here")
        return data

    name: Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[a-zA-Z0-9_-]+$")]
    description: str | None = None
    input_schema: dict[str, Any]
    type: Literal["custom"] | None = None
    cache_control: CacheControl | None = None
    strict: StrictBool | None = None
    # A deferred tool (Claude Code's `ToolSearch`) is not shown to the model, as on Anthropic's API.
    defer_loading: StrictBool | None = None
    eager_input_streaming: StrictBool | None = None
    input_examples: list[dict[str, Any]] | None = None
    allowed_callers: list[str] | None = None


class ToolChoiceAuto(RequestModel):
    type: Literal["auto"]
    disable_parallel_tool_use: StrictBool | None = None


class ToolChoiceAny(RequestModel):
    type: Literal["any"]
    disable_parallel_tool_use: StrictBool | None = None


class ToolChoiceTool(RequestModel):
    type: Literal["tool"]
    name: str
    disable_parallel_tool_use: StrictBool | None = None


class ToolChoiceNone(RequestModel):
    type: Literal["none"]


ToolChoice = Annotated[Union[ToolChoiceAuto, ToolChoiceAny, ToolChoiceTool, ToolChoiceNone],
                       Field(discriminator="type")]


class ThinkingEnabled(RequestModel):
    type: Literal["enabled"]
    budget_tokens: Annotated[StrictInt, Field(ge=1)]
    display: Literal["summarized", "omitted"] | None = None


class ThinkingAdaptive(RequestModel):
    type: Literal["adaptive"]
    display: Literal["summarized", "omitted"] | None = None


class ThinkingDisabled(RequestModel):
    type: Literal["disabled"]


ThinkingConfig = Annotated[Union[ThinkingEnabled, ThinkingAdaptive, ThinkingDisabled], Field(discriminator="type")]


class Metadata(RequestModel):
    user_id: str | None = None


class OutputConfig(RequestModel):
    effort: Literal["low", "medium", "high", "xhigh", "max"] | None = None
    format: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _no_format(self) -> OutputConfig:
        if self.format is not None:
            raise Unsupported("structured output formats are not supported on /v1/messages; use tools",
                              param="format")
        return self


class ContextEdit(RequestModel):
    model_config = {**RequestModel.model_config, "extra": "allow"}
    type: str
    keep: Any = None


class ContextManagement(RequestModel):
    edits: list[ContextEdit] | None = None

    @model_validator(mode="after")
    def _only_keeping_edits(self) -> ContextManagement:
        # Keeping all thinking is what happens anyway; any other edit would change the prompt.
        for edit in self.edits or []:
            if not (edit.type.startswith("clear_thinking_") and edit.keep == "all"):
                raise Unsupported(f"context edit {edit.type!r} (keep={edit.keep!r}) is not supported: only "
                                  "clear_thinking with keep 'all' (which clears nothing) is", param="edits")
        return self


class MessageCreateRequest(RequestModel):
    model: str
    max_tokens: Annotated[StrictInt, Field(ge=1)]
    messages: list[MessageParam]
    cache_control: CacheControl | None = None
    container: Any = None
    context_management: ContextManagement | None = None
    diagnostics: dict[str, Any] | None = None  # debugging aids of Anthropic's servers: change no output
    inference_geo: str | None = None
    mcp_servers: list[Any] | None = None
    metadata: Metadata | None = None
    output_config: OutputConfig | None = None
    service_tier: Literal["auto", "standard_only"] | None = None
    speed: Literal["standard", "fast"] | None = None  # latency, not content
    stop_sequences: list[str] | None = None
    stream: StrictBool | None = None
    system: str | list[TextBlock] | None = None
    temperature: Annotated[Number, Field(ge=0.0, le=1.0)] | None = None
    thinking: ThinkingConfig | None = None
    tool_choice: ToolChoice | None = None
    tools: list[Tool] | None = None
    top_k: Annotated[StrictInt, Field(ge=0)] | None = None
    top_p: Annotated[Number, Field(ge=0.0, le=1.0)] | None = None
    user_profile_id: str | None = None
    workspace_id: str | None = None

    @model_validator(mode="after")
    def _field_policy(self) -> MessageCreateRequest:
        if self.container is not None:
            raise Unsupported("containers are a hosted Anthropic feature", param="container")
        if self.mcp_servers:
            raise Unsupported("MCP servers are called by Anthropic's servers; this server cannot", param="mcp_servers")
        for item in self.stop_sequences or []:
            if item == "":
                raise InvalidParam("stop sequences must not be empty", param="stop_sequences")
        names = [tool.name for tool in self.tools or []]
        choice = self.tool_choice
        if isinstance(choice, (ToolChoiceAny, ToolChoiceTool)) and not names:
            raise InvalidParam("'tool_choice' requires 'tools'", param="tool_choice")
        if isinstance(choice, ToolChoiceTool) and choice.name not in names:
            raise InvalidParam(f"no tool named {choice.name!r} is in 'tools'", param="tool_choice")
        return self


class CountTokensRequest(RequestModel):
    """`POST /v1/messages/count_tokens`: the fields of a create that shape the prompt."""

    model: str
    messages: list[MessageParam]
    context_management: ContextManagement | None = None
    mcp_servers: list[Any] | None = None
    output_config: OutputConfig | None = None
    system: str | list[TextBlock] | None = None
    thinking: ThinkingConfig | None = None
    tool_choice: ToolChoice | None = None
    tools: list[Tool] | None = None

    def as_create(self) -> MessageCreateRequest:
        return MessageCreateRequest.model_validate({**self.model_dump(exclude_unset=True), "max_tokens": 1})
