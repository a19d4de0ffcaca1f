"""`POST /v1/completions` (legacy) request body."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, StrictBool, StrictInt, model_validator

from localoai.protocol.base import Count, InvalidParam, TokenId, Unsupported
from localoai.protocol.sampling import SamplingFields

TokenIds = Annotated[list[TokenId], Field(min_length=1)]
DEFAULT_MAX_TOKENS = 16  # OpenAI's default for the legacy endpoint


class CompletionRequest(SamplingFields):
    prompt: str | Annotated[list[str], Field(min_length=1)] | TokenIds | Annotated[list[TokenIds], Field(min_length=1)]
    best_of: Annotated[StrictInt, Field(ge=1, le=20)] | None = None
    echo: StrictBool | None = None
    logprobs: Annotated[StrictInt, Field(ge=0, le=5)] | None = None
    max_tokens: Count | None = DEFAULT_MAX_TOKENS
    suffix: str | None = None

    @model_validator(mode="after")
    def _field_policy(self) -> CompletionRequest:
        if self.suffix:
            raise Unsupported("insertion (suffix) is not supported by a causal language model", param="suffix")
        if self.best_of is not None and self.best_of < (self.n or 1):
            raise InvalidParam("best_of must be greater than or equal to n", param="best_of")
        if self.best_of is not None and self.best_of > 1 and self.stream:
            raise InvalidParam("best_of cannot be used with stream", param="best_of")
        return self

    @property
    def prompts(self) -> list[str] | list[list[int]]:
        """The prompt as a list of texts or a list of token-id lists."""
        return prompt_list(self.prompt)


def prompt_list(value: str | list[str] | list[int] | list[list[int]]) -> list[str] | list[list[int]]:
    """One prompt or several (texts or token ids) as a list of them."""
    if isinstance(value, str):
        return [value]
    if isinstance(value[0], int):
        return [list(value)]  # type: ignore[arg-type]
    return list(value)  # type: ignore[arg-type]
