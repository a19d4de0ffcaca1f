"""Legacy completions: one or more prompts (text or token ids), `n`, `best_of`, `echo`, logprobs.

As for chat, the non-streamed response is the accumulation of the streamed one.
With `echo`, each sample's first chunk carries the prompt (and its logprobs, which the
engine publishes right after prefill). `best_of > n` decodes `best_of` samples and keeps
the `n` with the highest total logprob (non-streamed only, as OpenAI requires).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from openai.types import Completion, CompletionChoice, CompletionUsage
from openai.types.completion_choice import Logprobs

from localoai.engine.params import PromptLogprobs, SampleDelta, SamplingParams, TokenLogprob
from localoai.errors import InvalidRequestError
from localoai.handlers.common import generation, new_id, sampling_params, token_budget
from localoai.protocol.completions import CompletionRequest
from localoai.served import ServedModel


@dataclass(frozen=True)
class PreparedPrompt:
    text: str
    token_ids: list[int]
    params: SamplingParams


@dataclass(frozen=True)
class PreparedCompletion:
    request: CompletionRequest
    prompts: list[PreparedPrompt]


class Completions:
    def __init__(self, served: ServedModel) -> None:
        self.served = served

    def prepare(self, request: CompletionRequest) -> PreparedCompletion:
        served = self.served
        served.check_model(request.model)
        n = request.n or 1
        decoded = max(n, request.best_of or n)
        # Ranking best_of samples needs their logprobs even when the caller did not ask for them.
        logprobs = request.logprobs if request.logprobs is not None else (0 if decoded > n else None)
        prompts = []
        for prompt in request.prompts:
            if isinstance(prompt, str):
                token_ids, text = served.encode(prompt), prompt
            else:
                token_ids = list(prompt)
                if any(not 0 <= token < served.vocab_size for token in token_ids):
                    raise InvalidRequestError(
                        f"Invalid value for 'prompt': token ids must be in [0, {served.vocab_size}).", param="prompt"
                    )
                text = served.decode(token_ids, skip_special_tokens=False)
            if not token_ids:
                raise InvalidRequestError("Invalid value for 'prompt': the prompt is empty.", param="prompt")
            budget = token_budget(served, len(token_ids), request.max_tokens, param="max_tokens")
            params = sampling_params(
                served,
                request,
                max_tokens=budget,
                n=decoded,
                logprobs=logprobs,
                prompt_logprobs=request.logprobs if request.echo and request.logprobs is not None else None,
            )
            prompts.append(PreparedPrompt(text=text, token_ids=token_ids, params=params))
        return PreparedCompletion(request, prompts)

    async def create(self, prepared: PreparedCompletion) -> Completion:
        completion = accumulate_completion([c async for c in self.chunks(prepared, include_usage=True)])
        n, decoded = prepared.request.n or 1, prepared.prompts[0].params.n
        if decoded > n:
            completion = _keep_best(completion, n, decoded, keep_logprobs=prepared.request.logprobs is not None)
        return completion

    async def chunks(self, prepared: PreparedCompletion, *, include_usage: bool) -> AsyncIterator[Completion]:
        request, served = prepared.request, self.served
        header: dict[str, Any] = {
            "id": new_id("cmpl-"),
            "object": "text_completion",
            "created": int(time.time()),
            "model": served.name,
            "system_fingerprint": served.system_fingerprint,
        }
        if include_usage:
            header["usage"] = None
        prompt_tokens = completion_tokens = 0
        for prompt_number, prompt in enumerate(prepared.prompts):
            samples = prompt.params.n
            prompt_tokens += len(prompt.token_ids)
            offsets = [0] * samples  # characters already sent per sample, for text_offset
            echo_pending = bool(request.echo)
            async with generation(served, prompt.token_ids, prompt.params) as outputs:
                async for item in outputs:
                    if isinstance(item, PromptLogprobs) or (echo_pending and isinstance(item, list)):
                        entries = item.entries if isinstance(item, PromptLogprobs) else None
                        echoed = [self._echo_choice(prompt_number * samples + i, prompt, entries, request)
                                  for i in range(samples)]
                        for i, choice in enumerate(echoed):
                            offsets[i] = len(choice.text)
                        echo_pending = False
                        yield Completion(**header, choices=echoed)
                    if not isinstance(item, list):
                        continue
                    choices = []
                    for delta in item:
                        completion_tokens += len(delta.token_ids)
                        choices.append(self._choice(prompt_number * samples, delta, offsets, request))
                    yield Completion(**header, choices=choices)
        if include_usage:
            usage = CompletionUsage(
                prompt_tokens=prompt_tokens,
                completion_tokens=completion_tokens,
                total_tokens=prompt_tokens + completion_tokens,
            )
            yield Completion(**{**header, "usage": usage}, choices=[])

    def _echo_choice(
        self, index: int, prompt: PreparedPrompt, entries: list[TokenLogprob | None] | None, request: CompletionRequest
    ) -> CompletionChoice:
        extra: dict[str, Any] = {"prompt_token_ids": prompt.token_ids} if request.return_token_ids else {}
        if request.return_token_ids:
            extra["token_ids"] = []
        logprobs = None
        if entries is not None:
            logprobs = self._logprobs(prompt.token_ids, entries, start=0)
        return _choice(index=index, text=prompt.text, logprobs=logprobs, finish_reason=None, **extra)

    def _choice(self, base: int, delta: SampleDelta, offsets: list[int], request: CompletionRequest) -> CompletionChoice:
        extra: dict[str, Any] = {"token_ids": delta.token_ids} if request.return_token_ids else {}
        if delta.finish_reason is not None:
            extra["stop_reason"] = delta.stop_reason
        logprobs = None
        if request.logprobs is not None or delta.logprobs:
            logprobs = self._logprobs(delta.token_ids, delta.logprobs, start=offsets[delta.index])
        offsets[delta.index] += len(delta.text)
        finish = None if delta.finish_reason is None else ("length" if delta.finish_reason == "abort" else delta.finish_reason)
        return _choice(index=base + delta.index, text=delta.text, logprobs=logprobs, finish_reason=finish, **extra)

    def _logprobs(self, token_ids: Sequence[int], entries: Sequence[TokenLogprob | None], *, start: int) -> Logprobs:
        texts = self.served.token_texts
        tokens: list[str] = []
        values: list[float | None] = []
        tops: list[dict[str, float] | None] = []
        offsets: list[int] = []
        position = start
        for token_id, entry in zip(token_ids, entries):
            token = texts(token_id)[0]
            tokens.append(token)
            values.append(entry.logprob if entry else None)
            tops.append({texts(t)[0]: v for t, v in entry.top} if entry else None)
            offsets.append(position)
            position += len(token)
        # The API sends null for the first echoed token; the SDK's type says float, so skip validation.
        return Logprobs.model_construct(tokens=tokens, token_logprobs=values, top_logprobs=tops, text_offset=offsets)


def _choice(**fields: Any) -> CompletionChoice:
    """A choice as streamed: OpenAI sends `finish_reason: null` mid-stream, which the SDK's type does not allow."""
    if fields["finish_reason"] is None:
        return CompletionChoice.model_construct(**fields)
    return CompletionChoice(**fields)


