"""`POST /inference/v1/generate` (vLLM's token-in, token-out endpoint).

Token ids and vLLM's sampling parameters in; each sample's token ids, their logprobs and its
finish reason out, with the prompt's logprobs when asked (`prompt_logprobs`, and the logprobs of
given candidate ids per position, `prompt_logprob_token_ids`): a trainer scores a trajectory under
the live policy with `max_tokens: 0`. The generation runs on the same engine, with the same sampler,
as chat and completions, so a prompt and seed give the same ids and logprobs here as there. Each
generation is recorded (kind `generate`); inside an episode it is one of its turns (no token ledger:
there is no conversation to re-render). The non-streamed answer is the fold of the streamed chunks.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from localoai.constraints.requests import constrain_generate
from localoai.engine.params import PromptLogprobs, SampleDelta, SamplingParams, TokenLogprob
from localoai.episodes.ledger import EpisodeTurn
from localoai.episodes.routing import EpisodeRef
from localoai.handlers.common import (Generation, new_id, prompt_ids, prompt_logprobs, sampling_params, scoring,
                                      token_budget)
from localoai.handlers.recording import record_generation, written
from localoai.protocol.generate import GenerateChoice, GenerateRequest, GenerateResponse
from localoai.served import ServedModel


@dataclass(frozen=True)
class PreparedGenerate:
    request: GenerateRequest
    prompt_text: str
    params: SamplingParams
    episode: EpisodeTurn | None = None


class TokenGeneration:
    def __init__(self, served: ServedModel) -> None:
        self.served = served

    def prepare(self, request: GenerateRequest, episode: EpisodeRef | None = None) -> PreparedGenerate:
        """Every check that can fail, before any generation starts."""
        served = self.served
        served.check_model(request.model)
        token_ids, text = prompt_ids(served, request.token_ids, param="token_ids")
        fields = request.sampling_params
        budget = token_budget(served, len(token_ids), fields.max_tokens, param="sampling_params.max_tokens")
        scored = scoring(served, token_ids, fields.prompt_logprobs, fields.prompt_logprob_token_ids,
                         param="sampling_params.prompt_logprob_token_ids")
        params = sampling_params(served, fields, max_tokens=budget, logprobs=fields.logprobs,
                                 prompt_logprobs=scored.prompt_logprobs,
                                 prompt_logprob_token_ids=scored.prompt_logprob_token_ids)
        params = constrain_generate(served, fields.structured_outputs, params,
                                    param="sampling_params.structured_outputs")
        return PreparedGenerate(request, text, params, served.episodes.turn(episode))

    async def create(self, prepared: PreparedGenerate) -> GenerateResponse:
        return accumulate([chunk async for chunk in self.chunks(prepared, include_usage=True, live=False)])

    async def chunks(self, prepared: PreparedGenerate, *, include_usage: bool,
                     live: bool = True) -> AsyncIterator[GenerateResponse]:
        """The answer as vLLM streams it: each step's token ids per sample, the prompt's logprobs
        first when asked, usage last (when asked); the generation is recorded as it ends."""
        served, request = self.served, prepared.request
        record_id = new_id("generate-tokens-")  # the store's id: unique even when a client repeats a request_id
        header: dict[str, Any] = {"id": record_id, "request_id": request.request_id or record_id,
                                  "created": int(time.time()), "model": served.name,
                                  "system_fingerprint": served.system_fingerprint}
        shows = request.sampling_params.logprobs is not None
        sent: list[GenerateResponse] = []
        generation: Generation | None = None
        recorded = False
        try:
            async with Generation.running(served, request.token_ids, prepared.params, live=live) as generation:
                async for item in generation:
                    if isinstance(item, PromptLogprobs):
                        sent.append(GenerateResponse(**header, choices=[],
                                                     prompt_logprobs=prompt_logprobs(
                                                         served, item, request.sampling_params.prompt_logprobs)))
                    else:
                        sent.append(GenerateResponse(**header, choices=[self._choice(delta, shows) for delta in item]))
                    yield sent[-1]
            completion = sum(len(sample.token_ids) for sample in generation.samples)
            prompt = len(request.token_ids)
            usage = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
            sent.append(GenerateResponse(**header, choices=[], usage=usage))
            if include_usage:
                yield sent[-1]
            recorded = True
            await written(self._record(prepared, header, generation, sent))
        finally:
            if not recorded:  # failed or cancelled: recorded as it stands, without waiting
                self._record(prepared, header, generation, sent)

    def _record(self, prepared: PreparedGenerate, header: dict[str, Any], generation: Generation | None,
                sent: list[GenerateResponse]) -> Any:
        return record_generation(
            self.served, record_id=header["id"], kind="generate", created=header["created"],
            request=prepared.request, prompt_text=prepared.prompt_text, prompt_token_ids=prepared.request.token_ids,
            generation=generation, output=accumulate(sent) if sent else None, episode=prepared.episode)

    @staticmethod
    def _choice(delta: SampleDelta, shows_logprobs: bool) -> GenerateChoice:
        logprobs = {"content": [_token_logprob(entry) for entry in delta.logprobs]} if shows_logprobs else None
        return GenerateChoice(index=delta.index, token_ids=delta.token_ids, logprobs=logprobs,
                              finish_reason=delta.finish_reason, stop_reason=delta.stop_reason)


def _token_logprob(entry: TokenLogprob) -> dict[str, Any]:
    """vLLM's token-in logprob entry: tokens named by id (`token_id:ID`), no text."""
    return {"token": f"token_id:{entry.token_id}", "logprob": entry.logprob,
            "top_logprobs": [{"token": f"token_id:{token}", "logprob": value} for token, value in entry.top]}


def accumulate(chunks: list[GenerateResponse]) -> GenerateResponse:
    """Fold streamed chunks into the non-streamed answer."""
    choices: dict[int, dict[str, Any]] = {}
    scored = usage = None
    for chunk in chunks:
        scored = chunk.prompt_logprobs if chunk.prompt_logprobs is not None else scored
        usage = chunk.usage or usage
        for choice in chunk.choices:
            entry = choices.setdefault(choice.index, {"index": choice.index, "token_ids": [], "logprobs": None,
                                                      "finish_reason": None, "stop_reason": None})
            entry["token_ids"] += choice.token_ids
            if choice.logprobs is not None:
                entry["logprobs"] = {"content": (entry["logprobs"] or {"content": []})["content"]
                                     + choice.logprobs["content"]}
            if choice.finish_reason is not None:
                entry["finish_reason"], entry["stop_reason"] = choice.finish_reason, choice.stop_reason
    header = chunks[0].model_dump(include={"id", "request_id", "created", "model", "system_fingerprint"})
    return GenerateResponse(**header, choices=[GenerateChoice(**choices[i]) for i in sorted(choices)],
                            usage=usage, prompt_logprobs=scored)
