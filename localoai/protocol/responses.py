"""`POST /v1/responses` (and `/v1/responses/input_tokens`) request bodies, in the order of the
OpenAI reference, with the field policy.

Input items are allow-listed by `type` (a message may omit it): an unknown type is refused naming
its index, and a known one this server cannot use (hosted tool calls, `item_reference`) is refused
naming it, never silently dropped. Hosted tools (web search, image generation, ...) and `namespace`
tools are accepted as Codex sends them (see `hosted_tools`); `offered_tools` says what the model is
offered.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union

from pydantic import (
    Field,
    StrictBool,
    StrictInt,
    model_validator,
)

from localoai.errors import InvalidRequestError, UnsupportedFieldError
from localoai.protocol.base import Count, InvalidParam, Number, RequestModel, ServiceTier, Unsupported
from localoai.protocol.chat import JsonSchemaFormat
from localoai.protocol.client_tools import (
    CLIENT_TOOL_TYPES,
    ApplyPatchTool,
    CustomTool,
    LocalShellTool,
    ShellTool,
    check_shell_environment,
    offered_name,
)
from localoai.protocol.hosted_tools import (
    HOSTED_TOOLS,
    REFUSED_HOSTED_TOOLS,
    HostedTool,
    NamespaceTool,
    namespaced_name,
)
from localoai.protocol.response_items import InputItem, allow_listed_items, check_item_types
from localoai.protocol.stored import ListQuery, parse_list_query

# -- tools and text ------------------------------------------------------------------------


class FunctionTool(RequestModel):
    type: Literal["function"]
    name: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-zA-Z0-9_-]+$")]
    description: str | None = None
    parameters: dict[str, Any] | None = None
    # Responses default `strict` to true: omitted, the arguments are constrained to `parameters`
    # (see `localoai.constraints.requests`).
    strict: StrictBool | None = None


Tool = Annotated[
    Union[FunctionTool, CustomTool, LocalShellTool, ShellTool, ApplyPatchTool, NamespaceTool, HostedTool],
    Field(discriminator="type"),
]


class TextFormatText(RequestModel):
    type: Literal["text"]


class TextFormatJsonObject(RequestModel):
    type: Literal["json_object"]


class TextFormatJsonSchema(JsonSchemaFormat):
    type: Literal["json_schema"]
    schema_: dict[str, Any] = Field(alias="schema")  # required here, as in the SDK's Response (optional in chat)


TextFormat = Annotated[Union[TextFormatText, TextFormatJsonObject, TextFormatJsonSchema], Field(discriminator="type")]


class FunctionToolChoice(RequestModel):
    type: Literal["function"]
    name: str


class TextConfig(RequestModel):
    format: TextFormat | None = None
    # Accepted and echoed: OpenAI's models are trained on it; no chat template reads it, so it changes
    # nothing here (Codex sends it by default).
    verbosity: Literal["low", "medium", "high"] | None = None


class ReasoningConfig(RequestModel):
    """`effort` is mapped onto the chat template's thinking switch (`chat_template.effort_template_kwargs`).
    There is no summarizer: reasoning items carry the full reasoning as `content` and an empty
    `summary`, which is what "auto" may give; "concise" and "detailed" are refused."""

    effort: Literal["none", "minimal", "low", "medium", "high", "xhigh", "max"] | None = None
    summary: Literal["auto", "concise", "detailed"] | None = None
    generate_summary: Literal["auto", "concise", "detailed"] | None = None  # deprecated name of `summary`


class StreamOptions(RequestModel):
    include_obfuscation: StrictBool | None = None  # obfuscation pads events; omitting it changes no content


# `include` values honoured: reasoning items are never encrypted here (their reasoning is in plain
# `content`); the `encrypted_content` of reasoning input items is kept only when asked (as OpenAI does);
# `message.output_text.logprobs` adds token logprobs (`top_logprobs` alternatives) to output text.
HONOURED_INCLUDES = frozenset({"reasoning.encrypted_content", "message.output_text.logprobs"})
OUTPUT_LOGPROBS = "message.output_text.logprobs"
KNOWN_INCLUDES = frozenset({
    "file_search_call.results", "web_search_call.results", "web_search_call.action.sources",
    "message.input_image.image_url", "computer_call_output.output.image_url", "code_interpreter_call.outputs",
    "reasoning.encrypted_content", "message.output_text.logprobs",
})


def check_includes(include: list[str] | None, *, param: str = "include") -> None:
    for index, value in enumerate(include or []):
        if value in HONOURED_INCLUDES:
            continue
        if value in KNOWN_INCLUDES:
            why = f"'{value}' belongs to a hosted tool or an input modality this server does not provide"
        else:
            why = f"unknown include value '{value}'"
        raise Unsupported(why, param=f"{param}[{index}]")


# -- requests ------------------------------------------------------------------------------


class ConversationRef(RequestModel):
    id: str


class ResponseInputFields(RequestModel):
    """What decides the prompt: shared by create and `input_tokens` so both render the same."""

    model: str | None = None
    conversation: str | ConversationRef | None = None
    input: str | list[InputItem] = []
    instructions: str | None = None
    parallel_tool_calls: StrictBool | None = None
    previous_response_id: str | None = None
    reasoning: ReasoningConfig | None = None
    text: TextConfig | None = None
    tool_choice: Literal["none", "auto", "required"] | FunctionToolChoice | dict[str, Any] | None = None
    tools: list[Tool] | None = None
    truncation: Literal["auto", "disabled"] | None = None

    # vLLM-style extra (in `extra_body`): passed to the chat template, e.g. {"enable_thinking": false}.
    chat_template_kwargs: dict[str, Any] | None = None

    @property
    def conversation_id(self) -> str | None:
        return self.conversation.id if isinstance(self.conversation, ConversationRef) else self.conversation

    @model_validator(mode="before")
    @classmethod
    def _allow_listed(cls, data: Any) -> Any:
        """Refuse unknown input items and hosted tools by name, before pydantic tries the union."""
        if not isinstance(data, Mapping):
            return data
        check_item_types(data.get("input"), "input")
        tools = data.get("tools")
        for index, tool in enumerate(tools if isinstance(tools, list) else []):
            kind = tool.get("type") if isinstance(tool, Mapping) else None
            if not isinstance(kind, str):
                continue  # not an object, or a type that is no string: pydantic names it
            if kind == "shell":
                check_shell_environment(tool, param=f"tools[{index}].environment")
            if kind in REFUSED_HOSTED_TOOLS:
                raise Unsupported(f"'{kind}' is a hosted OpenAI tool that is not available here: "
                                  f"{REFUSED_HOSTED_TOOLS[kind]}", param=f"tools[{index}].type")
            if kind not in ("function", "namespace", *CLIENT_TOOL_TYPES, *HOSTED_TOOLS):
                raise Unsupported(f"tools of type {kind!r} are not supported", param=f"tools[{index}].type")
        return data

    @model_validator(mode="after")
    def _field_policy(self) -> ResponseInputFields:
        if self.conversation is not None and self.previous_response_id is not None:
            raise InvalidParam("conversation and previous_response_id cannot both be given", param="conversation")
        names: set[str] = set()
        for index, tool in enumerate(self.tools or []):
            if isinstance(tool, HostedTool):
                continue
            members = tool.tools if isinstance(tool, NamespaceTool) else [tool]
            for member in members:
                name = namespaced_name(tool.name, member.name) if isinstance(tool, NamespaceTool) \
                    else offered_name(member)
                if name in names:
                    raise InvalidParam(f"tool names must be unique: '{name}' is offered twice",
                                       param=f"tools[{index}]")
                names.add(name)
        refusals = {
            "reasoning.summary": (
                self.reasoning is not None and self.reasoning.summary in ("concise", "detailed"),
                "reasoning summaries are not generated here (there is no summarizer model); reasoning "
                "items carry the full reasoning as content; use 'auto' or omit it",
            ),
            "reasoning.generate_summary": (
                self.reasoning is not None and self.reasoning.generate_summary in ("concise", "detailed"),
                "reasoning summaries are not generated here (there is no summarizer model); use 'auto' or omit it",
            ),
        }
        for field, (refused, why) in refusals.items():
            if refused:
                raise Unsupported(why, param=field)
        return self

    @model_validator(mode="after")
    def _tool_choice_fits_tools(self) -> ResponseInputFields:
        if isinstance(self.tool_choice, dict):  # hosted tools, `allowed_tools`, `custom`, `mcp`, ...
            kind = self.tool_choice.get("type")
            if kind == "function":
                raise InvalidParam("a function tool choice is {\"type\": \"function\", \"name\": ...}",
                                   param="tool_choice")
            raise Unsupported(f"tool_choice of type {kind!r} is not supported; use 'none', 'auto', 'required' or "
                              "a function", param="tool_choice")
        if self.tool_choice not in (None, "none", "auto"):
            names = [namespaced_name(tool.name, member.name) if isinstance(tool, NamespaceTool)
                     else offered_name(member) for tool in self.tools or [] if not isinstance(tool, HostedTool)
                     for member in (tool.tools if isinstance(tool, NamespaceTool) else [tool])]
            if not names:
                raise InvalidParam("'tool_choice' is only allowed when 'tools' are specified", param="tool_choice")
            if isinstance(self.tool_choice, FunctionToolChoice) and self.tool_choice.name not in names:
                raise InvalidParam(f"no function named {self.tool_choice.name!r} is in 'tools'", param="tool_choice")
        return self


class CompactionEntry(RequestModel):
    """`context_management`'s one kind: compact the input first when its rendering reaches
    `compact_threshold` tokens (by default, when it leaves no room for `max_output_tokens`)."""

    type: Literal["compaction"]
    compact_threshold: Annotated[Count, Field(ge=1000)] | None = None


class ResponseCreateRequest(ResponseInputFields):
    model: str
    background: StrictBool | None = None
    context_management: Annotated[list[CompactionEntry], Field(min_length=1, max_length=1)] | None = None
    # Codex's turn metadata (ids, sandbox mode, ...): it changes nothing in the generation; recorded.
    client_metadata: dict[str, str] | None = None
    include: list[str] | None = None
    max_output_tokens: Annotated[Count, Field(ge=1)] | None = None
    max_tool_calls: Annotated[Count, Field(ge=1)] | None = None  # limits hosted tool calls: none here
    metadata: Annotated[dict[str, str], Field(max_length=16)] | None = None
    moderation: Any = None
    prompt: Any = None
    prompt_cache_key: str | None = None
    prompt_cache_options: dict[str, Any] | None = None
    prompt_cache_retention: str | None = None
    safety_identifier: str | None = None
    service_tier: ServiceTier | None = None
    store: StrictBool | None = None
    stream: StrictBool | None = None
    stream_options: StreamOptions | None = None
    temperature: Annotated[Number, Field(ge=0.0, le=2.0)] | None = None
    top_logprobs: Annotated[StrictInt, Field(ge=0, le=20)] | None = None
    top_p: Annotated[Number, Field(ge=0.0, le=1.0)] | None = None
    user: str | None = None

    @model_validator(mode="after")
    def _create_policy(self) -> ResponseCreateRequest:
        if self.background and self.store is False:
            raise InvalidParam("background responses must be stored: background=true requires store to be "
                               "true (or omitted)", param="background")
        if self.prompt is not None:
            raise Unsupported("prompt templates are stored on OpenAI's platform and are not available here",
                              param="prompt")
        if self.moderation is not None:
            raise Unsupported("moderation is a hosted OpenAI feature and is not supported", param="moderation")
        check_includes(self.include)
        if self.stream_options is not None and not self.stream:
            raise InvalidParam("stream_options is only allowed when stream is true", param="stream_options")
        return self


class InputTokensRequest(ResponseInputFields):
    """`POST /v1/responses/input_tokens`: the same input fields; `model` is optional."""

    personality: str | None = None

    @model_validator(mode="after")
    def _no_personality(self) -> InputTokensRequest:
        if self.personality is not None:
            raise Unsupported("personality presets are not supported by this server", param="personality")
        return self


class CompactRequest(RequestModel):
    """`POST /v1/responses/compact`: the conversation to compact (`input` after what
    `previous_response_id` chains), as Responses render it (see `handlers.responses.compaction`)."""

    model: str
    input: str | list[InputItem] | None = None
    instructions: str | None = None
    previous_response_id: str | None = None
    # Caching and routing hints of OpenAI's platform; image options (no image input is accepted here).
    image: dict[str, Any] | None = None
    prompt_cache_key: str | None = None
    prompt_cache_options: dict[str, Any] | None = None
    prompt_cache_retention: str | None = None
    safety_identifier: str | None = None
    service_tier: ServiceTier | None = None
    # Extras (in `extra_body`): template arguments as on create; the summary's token budget (by
    # default, the rest of the context window) and sampling (by default, as create's).
    chat_template_kwargs: dict[str, Any] | None = None
    max_output_tokens: Annotated[Count, Field(ge=1)] | None = None
    temperature: Annotated[Number, Field(ge=0.0, le=2.0)] | None = None
    top_p: Annotated[Number, Field(ge=0.0, le=1.0)] | None = None

    _allow_listed = allow_listed_items("input")

    def input_fields(self) -> ResponseInputFields:
        """The fields that decide the conversation, as a Responses request holds them."""
        return ResponseInputFields(model=self.model, input=self.input or [], instructions=self.instructions,
                                   previous_response_id=self.previous_response_id,
                                   chat_template_kwargs=self.chat_template_kwargs)


# -- query strings -------------------------------------------------------------------------

INPUT_ITEMS_FIELDS = frozenset({"after", "limit", "order"})


def parse_include(args: Any) -> list[str]:
    """`include` as the SDK sends it in a query string (`include[]=a&include[]=b`), checked."""
    values = [*args.getlist("include[]"), *args.getlist("include")]
    try:
        check_includes(values)
    except Unsupported as exc:
        raise UnsupportedFieldError(f"Unsupported value for '{exc.param}': {exc}", param=exc.param) from None
    return values


def parse_input_items_query(args: Any) -> tuple[ListQuery, list[str]]:
    """`after` / `limit` / `order` (newest first by default, as OpenAI) and `include`."""
    include = parse_include(args)
    rest = {key: value for key, value in args.items() if key not in ("include", "include[]")}
    query = parse_list_query(rest, allowed=INPUT_ITEMS_FIELDS)
    if "order" not in rest:
        query = query.model_copy(update={"order": "desc"})
    return query, include


@dataclass(frozen=True)
class RetrieveQuery:
    include: list[str]
    stream: bool = False
    starting_after: int | None = None
    """With `stream`: only the events after this sequence number."""


def parse_retrieve_query(args: Any) -> RetrieveQuery:
    include = parse_include(args)
    stream, starting_after = False, None
    for key, value in args.items():
        if key in ("include", "include[]", "include_obfuscation"):
            continue
        if key == "stream":
            if value.lower() not in ("true", "false", "1", "0"):
                raise InvalidRequestError(f"Invalid value for 'stream': {value!r} is not a boolean", param="stream")
            stream = value.lower() in ("true", "1")
        elif key == "starting_after":
            if not value.isdigit():
                raise InvalidRequestError(f"Invalid value for 'starting_after': {value!r} is not a sequence number",
                                          param="starting_after")
            starting_after = int(value)
        else:
            raise InvalidRequestError(f"Unrecognized query parameter: {key}", param=key,
                                      code="unrecognized_argument")
    if starting_after is not None and not stream:
        raise InvalidRequestError("starting_after is only allowed when stream is true", param="starting_after")
    return RetrieveQuery(include, stream, starting_after)