def accumulate_completion(chunks: Iterable[Completion]) -> Completion:
    """Fold streamed completion chunks into the non-streamed `Completion`."""
    chunks = list(chunks)
    first = chunks[0]
    merged: dict[int, dict[str, Any]] = {}
    usage = None
    for chunk in chunks:
        usage = chunk.usage or usage
        for choice in chunk.choices:
            entry = merged.setdefault(choice.index, {"text": [], "logprobs": None, "finish_reason": None, "extra": {}})
            entry["text"].append(choice.text)
            if choice.logprobs is not None:
                if entry["logprobs"] is None:
                    entry["logprobs"] = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
                for key in entry["logprobs"]:
                    entry["logprobs"][key].extend(getattr(choice.logprobs, key) or [])
            for key, value in (choice.model_extra or {}).items():
                if key == "token_ids":
                    entry["extra"].setdefault("token_ids", []).extend(value)
                else:
                    entry["extra"][key] = value
            if choice.finish_reason is not None:
                entry["finish_reason"] = choice.finish_reason
    choices = [
        CompletionChoice(
            index=index,
            text="".join(entry["text"]),
            logprobs=Logprobs.model_construct(**entry["logprobs"]) if entry["logprobs"] is not None else None,
            finish_reason=entry["finish_reason"] or "length",
            **entry["extra"],
        )
        for index, entry in sorted(merged.items())
    ]
    header = first.model_dump(include={"id", "created", "model", "system_fingerprint"}, exclude_unset=True)
    return Completion(**header, object="text_completion", choices=choices, usage=usage)


def _keep_best(completion: Completion, n: int, decoded: int, *, keep_logprobs: bool) -> Completion:
    """Keep the `n` samples of each prompt with the highest total logprob, renumbered."""
    kept: list[CompletionChoice] = []
    for start in range(0, len(completion.choices), decoded):
        group = completion.choices[start : start + decoded]
        ranked = sorted(group, key=lambda c: sum(v for v in (c.logprobs.token_logprobs or []) if v is not None),
                        reverse=True)
        for choice in ranked[:n]:
            update: dict[str, Any] = {"index": len(kept)}
            if not keep_logprobs:
                update["logprobs"] = None
            kept.append(choice.model_copy(update=update))
    return completion.model_copy(update={"choices": kept})
