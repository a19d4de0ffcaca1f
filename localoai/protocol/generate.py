"""`POST /inference/v1/generate` (vLLM's token-in, token-out endpoint): the request and response.

The shapes are vLLM's (`GenerateRequest`, its `SamplingParams`, `GenerateResponse`), so clients
written for vLLM work unchanged; the render endpoints answer with the same `GenerateRequest`. vLLM
fields that would change the result and have no local equivalent are refused naming them;
fields that change nothing here (text-only options: the answer carries token ids) are accepted.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, StrictBool, StrictInt, field_validator, model_validator

from localoai.protocol.base import InvalidParam, RequestModel, Unsupported
from localoai.protocol.sampling import (MAX_STOP_SEQUENCES, Number, StreamOptions, non_empty_stops, stop_tuple,
                                       token_id_keys)

MAX_PROMPT_LOGPROBS = 20


class StructuredOutputs(RequestModel):
    """vLLM's `StructuredOutputsParams`: exactly one of these."""

    json_: dict[str, Any] | str | None = Field(default=None, alias="json")
    json_object: StrictBool | None = None
    regex: str | None = None
    choice: Annotated[list[str], Field(min_length=1)] | None = None
    grammar: str | None = None
    """A grammar in llguidance's Lark dialect (what the render endpoints give for a constrained request)."""
    disable_fallback: StrictBool | None = None
    disable_any_whitespace: StrictBool | None = None
    disable_additional_properties: StrictBool | None = None
    whitespace_pattern: str | None = None
    structural_tag: str | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> StructuredOutputs:
        if self.whitespace_pattern is not None:
            raise Unsupported("JSON is written without free whitespace here", param="whitespace_pattern")
        if self.structural_tag is not None:
            raise Unsupported("structural tags are not supported", param="structural_tag")
        if self.disable_additional_properties:
            raise Unsupported("the schema is enforced as written", param="disable_additional_properties")
        given = [self.json_ is not None, bool(self.json_object), self.regex is not None, self.choice is not None,
                 self.grammar is not None]
        if sum(given) != 1:
            raise InvalidParam("exactly one of json, json_object, regex, choice and grammar must be given",
                               param="json")
        return self


class GenerateSamplingParams(RequestModel):
    """vLLM's `SamplingParams`, with its defaults."""

    n: Annotated[StrictInt, Field(ge=1, le=128)] = 1
    presence_penalty: Annotated[Number, Field(ge=-2.0, le=2.0)] = 0.0
    frequency_penalty: Annotated[Number, Field(ge=-2.0, le=2.0)] = 0.0
    repetition_penalty: Annotated[Number, Field(gt=0.0, le=10.0)] = 1.0
    temperature: Annotated[Number, Field(ge=0.0, le=2.0)] = 1.0
    top_p: Annotated[Number, Field(gt=0.0, le=1.0)] = 1.0
    top_k: Annotated[StrictInt, Field(ge=-1)] = 0
    min_p: Annotated[Number, Field(ge=0.0, le=1.0)] = 0.0
    seed: StrictInt | None = None
    stop: str | Annotated[list[str], Field(max_length=MAX_STOP_SEQUENCES)] | None = None
    stop_token_ids: list[StrictInt] | None = None
    ignore_eos: StrictBool = False
    max_tokens: Annotated[StrictInt, Field(ge=0)] | None = None
    """None: what is left of the context window (as vLLM's generate endpoint)."""
    min_tokens: Annotated[StrictInt, Field(ge=0)] = 0
    logprobs: Annotated[StrictInt, Field(ge=0, le=20)] | None = None
    prompt_logprobs: Annotated[StrictInt, Field(ge=0, le=MAX_PROMPT_LOGPROBS)] | None = None
    prompt_logprob_token_ids: list[list[StrictInt]] | None = None
    """Per prompt position, the token ids whose logprobs there are wanted as well (vLLM's name)."""
    logit_bias: dict[str, Annotated[Number, Field(ge=-100, le=100)]] | None = None
    structured_outputs: StructuredOutputs | None = None
    skip_special_tokens: StrictBool = True
    include_stop_str_in_output: StrictBool = False
    # Text-only options (the answer is token ids) and transport options: accepted, they change nothing.
    detokenize: StrictBool = True
    spaces_between_special_tokens: StrictBool = True
    output_kind: StrictInt | None = None
    flat_logprobs: StrictBool | None = None
    # Refused unless unset: no local equivalent.
    allowed_token_ids: list[StrictInt] | None = None
    bad_words: list[str] | None = None
    logits_processors: list[Any] | None = None
    truncate_prompt_tokens: StrictInt | None = None
    extra_args: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _field_policy(self) -> GenerateSamplingParams:
        for name in ("allowed_token_ids", "bad_words", "logits_processors", "truncate_prompt_tokens"):
            if getattr(self, name):
                raise Unsupported("not supported by this server", param=name)
        if self.extra_args:
            raise Unsupported("custom engine arguments are not supported", param="extra_args")
        return self

    @field_validator("logit_bias")
    @classmethod
    def _token_ids_as_keys(cls, bias: dict[str, float] | None) -> dict[str, float] | None:
        return token_id_keys(bias)

    @field_validator("stop")
    @classmethod
    def _no_empty_stop(cls, stop: str | list[str] | None) -> str | list[str] | None:
        return non_empty_stops(stop)

    @property
    def stop_sequences(self) -> tuple[str, ...]:
        return stop_tuple(self.stop)


class GenerateRequest(RequestModel):
    """vLLM's `GenerateRequest`: token ids in, with the sampling parameters."""

    request_id: str | None = None
    token_ids: Annotated[list[StrictInt], Field(min_length=1)]
    sampling_params: GenerateSamplingParams = GenerateSamplingParams()
    model: str | None = None
    stream: StrictBool | None = False
    stream_options: StreamOptions | None = None
    cache_salt: str | None = None
    priority: StrictInt = 0
    features: dict[str, Any] | None = None
    kv_transfer_params: dict[str, Any] | None = None
    prompt: str | None = None
    """The rendered text, as the render endpoints give it: informational, `token_ids` are what is read."""

    @model_validator(mode="after")
    def _field_policy(self) -> GenerateRequest:
        if self.priority != 0:
            raise Unsupported("requests are served in arrival order", param="priority")
        if self.features is not None:
            raise Unsupported("multimodal inputs are not supported by a text-only model", param="features")
        if self.kv_transfer_params is not None:
            raise Unsupported("disaggregated serving is not supported", param="kv_transfer_params")
        if self.stream_options is not None and not self.stream:
            raise InvalidParam("stream_options is only allowed when stream is true", param="stream_options")
        return self


class GenerateChoice(BaseModel):
    index: int
    logprobs: dict[str, Any] | None = None
    """`{"content": [{"token": "token_id:ID", "logprob", "top_logprobs": [...]}, ...]}` (vLLM's)."""
    finish_reason: Literal["stop", "length", "abort"] | None = None
    token_ids: list[int]
    stop_reason: int | str | None = None


class GenerateResponse(BaseModel):
    id: str
    """The generation's record id in the store."""
    request_id: str
    """The client's `request_id`, or `id` when it gave none."""
    created: int
    model: str
    system_fingerprint: str
    choices: list[GenerateChoice]
    usage: dict[str, int] | None = None
    prompt_logprobs: list[dict[str, dict[str, Any]] | None] | None = None
    """Per prompt token (the first has none): `{token_id: {"logprob", "rank", "decoded_token"}}`."""
    kv_transfer_params: None = None
