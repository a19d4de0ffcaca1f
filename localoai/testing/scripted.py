"""A scripted engine: the request-level engine interface replaying token ids a test chose.

`ScriptedEngine` implements `localoai.engine.interface.GenerationEngine` with no model: a script
says which token ids each sample writes, and the engine hands them out one per step through the
same `RequestStream`, with logprobs, stop tokens, stop strings, `max_tokens`, `n`, cancellation,
`pause(keep/wait/abort)` and policy versions as the local engine does (a request's bookkeeping is
the local engine's own `running.Request`). A server started on it (`running_server(engine=...)`)
is the real one, real HTTP, tokenizer, handlers and store: protocol tests then depend on what the
script says rather than on what random weights happen to sample.
"""

from __future__ import annotations

import itertools
import math
import random
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future
from typing import Any, TypeVar

import torch

from localoai.engine.interface import (
    DEFAULT_MAX_BATCH_SIZE,
    DEFAULT_MAX_QUEUED_REQUESTS,
    Capabilities,
    EngineObserver,
    PauseMode,
    Pooling,
    QueueFull,
)
from localoai.engine.jobs import JobQueue
from localoai.engine.params import SamplingParams, TokenLogprob
from localoai.engine.running import Request
from localoai.engine.stream import RequestStream

T = TypeVar("T")

Script = Callable[[list[int], SamplingParams, int], Iterable[int]]
"""`(prompt ids, params, sample index)` -> the token ids that sample writes, in order; once they run
out, the sample writes an end-of-sequence token. An exception raised while they are read fails the
request, as a failed forward pass does."""

SCRIPTED = Capabilities(constraints=frozenset(), prompt_logprobs=False, embeddings=False)
"""What a scripted engine honours: the script is given every sampling field; it enforces no output
constraint, computes no prompt logprobs and no embeddings."""
LOGPROB = math.log(0.5)
"""The logprob of every scripted token; alternatives (when asked for) follow one nat apart."""


def text_script(tokenizer: Any, *texts: str) -> Script:
    """Sample `i` writes the tokens of `texts[i % len(texts)]`."""
    encoded = [tokenizer.encode(text, add_special_tokens=False) for text in texts]
    return lambda prompt_ids, params, index: encoded[index % len(encoded)]


def random_words(tokenizer: Any) -> Script:
    """Ordinary (non-special) tokens drawn at random, as random weights would write them but never
    markup: seeded by `seed` and the sample's index; greedy requests (temperature 0) by the prompt."""
    special = set(tokenizer.all_special_ids) | set(getattr(tokenizer, "added_tokens_decoder", {}))
    ordinary = [token for token in range(len(tokenizer)) if token not in special]

    def script(prompt_ids: list[int], params: SamplingParams, index: int) -> Iterator[int]:
        if params.greedy:
            draws = random.Random(hash(tuple(prompt_ids)))
        elif params.seed is not None:
            draws = random.Random(params.seed * 1009 + index)
        else:
            draws = random.Random()
        return (draws.choice(ordinary) for _ in itertools.count())

    return script


