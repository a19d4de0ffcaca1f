"""localoai's `SamplingParams` as vLLM's, and vLLM's outputs as localoai's `SampleDelta`s.

vLLM decides which tokens are sampled (temperature, top-k/p, min-p, penalties, `logit_bias`, seeds,
the grammar through its llguidance backend, `min_tokens`, stop token ids and end of sequence,
`max_tokens`); localoai decides what they mean as text. vLLM runs with `detokenize=False`: each
sample's text is written by localoai's own incremental detokenizer and stop-string matcher (the
local engine's `running.Sample`), so text, held-back stop-string prefixes, `stop_reason` and
finish reasons are the local engine's to the character, and the token ids are vLLM's as sampled.

A request's `n` samples are `n` vLLM requests, sample `i` seeded with `seed + i` (vLLM's own
fan-out does the same): a sample that meets a stop string is aborted alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from localoai.engine.params import PromptLogprobs, SampleDelta, SamplingParams, TokenLogprob
from localoai.engine.running import Sample
from localoai.engine.sampler import finite_logprob


def vllm_sampling_params(params: SamplingParams, index: int, eos_token_ids: Sequence[int], *,
                         max_tokens: int | None = None) -> Any:
    """vLLM's `SamplingParams` for sample `index` of a request (one vLLM request per sample); sample 0
    asks for the prompt logprobs. `max_tokens`: instead of the request's (a prompt-only request's 1)."""
    from vllm import SamplingParams as VLLMSamplingParams
    from vllm.sampling_params import RequestOutputKind, StructuredOutputsParams

    stop_token_ids = list(params.stop_token_ids) + ([] if params.ignore_eos else list(eos_token_ids))
    structured = None
    if params.constraint is not None:
        structured = StructuredOutputsParams(grammar=params.constraint.grammar)
    return VLLMSamplingParams(
        n=1,
        temperature=params.temperature,
        top_p=params.top_p,
        top_k=params.top_k,
        min_p=params.min_p,
        presence_penalty=params.presence_penalty,
        frequency_penalty=params.frequency_penalty,
        repetition_penalty=params.repetition_penalty,
        logit_bias=dict(params.logit_bias) or None,
        seed=None if params.seed is None else params.seed + index,
        stop_token_ids=sorted(set(stop_token_ids)) or None,
        ignore_eos=params.ignore_eos,
        max_tokens=params.max_tokens if max_tokens is None else max_tokens,
        min_tokens=params.min_tokens,
        logprobs=params.logprobs or 0,  # 0: the sampled token's own logprob, which every trace keeps
        prompt_logprobs=params.prompt_logprobs if index == 0 else None,
        flat_logprobs=True,  # a few flat lists per request, not a dict and Logprob objects per token
        detokenize=False,
        output_kind=RequestOutputKind.DELTA,
        structured_outputs=structured,
    )


def token_logprob(token: int, logprobs: Any, position: int, top: int, *, rank: bool = True) -> TokenLogprob:
    """Position `position` of vLLM's `FlatLogprobs` (asked for with `flat_logprobs=True`: flat lists
    rather than a `{token_id: Logprob}` dict per position; each position holds the token in question
    and the `top` most likely) as localoai's: the token's logprob, the top ones by rank (`rank=False`:
    without the token's own rank, as the local engine's sampled tokens)."""
    if logprobs is None or position >= len(logprobs.start_indices):
        return TokenLogprob(token, finite_logprob(float("-inf")))  # vLLM reported none (never expected)
    start, end = logprobs.start_indices[position], logprobs.end_indices[position]
    ids, values, ranks = logprobs.token_ids, logprobs.logprobs, logprobs.ranks
    own = next((i for i in range(start, end) if ids[i] == token), None)  # vLLM puts it first
    if own is None:
        return TokenLogprob(token, finite_logprob(float("-inf")))
    value, own_rank = finite_logprob(float(values[own])), ranks[own] if rank else None
    if not top:  # the common case, every token of every trace: no alternatives to rank
        return TokenLogprob(token, value, rank=own_rank)
    ranked: dict[int, tuple[int, float]] = {}  # the token itself may come again among the top ones
    for i in range(start, end):
        if ranks[i] is not None and ranks[i] <= top:
            ranked.setdefault(ids[i], (ranks[i], values[i]))
    best = sorted((r, candidate, lp) for candidate, (r, lp) in ranked.items())[:top]
    return TokenLogprob(token, value, tuple((c, finite_logprob(float(lp))) for _, c, lp in best), rank=own_rank)


def prompt_entries(prompt_ids: Sequence[int], logprobs: Any, top: int) -> PromptLogprobs:
    """vLLM's `prompt_logprobs` (`FlatLogprobs`, one position per prompt token, the first empty) as
    localoai's, with ranks."""
    entries: list[TokenLogprob | None] = [None]
    entries += [token_logprob(prompt_ids[position], logprobs, position, top) for position in range(1, len(prompt_ids))]
    return PromptLogprobs(entries)


class SampleFeed:
    """One sample's text and finish, fed vLLM's token deltas (see the module docstring)."""

    def __init__(self, index: int, tokenizer: Any, params: SamplingParams, eos_token_ids: Sequence[int]) -> None:
        self.params = params
        self.sample = Sample(index, tokenizer, params)
        eos = frozenset() if params.ignore_eos else frozenset(eos_token_ids)
        self.stop_ids = frozenset(params.stop_token_ids) | eos

    @property
    def finished(self) -> bool:
        return self.sample.finished

    def feed(self, token_ids: Sequence[int], logprobs: Any, finish_reason: str | None,
             version: int) -> SampleDelta:
        """The delta of this step's tokens (`logprobs`: theirs, vLLM's `FlatLogprobs`). Its
        `finish_reason` is set when the sample ends: on a stop token, a stop string (vLLM's request
        must then be aborted: it does not know the string), `max_tokens`, or vLLM's own end (`abort`
        from a pause, `length` at the context's end)."""
        sample, params = self.sample, self.params
        delta = SampleDelta(sample.index, [], "", policy_version=version)
        top = params.logprobs or 0
        for position, token in enumerate(token_ids):
            sample.generated += 1
            delta.token_ids.append(token)
            delta.logprobs.append(token_logprob(token, logprobs, position, top, rank=False))
            if token in self.stop_ids and sample.generated > params.min_tokens:
                delta.text += sample.stops.feed(sample.detokenizer.push(token) + sample.detokenizer.flush())[0]
                delta.text += sample.stops.flush()
                delta.finish_reason = "stop"
                delta.stop_reason = token if token in params.stop_token_ids else None
                break
            text, matched = sample.stops.feed(sample.detokenizer.push(token))
            delta.text += text
            if matched is not None:
                delta.finish_reason, delta.stop_reason = "stop", matched
                break
            if sample.generated >= params.max_tokens:
                delta.text += sample.stops.feed(sample.detokenizer.flush())[0] + sample.stops.flush()
                delta.finish_reason = "length"
                break
        if delta.finish_reason is None and finish_reason is not None:
            # vLLM ended it for a reason the tokens do not show: a pause's abort, the context's end.
            delta.text += sample.stops.feed(sample.detokenizer.flush())[0] + sample.stops.flush()
            delta.finish_reason = {"stop": "stop", "length": "length"}.get(finish_reason, "abort")
        sample.finished = delta.finish_reason is not None
        return delta

    def close(self, version: int) -> SampleDelta:
        """End the sample now (finish reason `abort`) with whatever text was held back."""
        delta = self.sample.close("abort")
        delta.policy_version = version
        return delta
