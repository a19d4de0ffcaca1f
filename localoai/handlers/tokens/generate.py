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
from localoai.handlers.common import (new_id, prompt_ids, prompt_logprobs, sampling_params, scoring,
                                      token_budget)
from localoai.handlers.recording import RecordFields
from localoai.handlers.run import GenerationRun, folded
from localoai.protocol.generate import GenerateChoice, GenerateRequest, GenerateResponse
from localoai.served import LoadedModel, Services


@dataclass(frozen=True)
class PreparedGenerate:
    request: GenerateRequest
    prompt_text: str
    params: SamplingParams
    episode: EpisodeTurn | None = None


class TokenGeneration:
    def __init__(self, model: LoadedModel, services: Services) -> None:
        self.model, self.services = model, services

    def prepare(self, request: GenerateRequest, episode: EpisodeRef | None = None) -> PreparedGenerate:
        """Every check that can fail, before any generation starts."""
        model, services = self.model, self.services
        model.check_model(request.model)
        token_ids, text = prompt_ids(model, request.token_ids, param="token_ids")
        fields = request.sampling_params
        budget = token_budget(model, len(token_ids), fields.max_tokens, param="sampling_params.max_tokens")
        scored = scoring(model, token_ids, fields.prompt_logprobs, fields.prompt_logprob_token_ids,
                         param="sampling_params.prompt_logprob_token_ids")
        params = sampling_params(model, fields, max_tokens=budget, logprobs=fields.logprobs,
                                 prompt_logprobs=scored.prompt_logprobs,
                                 prompt_logprob_token_ids=scored.prompt_logprob_token_ids)
        params = constrain_generate(model, fields.structured_outputs, params,
                                    param="sampling_params.structured_outputs")
        return PreparedGenerate(request, text, params, services.episodes.turn(episode))

    async def create(self, prepared: PreparedGenerate) -> GenerateResponse:
        fold = GenerateFold()
        return await folded(self._chunks(prepared, fold, include_usage=True, live=False), fold)

    def chunks(self, prepared: PreparedGenerate, *, include_usage: bool) -> AsyncIterator[GenerateResponse]:
        """The answer as vLLM streams it: each step's token ids per sample, the prompt's logprobs
        first when asked, usage last (when asked); the generation is recorded as it ends."""
        return self._chunks(prepared, GenerateFold(), include_usage=include_usage, live=True)

    async def _chunks(self, prepared: PreparedGenerate, fold: GenerateFold, *, include_usage: bool,
                      live: bool) -> AsyncIterator[GenerateResponse]:
        """The chunks, each folded into `fold` (the record's output, and the non-streamed answer)."""
        model, services, request = self.model, self.services, prepared.request
        record_id = new_id("generate-tokens-")  # the store's id: unique even when a client repeats a request_id
        header: dict[str, Any] = {"id": record_id, "request_id": request.request_id or record_id,
                                  "created": int(time.time()), "model": model.name,
                                  "system_fingerprint": model.fingerprint(services.policy_version)}
        shows = request.sampling_params.logprobs is not None
        record = RecordFields(model=model.name, record_id=record_id, kind="generate", created=header["created"], request=request,
                              prompt_text=prepared.prompt_text, prompt_token_ids=request.token_ids,
                              episode=prepared.episode)
        async with GenerationRun(services, record, lambda: None if fold.empty else fold.result()) as run:
            async with run.generate(request.token_ids, prepared.params, live=live, steps=False) as generation:
                async for item in generation:
                    if isinstance(item, PromptLogprobs):
                        yield fold.add(GenerateResponse(**header, choices=[], prompt_logprobs=prompt_logprobs(
                            model, item, request.sampling_params.prompt_logprobs)))
                    else:
                        yield fold.add(GenerateResponse(**header, choices=[self._choice(delta, shows)
                                                                           for delta in item]))
            usage = {"prompt_tokens": run.counts.prompt, "completion_tokens": run.counts.output,
                     "total_tokens": run.counts.prompt + run.counts.output}
            last = fold.add(GenerateResponse(**header, choices=[], usage=usage))
            if include_usage:
                yield last
            await run.finish(fold.result())

    @staticmethod
    def _choice(delta: SampleDelta, shows_logprobs: bool) -> GenerateChoice:
        logprobs = {"content": [_token_logprob(entry) for entry in delta.logprobs]} if shows_logprobs else None
        return GenerateChoice(index=delta.index, token_ids=delta.token_ids, logprobs=logprobs,
                              finish_reason=delta.finish_reason, stop_reason=delta.stop_reason)


def _token_logprob(entry: TokenLogprob) -> dict[str, Any]:
    """vLLM's token-in logprob entry: tokens named by id (`token_id:ID`), no text."""
    return {"token": f"token_id:{entry.token_id}", "logprob": entry.logprob,
            "top_logprobs": [{"token": f"token_id:{token}", "logprob": value} for token, value in entry.top]}


class GenerateFold:
    """Streamed chunks folded, as they go by, into the non-streamed answer (see `run.Fold`)."""

    def __init__(self) -> None:
        self._header: dict[str, Any] | None = None
        self._choices: dict[int, dict[str, Any]] = {}
        self._scored: list[dict[str, Any] | None] | None = None
        self._usage: Any = None

    @property
    def empty(self) -> bool:
        return self._header is None

    def add(self, chunk: GenerateResponse) -> GenerateResponse:
        if self._header is None:
            self._header = chunk.model_dump(include={"id", "request_id", "created", "model", "system_fingerprint"})
        self._scored = chunk.prompt_logprobs if chunk.prompt_logprobs is not None else self._scored
        self._usage = chunk.usage or self._usage
        for choice in chunk.choices:
            entry = self._choices.setdefault(choice.index, {"index": choice.index, "token_ids": [], "logprobs": None,
                                                            "finish_reason": None, "stop_reason": None})
            entry["token_ids"] += choice.token_ids
            if choice.logprobs is not None:
                entry["logprobs"] = {"content": (entry["logprobs"] or {"content": []})["content"]
                                     + choice.logprobs["content"]}
            if choice.finish_reason is not None:
                entry["finish_reason"], entry["stop_reason"] = choice.finish_reason, choice.stop_reason
        return chunk

    def result(self) -> GenerateResponse:
        assert self._header is not None, "nothing folded yet"
        return GenerateResponse(**self._header, choices=[GenerateChoice(**self._choices[i]) for i in sorted(self._choices)],
                                usage=self._usage, prompt_logprobs=self._scored)