class ScriptedEngine:
    """`GenerationEngine` replaying `script` (see the module docstring), one token per sample per step
    on its own thread. Only that thread reads the running requests; a step runs outside the condition
    (a script may block, to hold a request mid-flight) and `pause()` waits for it to end."""

    def __init__(
        self,
        tokenizer: Any,
        script: Script | None = None,
        *,
        eos_token_ids: Sequence[int] | None = None,
        vocab_size: int | None = None,
        context_length: int = 4096,
        capabilities: Capabilities = SCRIPTED,
        max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
        max_queued_requests: int = DEFAULT_MAX_QUEUED_REQUESTS,
    ) -> None:
        self.tokenizer = tokenizer
        self.script = script or random_words(tokenizer)
        self.eos_token_ids = tuple(eos_token_ids if eos_token_ids is not None else [tokenizer.eos_token_id])
        self._vocab_size = vocab_size or len(tokenizer)
        self._context_length = context_length
        self.capabilities = capabilities
        self.max_batch_size = max_batch_size
        self.max_queued_requests = max_queued_requests
        self.policy_version = 0
        self.observer: EngineObserver | None = None  # set by the server (its metrics)
        self.submitted: list[tuple[list[int], SamplingParams]] = []
        """Every request submitted, in order: what a test may check the handlers asked for."""
        self._condition = threading.Condition()
        self._waiting: list[tuple[Request, list[Iterator[int]]]] = []
        self._running: list[tuple[Request, list[Iterator[int]]]] = []
        self._jobs = JobQueue()
        self._pause_mode: PauseMode | None = None
        self._stepping = False
        """A step is running (outside the condition); `pause()` waits for its end."""
        self._stopping = False
        self._thread: threading.Thread | None = None

    @property
    def context_length(self) -> int:
        return self._context_length

    @property
    def vocab_size(self) -> int:
        return self._vocab_size

    @property
    def paused(self) -> bool:
        return self._pause_mode is not None

    @property
    def queue_full(self) -> bool:
        return len(self._waiting) >= self.max_queued_requests

    def start(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._stopping = False
            self._thread = threading.Thread(target=self._loop, name="localoai-scripted-engine", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        with self._condition:
            self._stopping = True
            self._condition.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
        self._thread = None

    def submit(self, prompt_ids: list[int], params: SamplingParams, stream: RequestStream) -> None:
        with self._condition:
            if self.queue_full:
                raise QueueFull(f"{len(self._waiting)} requests are already waiting")
            self.submitted.append((list(prompt_ids), params))
            scripts = [iter(self.script(list(prompt_ids), params, index)) for index in range(params.n)]
            self._waiting.append((Request(list(prompt_ids), params, stream), scripts))
            self._condition.notify_all()

    def call(self, run: Callable[[], T]) -> Future[T]:
        with self._condition:
            future = self._jobs.put(run)
            self._condition.notify_all()
            return future

    def embed(self, prompts: Sequence[Sequence[int]], pooling: Pooling, normalize: bool) -> torch.Tensor:
        raise NotImplementedError("a scripted engine computes no embeddings")

    def pause(self, mode: PauseMode = "abort", timeout: float | None = None) -> None:
        with self._condition:
            if self._pause_mode is None:
                self._pause_mode = mode
                if self.observer is not None:
                    self.observer.paused(mode)
                self._condition.notify_all()
            if not self._condition.wait_for(lambda: not self._stepping, timeout):  # a script may block a step
                self._pause_mode = None
                self._condition.notify_all()
                raise TimeoutError(f"the engine did not pause within {timeout} s")
            if mode == "abort":
                for request, _ in [*self._running, *self._waiting]:
                    if not request.stream.cancelled:
                        request.abort(self.policy_version)
                    request.finish()
                self._running, self._waiting = [], []
            if not self._condition.wait_for(lambda: self._pause_mode != "wait" or not self._running, timeout):
                self._pause_mode = None
                self._condition.notify_all()
                raise TimeoutError(f"the engine did not pause within {timeout} s")

    def resume(self, *, bump_version: bool = True) -> int:
        with self._condition:
            if self._pause_mode is not None:
                self.policy_version += bump_version
                if self.observer is not None:
                    self.observer.resumed()
                self._pause_mode = None
                self._condition.notify_all()
            return self.policy_version

    def stats(self) -> dict[str, int]:
        with self._condition:
            return {"waiting": len(self._waiting), "running": len(self._running), "jobs": len(self._jobs),
                    "rows": sum(request.rows for request, _ in self._running)}

    def prefix_cache_stats(self) -> dict[str, int]:
        return {}

    # --- the engine thread ---------------------------------------------------------
    def _loop(self) -> None:
        while self._turn():
            pass
        with self._condition:
            for request, _ in [*self._running, *self._waiting]:
                request.abort(self.policy_version)
                request.finish()
            self._running, self._waiting = [], []
            self._jobs.fail_all(RuntimeError("the server stopped"))

    def _turn(self) -> bool:
        """Wait for work, then run the jobs, admit the waiting requests and run a step; False once
        stopping. A method of its own so that its locals (the last request admitted, the last job)
        go when it returns: locals of the loop would keep them alive while the engine idles, and
        with them the request's stream."""
        with self._condition:
            self._condition.wait_for(lambda: self._stopping or self._has_work())
            if self._stopping:
                return False
            jobs = self._jobs.take() if self._pause_mode is None else []
        for job in jobs:
            job.execute()
        with self._condition:
            if self._pause_mode is None:
                for request, _ in self._waiting:
                    self._admit(request)
                self._running += self._waiting
                self._waiting = []
            self._stepping = self._pause_mode in (None, "wait")
        if self._stepping:  # outside the condition: a script may block, as a forward pass takes time
            self._step()
        with self._condition:
            self._stepping = False
            self._condition.notify_all()
        return True

    def _has_work(self) -> bool:
        if self._pause_mode is None:
            return bool(self._running or self._waiting or self._jobs)
        return self._pause_mode == "wait" and bool(self._running)

    def _admit(self, request: Request) -> None:
        logits = torch.zeros(request.rows, self.vocab_size)  # a Sampler's shape: the script decides
        request.admit(self.tokenizer, self.eos_token_ids, logits, self.policy_version)

    def _step(self) -> None:
        kept = []
        for request, scripts in self._running:
            if not request.stream.cancelled and not request.finished:
                request.logits_version = self.policy_version
                try:
                    tokens = [next(script, self.eos_token_ids[0]) for script in scripts]
                except Exception as exc:  # noqa: BLE001 - a script that raises fails its request, as a forward pass
                    request.finish(exc)
                    continue
                request.take(tokens, [self._logprob(token, request.params.logprobs or 0) for token in tokens])
            if request.stream.cancelled or request.finished:
                request.finish()
            else:
                kept.append((request, scripts))
        if self._running and self.observer is not None:
            self.observer.step(sum(request.rows for request, _ in self._running))
        self._running = kept

    def _logprob(self, token: int, top: int) -> TokenLogprob:
        alternatives = [(token, LOGPROB)] + [((token + k) % self.vocab_size, LOGPROB - k) for k in range(1, top)]
        return TokenLogprob(token, LOGPROB, tuple(alternatives[:top]))
