"""One request on the engine: what it asked for, and its decoding state once admitted.

The scheduler keeps each request's rows contiguous in the batch and calls the request's own
`Sampler` on exactly those rows, so per-request sampling (penalties, seeded generator,
constraints) never mixes with another request's. A request keeps all `n` rows until every
sample is done: its Sampler's per-row state and its seeded random stream then match an
unbatched run draw for draw.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch

from localoai.engine.params import FinishReason, RequestDone, SampleDelta, SamplingParams, TokenConstraint, TokenLogprob
from localoai.engine.sampler import Sampler, token_logprobs
from localoai.engine.stream import RequestStream
from localoai.engine.text import IncrementalDetokenizer, StopStringMatcher


class Sample:
    """Decoding state of one sample: its text, stop matching and whether it is finished."""

    def __init__(self, index: int, tokenizer: Any, params: SamplingParams) -> None:
        self.index = index
        self.detokenizer = IncrementalDetokenizer(tokenizer, skip_special_tokens=params.skip_special_tokens,
                                                  keep=params.special_tokens_kept)
        self.stops = StopStringMatcher(params.stop, include_stop=params.include_stop_str_in_output)
        self.finished = False
        self.generated = 0

    def close(self, reason: FinishReason) -> SampleDelta:
        """End the sample now (an abort): whatever text was held back goes out with it."""
        text = self.stops.feed(self.detokenizer.flush())[0] + self.stops.flush()
        self.finished = True
        return SampleDelta(self.index, [], text, finish_reason=reason)


@dataclass
class Request:
    prompt_ids: list[int]
    params: SamplingParams
    stream: RequestStream
    queued_at: float = field(default_factory=time.perf_counter)
    done: RequestDone = field(default_factory=RequestDone)
    constraint: TokenConstraint | None = None
    """`params.constraint` compiled, before the request waits for admission."""
    # Set once admitted (engine thread only).
    sampler: Sampler | None = None
    samples: list[Sample] = field(default_factory=list)
    stop_ids: frozenset[int] = frozenset()
    fed: list[list[int]] = field(default_factory=list)
    """Per row, the tokens fed after the prompt: what a cache rebuild must read again."""
    logits: torch.Tensor | None = None
    logits_version: int = 0
    """The policy version whose weights computed `logits`."""
    step: int = 0

    @property
    def rows(self) -> int:
        return self.params.n

    @property
    def finished(self) -> bool:
        return all(sample.finished for sample in self.samples)

    def admit(self, tokenizer: Any, eos_token_ids: tuple[int, ...], logits: torch.Tensor, version: int) -> None:
        params = self.params
        self.samples = [Sample(i, tokenizer, params) for i in range(params.n)]
        eos = frozenset() if params.ignore_eos else frozenset(eos_token_ids)
        self.stop_ids = frozenset(params.stop_token_ids) | eos
        self.sampler = Sampler(params, vocab_size=logits.shape[-1], device=logits.device,
                               prompt_ids=self.prompt_ids, eos_token_ids=sorted(self.stop_ids),
                               constraint=self.constraint)
        self.fed = [[] for _ in range(params.n)]
        self.logits, self.logits_version = logits, version
        self.done.timings["queued"] = time.perf_counter() - self.queued_at
        if params.max_tokens == 0:
            self.stream.put([SampleDelta(s.index, [], "", finish_reason="length", policy_version=version)
                             for s in self.samples])
            for sample in self.samples:
                sample.finished = True

    def sample_step(self) -> list[int]:
        """Sample every row's next token with the request's own `Sampler`; see `take`."""
        assert self.sampler is not None and self.logits is not None
        tokens, logprobs = self.sampler.sample(self.logits, self.step)
        return self.take(tokens.tolist(), token_logprobs(logprobs, tokens, self.params.logprobs or 0))

    @property
    def plain_sampling(self) -> bool:
        """Whether this step's tokens may come from the engine's batched `sample_plain`."""
        return self.sampler is not None and self.sampler.plain_at(self.step)

    def take(self, tokens: list[int], entries: list[TokenLogprob]) -> list[int]:
        """Take every row's sampled token, publish the unfinished samples' deltas; return the tokens."""
        deltas = [
            self._advance(sample, token, entries[sample.index])
            for sample, token in zip(self.samples, tokens)
            if not sample.finished
        ]
        if self.step == 0:
            self.done.timings["first_token"] = time.perf_counter() - self.queued_at
        self.step += 1
        self.stream.put(deltas)
        for row, token in zip(self.fed, tokens):
            row.append(token)
        return tokens

    def _advance(self, sample: Sample, token: int, logprob: TokenLogprob) -> SampleDelta:
        """Take one sampled token into a sample; finish it on a stop token, stop string or length."""
        params = self.params
        sample.generated += 1
        delta = SampleDelta(sample.index, [token], "", [logprob], policy_version=self.logits_version)
        if token in self.stop_ids and sample.generated > params.min_tokens:
            delta.text = sample.stops.feed(sample.detokenizer.push(token) + sample.detokenizer.flush())[0]
            delta.text += sample.stops.flush()
            delta.finish_reason = "stop"
            delta.stop_reason = token if token in params.stop_token_ids else None
        else:
            delta.text, matched = sample.stops.feed(sample.detokenizer.push(token))
            if matched is not None:
                delta.finish_reason, delta.stop_reason = "stop", matched
            elif sample.generated >= params.max_tokens:
                delta.text += sample.stops.feed(sample.detokenizer.flush())[0] + sample.stops.flush()
                delta.finish_reason = "length"
        sample.finished = delta.finish_reason is not None
        return delta

    def abort(self, version: int) -> None:
        """End every unfinished sample with the finish reason `abort` and its partial output."""
        deltas = [sample.close("abort") for sample in self.samples if not sample.finished]
        if not self.samples:  # never admitted: every sample ends empty
            deltas = [SampleDelta(i, [], "", finish_reason="abort") for i in range(self.params.n)]
        for delta in deltas:
            delta.policy_version = version
        self.stream.put(deltas)

    def finish(self, error: BaseException | None = None) -> None:
        self.done.error = error
        self.done.timings["total"] = time.perf_counter() - self.queued_at
        self.done.timings.setdefault("queued", self.done.timings["total"])
        self.stream.put(self.done)


PROMPT_LOGITS_BUDGET = 1 << 27
"""Logits (floats) one scoring prefill may hold: prompts x width x vocab (512 MiB in float32)."""


def logit_groups(requests: list[Request], vocab_size: int) -> list[list[Request]]:
    """Requests that need every prompt position's logits, in order, grouped to fit the budget."""
    groups: list[list[Request]] = []
    width = 0
    for request in requests:
        grown = max(width, len(request.prompt_ids))
        if groups and (len(groups[-1]) + 1) * grown * vocab_size <= PROMPT_LOGITS_BUDGET:
            groups[-1].append(request)
            width = grown
        else:
            groups.append([request])
            width = len(request.prompt_ids)
    return groups
