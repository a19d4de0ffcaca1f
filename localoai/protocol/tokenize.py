"""`POST /tokenize` and `POST /detokenize`, as vLLM offers them."""

from __future__ import annotations

from typing import Any

from pydantic import StrictBool, model_validator

from localoai.protocol.base import InvalidParam, RequestModel, TokenId
from localoai.protocol.chat import FunctionTool, Message


class TokenizeRequest(RequestModel):
    model: str | None = None
    prompt: str | None = None
    messages: list[Message] | None = None
    tools: list[FunctionTool] | None = None
    add_special_tokens: StrictBool | None = None
    add_generation_prompt: StrictBool = True
    continue_final_message: StrictBool = False
    chat_template_kwargs: dict[str, Any] | None = None
    return_token_strs: StrictBool = False

    @model_validator(mode="after")
    def _one_input(self) -> TokenizeRequest:
        if (self.prompt is None) == (self.messages is None):
            raise InvalidParam("exactly one of 'prompt' and 'messages' must be given", param="prompt")
        return self


class DetokenizeRequest(RequestModel):
    model: str | None = None
    tokens: list[TokenId]
