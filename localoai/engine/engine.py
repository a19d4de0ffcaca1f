"""The generation engine: one inference thread that owns every forward pass.

Generation never runs on the event loop. Requests are queued and decoded on a single
persistent thread (CUDA graphs and some kernels keep thread-local state, and one owner
makes the model's train/eval switching safe). Each decode step samples, detokenizes,
checks stop conditions and publishes a list of `SampleDelta`s, so stop strings and
cancellation take effect at the very step they happen.

The unit of work is one request with its `n` samples decoded as one batch; a scheduler
that mixes requests (continuous batching) can replace `_run_request` without touching
the HTTP side, which only sees `RequestStream`s.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from localoai.engine.backend import Backend
from localoai.engine.params import PromptLogprobs, RequestDone, SampleDelta, SamplingParams, TokenLogprob
from localoai.engine.sampler import Sampler, token_logprobs
from localoai.engine.stream import RequestStream
from localoai.engine.text import IncrementalDetokenizer, StopStringMatcher

logger = logging.getLogger("localoai.engine")


@dataclass
class _Work:
    prompt_ids: list[int]
    params: SamplingParams
    stream: RequestStream
    queued_at: float = field(default_factory=time.perf_counter)


class _Sample:
    """Decoding state of one sample: its text, stop matching and whether it is finished."""

    def __init__(self, index: int, tokenizer: Any, params: SamplingParams) -> None:
        self.index = index
        self.detokenizer = IncrementalDetokenizer(tokenizer, skip_special_tokens=params.skip_special_tokens)
        self.stops = StopStringMatcher(params.stop, include_stop=params.include_stop_str_in_output)
        self.finished = False
        self.generated = 0


class Engine:
    def __init__(self, backend: Backend, tokenizer: Any, eos_token_ids: Sequence[int]) -> None:
        self.backend = backend
        self.tokenizer = tokenizer
        self.eos_token_ids = tuple(eos_token_ids)
        self.model_lock = threading.RLock()
        """Held around every forward pass; whoever holds it may change the weights safely."""
        self._queue: queue.Queue[_Work | None] = queue.Queue()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._loop, name="localoai-engine", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        if self._thread is not None and self._thread.is_alive():
            self._queue.put(None)
            self._thread.join(timeout)
        self._thread = None

    def submit(self, prompt_ids: list[int], params: SamplingParams, stream: RequestStream) -> None:
        self._queue.put(_Work(prompt_ids, params, stream))

    def _loop(self) -> None:
        while (work := self._queue.get()) is not None:
            started = time.perf_counter()
            try:
                if work.stream.cancelled:
                    done = RequestDone()
                else:
                    with self.model_lock, self.backend.generation_mode():
                        done = self._run_request(work)
            except Exception as exc:  # a failed generation must never kill the engine thread
                logger.exception("generation failed")
                done = RequestDone(error=exc)
            done.timings.update(queued=started - work.queued_at, total=time.perf_counter() - work.queued_at)
            work.stream.put(done)

    def _run_request(self, work: _Work) -> RequestDone:
        params, stream = work.params, work.stream
        prefill = self.backend.prefill(
            work.prompt_ids, params.n, prompt_logits=params.prompt_logprobs is not None
        )
        done = RequestDone()
        if prefill.prompt_logits is not None:
            stream.put(PromptLogprobs(self._prompt_logprobs(work.prompt_ids, prefill.prompt_logits, params)))
        samples = [_Sample(i, self.tokenizer, params) for i in range(params.n)]
        stop_ids = set(params.stop_token_ids) | (set() if params.ignore_eos else set(self.eos_token_ids))
        sampler = Sampler(
            params,
            vocab_size=prefill.next_logits.shape[-1],
            device=prefill.next_logits.device,
            prompt_ids=work.prompt_ids,
            eos_token_ids=sorted(stop_ids),
        )
        if params.max_tokens == 0:
            stream.put([SampleDelta(s.index, [], "", finish_reason="length") for s in samples])
            return done
        logits = prefill.next_logits
        for step in range(params.max_tokens):
            if stream.cancelled:
                return done
            tokens, logprobs = sampler.sample(logits, step)
            entries = token_logprobs(logprobs, tokens, params.logprobs or 0)
            deltas = [
                self._advance(sample, int(token), entries[sample.index], stop_ids, params)
                for sample, token in zip(samples, tokens.tolist())
                if not sample.finished
            ]
            if step == 0:
                done.timings["first_token"] = time.perf_counter() - work.queued_at
            stream.put(deltas)
            if all(sample.finished for sample in samples):
                break
            logits = self.backend.decode(prefill.state, tokens)
        return done

    def _advance(
        self,
        sample: _Sample,
        token: int,
        logprob: TokenLogprob,
        stop_ids: set[int],
        params: SamplingParams,
    ) -> SampleDelta:
        """Take one sampled token into a sample; finish it on a stop token, stop string or length."""
        sample.generated += 1
        delta = SampleDelta(sample.index, [token], "", [logprob])
        if token in stop_ids and sample.generated > params.min_tokens:
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

    @staticmethod
    def _prompt_logprobs(
        prompt_ids: list[int], logits: torch.Tensor, params: SamplingParams
    ) -> list[TokenLogprob | None]:
        """Logprob of each prompt token given the ones before it (the first has none)."""
        if len(prompt_ids) < 2:
            return [None] * len(prompt_ids)
        logprobs = torch.log_softmax(logits[:-1].float(), dim=-1)
        targets = torch.tensor(prompt_ids[1:], device=logprobs.device)
        return [None, *token_logprobs(logprobs, targets, params.prompt_logprobs or 0)]
