"""Sampling fields shared by chat completions and completions, with OpenAI's ranges.

The OpenAI fields come first, then the vLLM-style extras that RL clients send in
`extra_body` (top_k, min_p, repetition_penalty, return_token_ids, ...), declared
explicitly so that anything else is refused as an unknown field.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import Field, StrictBool, StrictInt, field_validator, model_validator

from localoai.protocol.base import MAX_COUNT, Count, Int64, InvalidParam, Number, RequestModel, ServiceTier, TokenId

MAX_STOP_SEQUENCES = 4
MIN_REPETITION_PENALTY = 0.01
_TOKEN_ID_KEY = re.compile(r"[0-9]{1,10}")


class StreamOptions(RequestModel):
    include_usage: StrictBool | None = None
    include_obfuscation: StrictBool | None = None  # obfuscation pads chunks; omitting it changes no content


class SamplingFields(RequestModel):
    model: str
    frequency_penalty: Annotated[Number, Field(ge=-2.0, le=2.0)] | None = None
    logit_bias: dict[str, Annotated[Number, Field(ge=-100, le=100)]] | None = None
    n: Annotated[StrictInt, Field(ge=1, le=128)] | None = None
    presence_penalty: Annotated[Number, Field(ge=-2.0, le=2.0)] | None = None
    seed: Int64 | None = None
    stop: str | Annotated[list[str], Field(max_length=MAX_STOP_SEQUENCES)] | None = None
    stream: StrictBool | None = None
    stream_options: StreamOptions | None = None
    temperature: Annotated[Number, Field(ge=0.0, le=2.0)] | None = None
    top_p: Annotated[Number, Field(ge=0.0, le=1.0)] | None = None
    user: str | None = None
    service_tier: ServiceTier | None = None

    # vLLM-style extras, sent by RL clients through `extra_body`.
    top_k: Annotated[StrictInt, Field(le=MAX_COUNT)] | None = None
    min_p: Annotated[Number, Field(ge=0.0, le=1.0)] | None = None
    # Below 0.01 the penalised logits overflow to infinity (NaN probabilities): refused, naming it.
    repetition_penalty: Annotated[Number, Field(ge=MIN_REPETITION_PENALTY, le=10.0)] | None = None
    min_tokens: Count | None = None
    stop_token_ids: list[TokenId] | None = None
    ignore_eos: StrictBool | None = None
    skip_special_tokens: StrictBool | None = None
    include_stop_str_in_output: StrictBool | None = None
    return_token_ids: StrictBool | None = None
    prompt_logprobs: Annotated[StrictInt, Field(ge=0, le=20)] | None = None
    prompt_logprob_token_ids: list[list[StrictInt]] | None = None
    """Per prompt token, token ids whose logprobs at that position are wanted too (scoring)."""

    @field_validator("logit_bias")
    @classmethod
    def _token_ids_as_keys(cls, bias: dict[str, float] | None) -> dict[str, float] | None:
        return token_id_keys(bias)

    @field_validator("top_k")
    @classmethod
    def _top_k_range(cls, top_k: int | None) -> int | None:
        if top_k is not None and top_k < -1:
            raise ValueError("must be -1 (disabled), 0 (disabled) or a positive integer")
        return top_k

    @field_validator("stop")
    @classmethod
    def _no_empty_stop(cls, stop: str | list[str] | None) -> str | list[str] | None:
        return non_empty_stops(stop)

    @model_validator(mode="after")
    def _stream_options_need_stream(self) -> SamplingFields:
        if self.stream_options is not None and not self.stream:
            raise InvalidParam("stream_options is only allowed when stream is true", param="stream_options")
        return self

    @property
    def stop_sequences(self) -> tuple[str, ...]:
        return stop_tuple(self.stop)


def token_id_keys(bias: dict[str, float] | None) -> dict[str, float] | None:
    """`logit_bias` validation: its keys must be token ids."""
    for key in bias or {}:
        if not _TOKEN_ID_KEY.fullmatch(key):  # not `isdigit`, which takes "²"
            raise ValueError(f"keys must be token ids, got {key!r}")
    return bias


def non_empty_stops(stop: str | list[str] | None) -> str | list[str] | None:
    for item in [stop] if isinstance(stop, str) else stop or []:
        if item == "":
            raise ValueError("stop sequences must not be empty")
    return stop


def stop_tuple(stop: str | list[str] | None) -> tuple[str, ...]:
    if stop is None:
        return ()
    return (stop,) if isinstance(stop, str) else tuple(stop)
