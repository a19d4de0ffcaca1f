"""`/tokenize` and `/detokenize` (vLLM's shapes): the exact ids a prompt or conversation becomes."""

from __future__ import annotations

from typing import Any

from localoai.chat_template import render_chat
from localoai.handlers.common import check_token_ids
from localoai.protocol.tokenize import DetokenizeRequest, TokenizeRequest
from localoai.served import LoadedModel


def tokenize(model: LoadedModel, request: TokenizeRequest) -> dict[str, Any]:
    """Blocking: the route runs it with `Services.off_loop`."""
    model.check_model(request.model)
    if request.messages is not None:
        rendered = render_chat(
            model.tokenizer,
            request.messages,
            tools=request.tools,
            add_generation_prompt=request.add_generation_prompt,
            continue_final_message=request.continue_final_message,
            template_kwargs=request.chat_template_kwargs,
            policy=model.template_policy,
        )
        token_ids = rendered.token_ids
        if request.add_special_tokens:
            token_ids = model.tokenizer.build_inputs_with_special_tokens(token_ids)
    else:
        token_ids = model.encode(request.prompt or "", add_special_tokens=request.add_special_tokens is not False)
    result: dict[str, Any] = {"count": len(token_ids), "max_model_len": model.context_length, "tokens": token_ids}
    if request.return_token_strs:
        result["token_strs"] = model.tokenizer.convert_ids_to_tokens(token_ids)
    return result


def detokenize(model: LoadedModel, request: DetokenizeRequest) -> dict[str, Any]:
    model.check_model(request.model)
    check_token_ids(model, request.tokens, param="tokens")
    return {"prompt": model.decode(request.tokens, skip_special_tokens=False)}
