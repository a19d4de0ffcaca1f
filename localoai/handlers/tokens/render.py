"""The render endpoints (vLLM's): what a chat completions, completions or Responses request would be
given, with nothing generated.

Each request goes through its own handler's `prepare`, the very code that prepares a generating
request (chat template, tools, `chat_template_kwargs`, reasoning effort, the episode's token ledger,
structured outputs), and comes back as vLLM's `GenerateRequest`: the prompt's token ids, vLLM's
`sampling_params` (a constraint as its Lark `grammar`), and the rendered text as `prompt`. Posted to
`/inference/v1/generate` as it is, it generates what the original request would.
"""

from __future__ import annotations

from typing import Any

from localoai.engine.params import SamplingParams
from localoai.handlers.common import new_id
from localoai.protocol.generate import GenerateRequest
from localoai.protocol.sampling import StreamOptions


def generate_request(prefix: str, model: str | None, token_ids: list[int], text: str, params: SamplingParams,
                     stream: bool | None = None, stream_options: StreamOptions | None = None) -> dict[str, Any]:
    """vLLM's `GenerateRequest` for a prepared request, validated as `/inference/v1/generate` reads it."""
    constraint = getattr(params.constraint, "grammar", None)
    body = {
        "request_id": new_id(prefix),
        "token_ids": token_ids,
        "sampling_params": {
            "n": params.n, "presence_penalty": params.presence_penalty,
            "frequency_penalty": params.frequency_penalty, "repetition_penalty": params.repetition_penalty,
            "temperature": params.temperature, "top_p": params.top_p, "top_k": params.top_k, "min_p": params.min_p,
            "seed": params.seed, "stop": list(params.stop), "stop_token_ids": list(params.stop_token_ids),
            "ignore_eos": params.ignore_eos, "max_tokens": params.max_tokens, "min_tokens": params.min_tokens,
            "logprobs": params.logprobs, "prompt_logprobs": params.prompt_logprobs,
            "logit_bias": {str(token): bias for token, bias in params.logit_bias} or None,
            "structured_outputs": {"grammar": constraint} if constraint is not None else None,
            "skip_special_tokens": params.skip_special_tokens,
            "include_stop_str_in_output": params.include_stop_str_in_output,
        },
        "model": model,
        "stream": bool(stream),
        "stream_options": stream_options.model_dump(exclude_none=True) if stream and stream_options else None,
        "prompt": text,
    }
    return GenerateRequest.model_validate(body, strict=False).model_dump(mode="json", by_alias=True)
