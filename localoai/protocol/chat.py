"""`POST /v1/chat/completions` request body, in the order of the OpenAI reference.

Text is the only modality a local causal LM reads, so image, audio and file parts are
refused by name; so are values that need features this server does not provide. Structured
outputs (`response_format` json_object / json_schema, `tool_choice` required or a named function,
`strict` tools) are validated for shape here and turned into a grammar by `localoai.constraints`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import Field, StrictBool, StrictInt, model_serializer, model_validator

from localoai.protocol.base import Count, InvalidParam, RequestModel, Unsupported
from localoai.protocol.content import RefusalPart, RefusedPart
from localoai.protocol.sampling import SamplingFields


class TextPart(RequestModel):
    type: Literal["text"]
    text: str


class ImagePart(RefusedPart):
    type: Literal["image_url"]


class AudioPart(RefusedPart):
    type: Literal["input_audio"]


class FilePart(RefusedPart):
    type: Literal["file"]


UserPart = Annotated[Union[TextPart, ImagePart, AudioPart, FilePart], Field(discriminator="type")]
AssistantPart = Annotated[Union[TextPart, RefusalPart], Field(discriminator="type")]


class SystemMessage(RequestModel):
    role: Literal["system"]
    content: str | list[TextPart]
    name: str | None = None


class DeveloperMessage(RequestModel):
    role: Literal["developer"]
    content: str | list[TextPart]
    name: str | None = None


class UserMessage(RequestModel):
    role: Literal["user"]
    content: str | list[UserPart]
    name: str | None = None


class FunctionCall(RequestModel):
    name: str
    arguments: str


class ToolCall(RequestModel):
    id: str
    # The SDK's stream helpers (`chat.completions.stream(...).get_final_completion()`) accumulate
    # tool calls with the stream's `index` and without `type`; agents send those messages back as is.
    type: Literal["function"] = "function"
    function: FunctionCall
    index: Count | None = None


class AssistantMessage(RequestModel):
    role: Literal["assistant"]
    content: str | list[AssistantPart] | None = None
    refusal: str | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    audio: None = None
    function_call: None = None
    # Carried by reasoning models' clients (vLLM / DeepSeek convention); passed to the template.
    reasoning_content: str | None = None


class ToolMessage(RequestModel):
    role: Literal["tool"]
    content: str | list[TextPart]
    tool_call_id: str


class FunctionMessage(RequestModel):
    role: Literal["function"]
    model_config = {**RequestModel.model_config, "extra": "allow"}

    @model_validator(mode="before")
    @classmethod
    def _refuse(cls, data: Any) -> Any:
        raise Unsupported("the deprecated 'function' role is not supported; send 'tool' messages instead")


Message = Annotated[
    Union[SystemMessage, DeveloperMessage, UserMessage, AssistantMessage, ToolMessage, FunctionMessage],
    Field(discriminator="role"),
]


class FunctionDefinition(RequestModel):
    name: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-zA-Z0-9_-]+$")]
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: StrictBool | None = None


class FunctionTool(RequestModel):
    type: Literal["function"]
    function: FunctionDefinition


class FunctionName(RequestModel):
    name: str


class NamedToolChoice(RequestModel):
    type: Literal["function"]
    function: FunctionName


class ResponseFormatText(RequestModel):
    type: Literal["text"]


class ResponseFormatJsonObject(RequestModel):
    type: Literal["json_object"]


class JsonSchemaFormat(RequestModel):
    """A `json_schema` format's schema and its name (also the shape of Responses' `text.format`)."""

    name: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-zA-Z0-9_-]+$")]
    description: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")  # `schema` would shadow pydantic's
    strict: StrictBool | None = None

    @model_serializer(mode="wrap")
    def _by_alias(self, handler: Any) -> dict[str, Any]:
        data = handler(self)
        if "schema_" in data:
            data["schema"] = data.pop("schema_")
        return data


class ResponseFormatJsonSchema(RequestModel):
    type: Literal["json_schema"]
    json_schema: JsonSchemaFormat


ResponseFormat = Annotated[
    Union[ResponseFormatText, ResponseFormatJsonObject, ResponseFormatJsonSchema], Field(discriminator="type")
]


class ChatCompletionRequest(SamplingFields):
    messages: Annotated[list[Message], Field(min_length=1)]
    audio: dict[str, Any] | None = None
    function_call: Any = None
    functions: list[Any] | None = None
    logprobs: StrictBool | None = None
    max_completion_tokens: Annotated[Count, Field(ge=1)] | None = None
    max_tokens: Annotated[Count, Field(ge=1)] | None = None
    metadata: Annotated[dict[str, str], Field(max_length=16)] | None = None
    modalities: list[Literal["text", "audio"]] | None = None
    moderation: Any = None
    parallel_tool_calls: StrictBool | None = None
    prediction: Any = None
    prompt_cache_key: str | None = None
    prompt_cache_options: dict[str, Any] | None = None
    prompt_cache_retention: str | None = None
    # Mapped onto the chat template's thinking switch (`chat_template.effort_template_kwargs`).
    reasoning_effort: Literal["none", "minimal", "low", "medium", "high", "xhigh", "max"] | None = None
    response_format: ResponseFormat | None = None
    safety_identifier: str | None = None
    store: StrictBool | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | dict[str, Any] | None = None
    tools: list[FunctionTool] | None = None
    top_logprobs: Annotated[StrictInt, Field(ge=0, le=20)] | None = None
    verbosity: str | None = None
    web_search_options: dict[str, Any] | None = None

    # vLLM-style chat extras.
    chat_template_kwargs: dict[str, Any] | None = None
    add_generation_prompt: StrictBool = True
    continue_final_message: StrictBool = False

    @model_validator(mode="after")
    def _field_policy(self) -> ChatCompletionRequest:
        refusals = {
            "audio": (self.audio is not None, "audio output is not supported: this server serves a text-only model"),
            "modalities": (
                self.modalities is not None and self.modalities != ["text"],
                "only the 'text' modality is supported",
            ),
            "functions": (self.functions is not None, "the deprecated 'functions' field is not supported; use 'tools'"),
            "function_call": (
                self.function_call is not None,
                "the deprecated 'function_call' field is not supported; use 'tool_choice'",
            ),
            "prediction": (self.prediction is not None, "predicted outputs are not supported"),
            "moderation": (self.moderation is not None, "moderation is a hosted OpenAI feature and is not supported"),
            "web_search_options": (
                self.web_search_options is not None,
                "web search is a hosted OpenAI tool and is not available on a local model",
            ),
            "verbosity": (self.verbosity is not None, "verbosity is not supported by this server"),
        }
        for field, (refused, why) in refusals.items():
            if refused:
                raise Unsupported(why, param=field)
        if self.top_logprobs is not None and not self.logprobs:
            raise InvalidParam("top_logprobs requires logprobs to be true", param="top_logprobs")
        if self.continue_final_message and self.add_generation_prompt:
            raise InvalidParam(
                "continue_final_message and add_generation_prompt cannot both be true", param="continue_final_message"
            )
        return self

    @model_validator(mode="after")
    def _tool_choice_fits_tools(self) -> ChatCompletionRequest:
        if isinstance(self.tool_choice, dict):  # not a named function: `allowed_tools`, `custom`, ...
            kind = self.tool_choice.get("type")
            if kind == "function":
                raise InvalidParam("a named tool choice is {\"type\": \"function\", \"function\": {\"name\": ...}}",
                                   param="tool_choice")
            raise Unsupported(f"tool_choice of type {kind!r} is not supported; use 'none', 'auto', 'required' or "
                              "a named function", param="tool_choice")
        if self.tool_choice not in (None, "none", "auto"):
            names = [tool.function.name for tool in self.tools or []]
            if not names:
                raise InvalidParam("'tool_choice' is only allowed when 'tools' are specified", param="tool_choice")
            if isinstance(self.tool_choice, NamedToolChoice) and self.tool_choice.function.name not in names:
                raise InvalidParam(f"no function named {self.tool_choice.function.name!r} is in 'tools'",
                                   param="tool_choice")
        return self

    @property
    def max_new_tokens(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens
