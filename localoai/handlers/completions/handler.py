"""Legacy completions: one or more prompts (text or token ids), `n`, `best_of`, `echo`, logprobs.

As for chat, the non-streamed response is the fold of the streamed one (`CompletionFold`).
With `echo`, each sample's first chunk carries the prompt (and its logprobs, which the
engine publishes right after prefill). `best_of > n` decodes `best_of` samples and keeps
the `n` with the highest total logprob (non-streamed only, as OpenAI requires).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

from openai.types import Completion, CompletionChoice, CompletionUsage
from openai.types.completion_usage import PromptTokensDetails
from openai.types.completion_choice import Logprobs

from localoai.engine.params import PromptLogprobs, SampleDelta, SamplingParams, TokenLogprob
from localoai.episodes.ledger import EpisodeTurn
from localoai.episodes.routing import EpisodeRef
from localoai.errors import InvalidRequestError
from localoai.handlers.common import interleave, new_id, prompt_ids, prompt_logprobs, sampling_params, scoring, \
    token_budget
from localoai.handlers.recording import RecordFields
from localoai.handlers.run import GenerationRun, folded
from localoai.protocol.completions import CompletionRequest
from localoai.served import LoadedModel, Services


@dataclass(frozen=True)
class PreparedPrompt:
    text: str
    token_ids: list[int]
    params: SamplingParams


@dataclass(frozen=True)
class PreparedCompletion:
    request: CompletionRequest
    prompts: list[PreparedPrompt]
    episode: EpisodeTurn | None = None

    @property
    def ranked(self) -> bool:
        """`best_of > n`: more samples are decoded than returned, the best by total logprob."""
        return self.prompts[0].params.n > (self.request.n or 1)

    @property
    def shows_logprobs(self) -> bool:
        # Ranking needs the samples' logprobs even when the caller did not ask for them.
        return self.request.logprobs is not None or self.ranked


class Completions:
    def __init__(self, model: LoadedModel, services: Services) -> None:
        self.model, self.services = model, services

    def prepare(self, request: CompletionRequest, episode: EpisodeRef | None = None) -> PreparedCompletion:
        """Blocking (it tokenizes): the route runs it with `Services.off_loop`."""
        model = self.model
        model.check_model(request.model)
        n = request.n or 1
        decoded = max(n, request.best_of or n)
        if request.prompt_logprob_token_ids is not None and len(request.prompts) > 1:
            raise InvalidRequestError("Invalid value for 'prompt_logprob_token_ids': it needs a single prompt.",
                                      param="prompt_logprob_token_ids", code="invalid_value")
        echoed = request.logprobs if request.echo and request.logprobs is not None else None
        prompts = []
        for prompt in request.prompts:
            token_ids, text = prompt_ids(model, prompt, param="prompt")
            budget = token_budget(model, len(token_ids), request.max_tokens, param="max_tokens")
            scored = scoring(model, token_ids, request.prompt_logprobs, request.prompt_logprob_token_ids,
                             param="prompt_logprob_token_ids")
            wanted = [top for top in (echoed, scored.prompt_logprobs) if top is not None]
            params = sampling_params(
                model,
                request,
                max_tokens=budget,
                n=decoded,
                logprobs=request.logprobs,
                prompt_logprobs=max(wanted) if wanted else None,
                prompt_logprob_token_ids=scored.prompt_logprob_token_ids,
            )
            prompts.append(PreparedPrompt(text=text, token_ids=token_ids, params=params))
        return PreparedCompletion(request, prompts, self.services.episodes.turn(episode))

    async def create(self, prepared: PreparedCompletion) -> Completion:
        fold = CompletionFold()
        completion = await folded(self._chunks(prepared, fold, include_usage=True, live=False), fold)
        if prepared.ranked:
            completion = _keep_best(completion, prepared.request.n or 1, prepared.prompts[0].params.n,
                                    keep_logprobs=prepared.request.logprobs is not None)
        return completion

    def chunks(self, prepared: PreparedCompletion, *, include_usage: bool) -> AsyncIterator[Completion]:
        """The completion as OpenAI streams it."""
        return self._chunks(prepared, CompletionFold(), include_usage=include_usage, live=True)

    async def _chunks(
        self, prepared: PreparedCompletion, fold: CompletionFold, *, include_usage: bool, live: bool
    ) -> AsyncIterator[Completion]:
        """The chunks, each folded into `fold`; `live=False` when nobody reads a chunk before the last
        (see `Generation`)."""
        model, services = self.model, self.services
        header: dict[str, Any] = {
            "id": new_id("cmpl-"),
            "object": "text_completion",
            "created": int(time.time()),
            "model": model.name,
            "system_fingerprint": model.fingerprint(services.policy_version),
        }
        if include_usage:
            header["usage"] = None
        usage = CompletionUsage(prompt_tokens=0, completion_tokens=0, total_tokens=0,
                                prompt_tokens_details=PromptTokensDetails(cached_tokens=0))
        # Every prompt's generation at once: they are decoded together, as separate requests would be.
        async for chunk in interleave([self._prompt_chunks(prepared, number, header, usage, live)
                                       for number in range(len(prepared.prompts))]):
            yield fold.add(chunk)
        usage.total_tokens = usage.prompt_tokens + usage.completion_tokens
        if include_usage:
            yield fold.add(Completion(**{**header, "usage": usage}, choices=[]))

    async def _prompt_chunks(
        self, prepared: PreparedCompletion, number: int, header: dict[str, Any], usage: CompletionUsage, live: bool
    ) -> AsyncIterator[Completion]:
        """The chunks of one prompt's samples, counted into `usage`; the generation is recorded as it ends."""
        request, prompt = prepared.request, prepared.prompts[number]
        samples = prompt.params.n
        base = number * samples
        offsets = [0] * samples  # characters already sent per sample, for text_offset
        echo_pending = bool(request.echo)
        # vLLM's placement: each choice's first chunk carries its prompt's ids (the echo, when there is one).
        ids_pending = set(range(samples)) if request.return_token_ids and not request.echo else set()
        fold = CompletionFold()
        record = RecordFields(
            model=self.model.name,
            record_id=header["id"] if len(prepared.prompts) == 1 else f"{header['id']}:{number}",
            kind="text_completion", created=header["created"], request=request, prompt_text=prompt.text,
            prompt_token_ids=prompt.token_ids, first_index=base, episode=prepared.episode)
        # One record per prompt: `cmpl-...`, or `cmpl-...:N` for the Nth of several prompts.
        async with GenerationRun(self.services, record, lambda: None if fold.empty else fold.result()) as run:
            # Logprobs' text offsets restart at each step's text: shown, they keep the steps.
            async with run.generate(prompt.token_ids, prompt.params, live=live,
                                    steps=prepared.shows_logprobs) as generation:
                async for item in generation:
                    # The weights that generated the output (a request may have waited through a pause).
                    header["system_fingerprint"] = self.model.fingerprint(generation.policy_version)
                    if isinstance(item, PromptLogprobs) or (echo_pending and isinstance(item, list)):
                        opening = self._opening(base, prompt, item, request, echo=echo_pending)
                        if echo_pending:
                            offsets = [len(choice.text) for choice in opening]
                            echo_pending = False
                        yield fold.add(Completion(**header, choices=opening))
                    if isinstance(item, list):
                        choices = [self._choice(base, delta, offsets, request, prepared.shows_logprobs,
                                                prompt.token_ids if delta.index in ids_pending else None)
                                   for delta in item]
                        ids_pending.difference_update(delta.index for delta in item)
                        yield fold.add(Completion(**header, choices=choices))
            usage.prompt_tokens += run.counts.prompt
            usage.prompt_tokens_details.cached_tokens += run.counts.cached  # type: ignore[union-attr,operator]
            usage.completion_tokens += run.counts.output
            await run.finish(None if fold.empty else fold.result())

    def _opening(self, base: int, prompt: PreparedPrompt, item: PromptLogprobs | list[SampleDelta],
                 request: CompletionRequest, *, echo: bool) -> list[CompletionChoice]:
        """Each sample's first choice: the echoed prompt (with its logprobs when asked), vLLM's
        `prompt_logprobs` when asked (on an empty choice if nothing is echoed)."""
        entries = item.entries if isinstance(item, PromptLogprobs) else None
        extra: dict[str, Any] = {}
        if request.return_token_ids:
            extra = {"prompt_token_ids": prompt.token_ids, "token_ids": []}
        if isinstance(item, PromptLogprobs) and (request.prompt_logprobs is not None
                                                 or prompt.params.prompt_logprob_token_ids):
            extra["prompt_logprobs"] = prompt_logprobs(self.model, item, request.prompt_logprobs,
                                                       prompt.params.prompt_logprobs)
        logprobs = None
        if echo and entries is not None and request.logprobs is not None:
            shown = [entry and replace(entry, top=entry.top[:request.logprobs]) for entry in entries]
            logprobs = self._logprobs(prompt.token_ids, shown, start=0)
        return [_choice(index=base + i, text=prompt.text if echo else "", logprobs=logprobs, finish_reason=None,
                        **extra) for i in range(prompt.params.n)]

    def _choice(
        self, base: int, delta: SampleDelta, offsets: list[int], request: CompletionRequest, shows_logprobs: bool,
        prompt_token_ids: list[int] | None = None,
    ) -> CompletionChoice:
        extra: dict[str, Any] = {"prompt_token_ids": prompt_token_ids} if prompt_token_ids is not None else {}
        if request.return_token_ids:
            extra["token_ids"] = delta.token_ids
        if delta.finish_reason is not None:
            extra["stop_reason"] = delta.stop_reason
        logprobs = None
        if shows_logprobs:
            logprobs = self._logprobs(delta.token_ids, delta.logprobs, start=offsets[delta.index])
        offsets[delta.index] += len(delta.text)
        finish = None if delta.finish_reason is None else ("length" if delta.finish_reason == "abort" else delta.finish_reason)
        return _choice(index=base + delta.index, text=delta.text, logprobs=logprobs, finish_reason=finish, **extra)

    def _logprobs(self, token_ids: Sequence[int], entries: Sequence[TokenLogprob | None], *, start: int) -> Logprobs:
        texts = self.model.token_texts
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


class CompletionFold:
    """Completion chunks folded, as they go by, into the non-streamed `Completion` (see `run.Fold`)."""

    def __init__(self) -> None:
        self._header: dict[str, Any] | None = None
        self._merged: dict[int, dict[str, Any]] = {}
        self._usage: CompletionUsage | None = None

    @property
    def empty(self) -> bool:
        return self._header is None

    def add(self, chunk: Completion) -> Completion:
        if self._header is None:
            self._header = chunk.model_dump(include={"id", "created", "model", "system_fingerprint"},
                                            exclude_unset=True)
        self._usage = chunk.usage or self._usage
        for choice in chunk.choices:
            entry = self._merged.setdefault(choice.index, {"text": [], "logprobs": None, "finish_reason": None,
                                                           "extra": {}})
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
        return chunk

    def result(self) -> Completion:
        assert self._header is not None, "nothing folded yet"
        choices = [
            CompletionChoice(
                index=index,
                text="".join(entry["text"]),
                logprobs=Logprobs.model_construct(**entry["logprobs"]) if entry["logprobs"] is not None else None,
                finish_reason=entry["finish_reason"] or "length",
                **entry["extra"],
            )
            for index, entry in sorted(self._merged.items())
        ]
        return Completion(**self._header, object="text_completion", choices=choices, usage=self._usage)


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
