"""The local engine (`localoai.engine.interface.GenerationEngine` over a `transformers` model):
one inference thread, continuous batching, pause for weight updates.

Requests wait in a bounded queue and are decoded on one persistent thread (CUDA graphs and some
kernels keep thread-local state; one owner makes train/eval switching safe). Every step runs ONE
forward pass over all running requests: new requests are prefilled (once per prompt, shared by
its `n` samples, past its longest cached prefix) and joined into the batch, each request's rows
are sampled (`batch_sampling`), finished or cancelled requests leave, the rest decode together.
The step's stream items reach each event loop with one wake-up (`one_wakeup_per_loop`).
`pause(mode)` parks the thread at a step boundary until `resume()`; with `keep`, the running
requests' KV caches are recomputed on resume, since nothing computed by old weights may serve.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any, TypeVar

import torch

from localoai.engine.backend import Backend, Rows, TransformersBackend
from localoai.engine.batch_sampling import sample_running
from localoai.engine.cached_prefill import prefill_cached, remember
from localoai.engine.compiling import ConstraintCompiler
from localoai.engine.interface import (  # PAUSE_MODES, DEFAULT_*: the names this module gave them
    DEFAULT_MAX_BATCH_SIZE,
    DEFAULT_MAX_QUEUED_REQUESTS,
    PAUSE_MODES,
    Capabilities,
    EngineObserver,
    PauseMode,
    Pooling,
    QueueFull,
    Unobserved,
)
from localoai.engine.jobs import JobQueue
from localoai.engine.params import PromptLogprobs, SamplingParams
from localoai.engine.prefix_cache import PrefixCache
from localoai.engine.running import Request, logit_groups
from localoai.engine.sampler import prompt_logprobs
from localoai.engine.stream import RequestStream, deliver_held, one_wakeup_per_loop

logger = logging.getLogger("localoai.engine")

T = TypeVar("T")


class Engine:
    """The local implementation of `localoai.engine.interface.GenerationEngine`."""

    capabilities = Capabilities()
    """Everything: every sampling field, constraint kind and logprob kind, embeddings, `call()`."""

    def __init__(
        self,
        backend: Backend,
        tokenizer: Any,
        eos_token_ids: Sequence[int],
        *,
        max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
        max_queued_requests: int = DEFAULT_MAX_QUEUED_REQUESTS,
        prefix_cache: PrefixCache | None = None,
    ) -> None:
        if max_batch_size < 1 or max_queued_requests < 1:
            raise ValueError("max_batch_size and max_queued_requests must be at least 1")
        self.backend = backend
        self.tokenizer = tokenizer
        self.eos_token_ids = tuple(eos_token_ids)
        self.max_batch_size = max_batch_size
        """Rows (samples) decoded together; a request with more rows runs alone. 1 disables batching."""
        self.max_queued_requests = max_queued_requests
        self.prefix_cache = prefix_cache if backend.prefix_cacheable else None
        """Reused prompt KV (see `localoai.engine.prefix_cache`); None when off or the model's cache can't."""
        self.model_lock = threading.RLock()
        """Held around every forward pass."""
        self.policy_version = 0
        """The version of the weights; tokens are tagged with it. `resume()` bumps it."""
        self.observer: EngineObserver = Unobserved()
        self._condition = threading.Condition()
        self._waiting: deque[Request] = deque()
        self._jobs = JobQueue()
        self._compiler = ConstraintCompiler(tokenizer, backend.vocab_size, self._compiled, self._condition)
        self._pause_mode: PauseMode | None = None
        self._parked = False
        self._stopping = False
        self._thread: threading.Thread | None = None
        # Engine thread only:
        self._running: list[Request] = []
        self._batch: Rows | None = None
        self._stale = False
        self._generator = torch.Generator(device=backend.device)
        """Draws for unseeded plain-temperature requests (`sample_plain`); seeded ones use their own."""
        self._generator.seed()

    @classmethod
    def for_model(cls, model: Any, tokenizer: Any, eos_token_ids: Sequence[int], *,
                  max_batch_size: int = DEFAULT_MAX_BATCH_SIZE, max_queued_requests: int = DEFAULT_MAX_QUEUED_REQUESTS,
                  prefix_cache: bool | int = True) -> Engine:
        """An engine over a `transformers` (or PEFT) causal LM. `prefix_cache`: True sizes its budget to
        the device, an int is the budget in bytes, False or 0 turns it off."""
        from localoai.engine.prefix_cache import default_budget

        backend = TransformersBackend(model)
        budget = default_budget(backend.device) if prefix_cache is True else int(prefix_cache)
        return cls(backend, tokenizer, eos_token_ids, max_batch_size=max_batch_size,
                   max_queued_requests=max_queued_requests, prefix_cache=PrefixCache(budget) if budget else None)

    @property
    def context_length(self) -> int:
        return self.backend.context_length

    @property
    def vocab_size(self) -> int:
        return self.backend.vocab_size

    def embed(self, prompts: Sequence[Sequence[int]], pooling: Pooling, normalize: bool) -> torch.Tensor:
        """Pooled last hidden states (see `Backend.embed`); on the engine thread, through `call()`."""
        return self.backend.embed(prompts, pooling, normalize)

    # --- lifecycle -----------------------------------------------------------------
    def start(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._stopping = False
            self._thread = threading.Thread(target=self._loop, name="localoai-engine", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        with self._condition:
            self._stopping = True
            self._condition.notify_all()
        if self._thread is not None and self._thread.is_alive():
            self._thread.join(timeout)
        self._thread = None
        self._compiler.shutdown()

    # --- requests ------------------------------------------------------------------
    def submit(self, prompt_ids: list[int], params: SamplingParams, stream: RequestStream) -> None:
        """Queue a request; `QueueFull` when `max_queued_requests` are already waiting. A request with
        an output constraint waits once its grammar is compiled, on the compile thread."""
        request = Request(list(prompt_ids), params, stream)
        with self._condition:
            if len(self._waiting) + self._compiler.pending >= self.max_queued_requests:
                raise QueueFull(f"{len(self._waiting) + self._compiler.pending} requests are already waiting")
            if params.constraint is None:
                self._waiting.append(request)
                self._condition.notify_all()
                return
            self._compiler.submit(request)

    def _compiled(self, request: Request, error: BaseException | None) -> None:
        """The compile thread's answer (under `_condition`): queue the request, or end it."""
        if error is None and not self._stopping:
            self._waiting.append(request)
            self._condition.notify_all()
            return
        if error is None:
            request.abort(self.policy_version)
        request.finish(error)

    def call(self, run: Callable[[], T]) -> Future[T]:
        """Run `run()` on the engine thread between steps, holding the model as a step does (see
        `localoai.engine.jobs`); it waits while the engine is paused. `QueueFull` as for `submit`."""
        with self._condition:
            if len(self._waiting) + len(self._jobs) >= self.max_queued_requests:
                raise QueueFull(f"{len(self._waiting) + len(self._jobs)} requests are already waiting")
            future = self._jobs.put(run)
            self._condition.notify_all()
            return future

    @property
    def queue_full(self) -> bool:
        return len(self._waiting) >= self.max_queued_requests

    def stats(self) -> dict[str, int]:
        """What the engine holds now: `waiting` (queued), `running` requests and their `rows`, `jobs`
        (forward passes such as embeddings waiting for the engine thread)."""
        with self._condition:
            return {"waiting": len(self._waiting) + self._compiler.pending, "running": len(self._running),
                    "jobs": len(self._jobs),
                    "rows": len(self._batch.lengths) if self._batch is not None else 0}

    def prefix_cache_stats(self) -> dict[str, int]:
        """The prefix cache's `PrefixCache.stats()` (bytes, blocks, hits, evictions); empty when it is off."""
        return self.prefix_cache.stats() if self.prefix_cache is not None else {}

    # --- pause and resume ----------------------------------------------------------
    def pause(self, mode: PauseMode = "abort", timeout: float | None = None) -> None:
        """Stop decoding at the next step boundary and return once the engine holds the model no more.

        `keep`: running requests freeze (and continue on resume, their caches recomputed);
        `wait`: running requests finish first; `abort`: running and queued requests end now with
        finish reason `abort`. New requests wait in the queue until `resume()` in every mode.
        Pausing a paused engine only waits for it to be parked.
        """
        if mode not in PAUSE_MODES:
            raise ValueError(f"mode must be one of {PAUSE_MODES}, not {mode!r}")
        if threading.current_thread() is self._thread:
            raise RuntimeError("pause() from the engine thread would wait for itself")
        with self._condition:
            if self._pause_mode is None:
                self._pause_mode = mode
                self.observer.paused(mode)
                self._condition.notify_all()
            if not self._condition.wait_for(lambda: self._parked or self._thread is None, timeout):
                self._pause_mode = None
                self._condition.notify_all()
                raise TimeoutError(f"the engine did not pause within {timeout} s")

    def resume(self, *, bump_version: bool = True) -> int:
        """Decode again; the policy version goes up by one when it was paused (unless `bump_version=False`).
        Returns the policy version."""
        with self._condition:
            if self._pause_mode is not None:
                if bump_version:
                    self.policy_version += 1
                self.observer.resumed()
                self._pause_mode = None
                self._parked = False
                self._condition.notify_all()
            return self.policy_version

    @property
    def paused(self) -> bool:
        return self._pause_mode is not None

    # --- the engine thread ---------------------------------------------------------
    def _loop(self) -> None:
        while self._wait_for_work():
            try:
                with one_wakeup_per_loop(), self.model_lock, self.backend.generation_mode():
                    self._step()
            except Exception as exc:  # a failed forward pass fails its batch, never the thread
                logger.exception("generation failed")
                self._fail_running(exc)

    def _wait_for_work(self) -> bool:
        """Block until there is a step to run (False when stopping); park while paused."""
        with self._condition:
            while not self._stopping:
                mode = self._pause_mode
                if mode == "abort" and (self._running or self._waiting) and not self._parked:
                    self._abort_all()
                if mode is not None and (mode != "wait" or not self._running):
                    if not self._parked:
                        self._parked = True
                        self._stale = bool(self._running)
                        self._condition.notify_all()
                    self._condition.wait()
                    continue
                if self._running or ((self._waiting or self._jobs) and mode is None):
                    return True
                self._condition.wait()
            self._abort_all()
            self._jobs.fail_all(RuntimeError("the server stopped"))
            return False

    def _step(self) -> None:
        if self.prefix_cache is not None and self.prefix_cache.version != self.policy_version:
            self.prefix_cache.reset(self.policy_version)  # new weights: nothing computed before may serve
        if self._stale:
            self._rebuild()
        if self._pause_mode is None:
            with self._condition:
                jobs = self._jobs.take()
            for job in jobs:
                job.execute()
            self._admit()
        self._drop(cancelled_only=True)
        if not self._running:
            return
        fed = torch.tensor([token for tokens in sample_running(self._running, self._generator) for token in tokens],
                           dtype=torch.long,
                           device=self.backend.device)
        kept = self._drop(cancelled_only=False)
        deliver_held()  # this step's tokens go out now, while the next forward pass runs
        if not self._running or self._batch is None:
            return
        self.observer.step(len(self._batch.lengths))
        logits = self.backend.decode(self._batch, fed[kept] if len(kept) < fed.shape[0] else fed)
        self._scatter(logits)

    def _admit(self) -> None:
        """Take waiting requests while their rows fit, prefill them (in one forward pass for those that
        need no prompt logprobs, in as few as the logits budget allows for those that do), and join
        them into the batch."""
        admitted = self._take_admissible()
        together = [request for request in admitted if request.params.prompt_logprobs is None]
        scored = [request for request in admitted if request.params.prompt_logprobs is not None]
        for group in ([together] if together else []) + logit_groups(scored, self.backend.vocab_size):
            scoring = group[0].params.prompt_logprobs is not None
            try:
                if scoring:
                    prefill = self.backend.prefill_many([r.prompt_ids for r in group], [r.rows for r in group],
                                                        prompt_logits=True)
                    for request, logits in zip(group, prefill.prompt_logits or []):
                        params = request.params
                        request.stream.put(PromptLogprobs(prompt_logprobs(
                            request.prompt_ids, logits, params.prompt_logprobs or 0, params.prompt_logprob_token_ids)))
                else:
                    prefill = prefill_cached(self.backend, self.prefix_cache, group)
            except Exception as exc:
                logger.exception("prefill failed")
                self._forget(group, exc)
                continue
            row = 0
            for request in group:
                request.admit(self.tokenizer, self.eos_token_ids, prefill.next_logits[row:row + request.rows],
                              self.policy_version)
                if self.prefix_cache is not None:
                    self.prefix_cache.insert(request.prompt_ids, *self.backend.row_kv(prefill.state, row))
                row += request.rows
            self._batch = self.backend.join(self._batch, prefill.state)

    def _take_admissible(self) -> list[Request]:
        """Move the waiting requests that fit into the batch to the running list, in order."""
        with self._condition:
            self._purge_cancelled_waiting()
            rows = len(self._batch.lengths) if self._batch is not None else 0
            taken: list[Request] = []
            while self._waiting:
                needed = self._waiting[0].rows
                if (rows or taken) and (rows + needed > self.max_batch_size or not self.backend.batches):
                    break
                taken.append(self._waiting.popleft())
                rows += needed
            # Rows join in the order the prefills are joined: batched ones first, then the others.
            self._running.extend(r for r in taken if r.params.prompt_logprobs is None)
            self._running.extend(r for r in taken if r.params.prompt_logprobs is not None)
            return taken

    def _forget(self, requests: list[Request], error: BaseException) -> None:
        with self._condition:
            self._running = [r for r in self._running if r not in requests]
        for request in requests:
            request.finish(error)

    def _drop(self, *, cancelled_only: bool) -> list[int]:
        """Remove cancelled (and, unless `cancelled_only`, finished) requests and their rows; return
        the kept rows' indices in the batch as it was."""
        kept_rows: list[int] = []
        kept: list[Request] = []
        row = 0
        for request in self._running:
            if request.stream.cancelled or (not cancelled_only and request.finished):
                if request.done.error is None:
                    if self.prefix_cache is not None and request.samples:
                        remember(self.backend, self.prefix_cache, self._batch, request, range(row, row + request.rows))
                    request.finish()
            else:
                kept.append(request)
                kept_rows.extend(range(row, row + request.rows))
            row += request.rows
        if len(kept) < len(self._running):
            with self._condition:
                self._running = kept
                if self._batch is not None:
                    self._batch = self.backend.keep(self._batch, kept_rows) if kept_rows else None
        return kept_rows

    def _scatter(self, logits: torch.Tensor) -> None:
        parts = logits.split([request.rows for request in self._running])  # one call for every request's view
        for request, part in zip(self._running, parts):
            request.logits, request.logits_version = part, self.policy_version

    def _rebuild(self) -> None:
        """Recompute every running request's cache and next logits with the current weights."""
        self._stale = False
        self._batch = None
        for request in self._running:
            prefill = self.backend.prefill_rows([request.prompt_ids + fed for fed in request.fed])
            request.logits, request.logits_version = prefill.next_logits, self.policy_version
            self._batch = self.backend.join(self._batch, prefill.state)

    def _abort_all(self) -> None:
        """End every running and waiting request with finish reason `abort` (under `_condition`)."""
        for request in [*self._running, *self._waiting]:
            if not request.stream.cancelled:
                request.abort(self.policy_version)
            request.finish()
        self._running, self._batch, self._stale = [], None, False
        self._waiting.clear()

    def _fail_running(self, error: BaseException) -> None:
        with self._condition:
            for request in self._running:
                request.finish(error)
            self._running, self._batch, self._stale = [], None, False

    def _purge_cancelled_waiting(self) -> None:
        if any(request.stream.cancelled for request in self._waiting):
            for request in [r for r in self._waiting if r.stream.cancelled]:
                self._waiting.remove(request)
                request.finish()
