"""`POST /v1/embeddings` request body, with OpenAI's limits."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, StrictInt, field_validator

from localoai.protocol.base import RequestModel
from localoai.protocol.completions import TokenIds, prompt_list

MAX_INPUTS = 2048  # OpenAI's limit on the number of inputs in one request


class EmbeddingRequest(RequestModel):
    input: (str | Annotated[list[str], Field(min_length=1, max_length=MAX_INPUTS)] | TokenIds
            | Annotated[list[TokenIds], Field(min_length=1, max_length=MAX_INPUTS)])
    model: str
    dimensions: Annotated[StrictInt, Field(ge=1)] | None = None
    encoding_format: Literal["float", "base64"] | None = None
    user: str | None = None

    @field_validator("input")
    @classmethod
    def _no_empty_text(cls, value: str | list[str] | list[int] | list[list[int]]) -> object:
        for item in [value] if isinstance(value, str) else value:
            if item == "":
                raise ValueError("input strings must not be empty")
        return value

    @property
    def inputs(self) -> list[str] | list[list[int]]:
        """The input as a list of texts or a list of token-id lists."""
        return prompt_list(self.input)
