"""The vLLM engine: `localoai.engine.interface.GenerationEngine` over vLLM's `AsyncLLM` (issue #13).

`localoai.start(model, tokenizer, engine="vllm", engine_options={...})` serves the live model through
vLLM instead of the local decode loop. vLLM is imported only here, and only when asked for.

- **Its own copy of the weights**, loaded from the live module (`localoai.engine.vllm_weights`):
  vLLM's model is built from the live model's config and tokenizer; leaving `server.pause()` pushes
  the live weights into it (with `bump_version=False`, only when a parameter's storage or version
  counter moved), then bumps the policy version.
- **Its own event loop on its own thread** (`localoai-vllm`): `AsyncLLM` is asyncio; the server's
  loop thread calls `submit` / `pause` / `resume`, which hand coroutines to that loop. Each sample
  of a request is one vLLM request whose outputs (vLLM's `DELTA` kind, token ids and logprobs, no
  text) become `SampleDelta`s on the request's `RequestStream` (`localoai.engine.vllm_outputs`),
  delivered to the server's loop once per vLLM output batch (`_put`), which `observer.step` counts.
- **Pause**: `pause(mode)` is vLLM's `pause_generation(mode=..., clear_cache=True)`: `keep`
  preempts the running requests (their KV is recomputed on resume, with the new weights), `wait`
  drains them, `abort` ends them; the prefix cache is cleared, and every prompt is salted with the
  policy version (`cache_salt`), so nothing computed by old weights serves new ones.
- **Fidelity**: `logprobs_mode="processed_logprobs"` (the logprobs of the distribution sampled
  from); the grammar goes to vLLM's llguidance backend as `structured_outputs.grammar`.
- **Prompt logprobs** come from sample 0's vLLM request (raw logits, with ranks), before any token.
- **Refused**: embeddings and `call()` (left out of `capabilities`); `prompt_logprob_token_ids`
  (a 400 from `submit`: vLLM 0.32 scores given tokens on its V2 model runner only).

`engine_options` are vLLM's `AsyncEngineArgs` (`gpu_memory_utilization`, `max_model_len`,
`tensor_parallel_size`, `max_num_seqs`, `enforce_eager`, ...), over the defaults in `localoai.engine.vllm_options.ENGINE_DEFAULTS`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from localoai.engine.interface import (
    DEFAULT_MAX_QUEUED_REQUESTS,
    PAUSE_MODES,
    Capabilities,
    EngineObserver,
    PauseMode,
    Pooling,
    QueueFull,
    Unobserved,
)
from localoai.engine.params import RequestDone, SampleDelta, SamplingParams
from localoai.engine.stream import RequestStream, StreamItem, one_wakeup_per_loop
from localoai.engine.vllm_options import check_engine_options, engine_arguments, require_vllm
from localoai.engine.vllm_outputs import SampleFeed, prompt_entries, vllm_sampling_params
from localoai.engine.vllm_weights import model_directory, remove_directory, weights_fingerprint, write_weights
from localoai.errors import UnsupportedFieldError

logger = logging.getLogger("localoai.engine.vllm")

T = TypeVar("T")

CANCEL_POLL = 0.05
"""Seconds between looks at the streams a client cancelled (a cancel is a `threading.Event`)."""


@dataclass
class _Live:
    """One request in flight: its stream, one `SampleFeed` per sample, its task on the vLLM loop."""

    id: str
    prompt_ids: list[int]
    params: SamplingParams
    stream: RequestStream
    feeds: list[SampleFeed]
    done: RequestDone = field(default_factory=RequestDone)
    queued_at: float = field(default_factory=time.perf_counter)
    task: asyncio.Task[None] | None = None
    prompt_published: asyncio.Event | None = None
    """Set once `PromptLogprobs` are on the stream (when asked for): no delta may come before them."""


class VLLMEngine:
    """`GenerationEngine` over vLLM's `AsyncLLM` (see the module docstring)."""

    def __init__(self, model: Any, tokenizer: Any, eos_token_ids: Sequence[int], *,
                 engine_options: Mapping[str, Any] | None = None,
                 max_queued_requests: int = DEFAULT_MAX_QUEUED_REQUESTS) -> None:
        require_vllm()
        check_engine_options(engine_options or {})
        self.model = model
        self.tokenizer = tokenizer
        self.eos_token_ids = tuple(eos_token_ids)
        self.max_queued_requests = max_queued_requests
        self.policy_version = 0
        self.observer: EngineObserver = Unobserved()
        self._ids = itertools.count()
        self._lock = threading.Lock()
        self._live: dict[str, _Live] = {}
        self._pause_mode: PauseMode | None = None
        self._outbox: list[tuple[RequestStream, StreamItem]] = []
        """Stream items queued on the vLLM loop since its last `_flush` (that loop's thread only)."""
        self._directory: Path = model_directory(model, tokenizer)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="localoai-vllm", daemon=True)
        self._thread.start()
        try:
            write_weights(model, self._directory)
            self._pushed = weights_fingerprint(model)
            self._llm = self._run(self._build(dict(engine_options or {})))
        except BaseException:
            self._close_loop()
            remove_directory(self._directory)
            raise
        finally:
            (self._directory / "model.safetensors").unlink(missing_ok=True)
        config = self._llm.vllm_config
        self._context_length = int(config.model_config.max_model_len)
        self._vocab_size = int(config.model_config.get_vocab_size())
        self.max_batch_size = int(config.scheduler_config.max_num_seqs)
        self.capabilities = Capabilities(top_logprobs=int(config.model_config.max_logprobs), embeddings=False,
                                         call=False)
        self._watcher = self._run_soon(self._watch_cancelled())

    async def _build(self, options: dict[str, Any]) -> Any:
        from vllm.v1.engine.async_llm import AsyncLLM

        dtype = str(next(self.model.parameters()).dtype).removeprefix("torch.")
        return AsyncLLM.from_engine_args(engine_arguments(self._directory, dtype, options))

    # --- the interface's reads ---------------------------------------------------------
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
    def vllm_config(self) -> Any:
        """vLLM's `VllmConfig` as it runs (what `engine_options` became)."""
        return self._llm.vllm_config

    @property
    def queue_full(self) -> bool:
        return self.stats()["waiting"] >= self.max_queued_requests

    def stats(self) -> dict[str, int]:
        """Requests in flight here; `waiting` is the rows beyond vLLM's `max_num_seqs` (vLLM's queue)."""
        with self._lock:
            rows = sum(live.params.n for live in self._live.values())
            return {"waiting": max(0, rows - self.max_batch_size), "running": len(self._live), "jobs": 0,
                    "rows": min(rows, self.max_batch_size)}

    def prefix_cache_stats(self) -> dict[str, int]:
        return {}

    # --- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        """vLLM started when the engine was built (so that a failure surfaces in `localoai.start`)."""

    def stop(self, timeout: float = 10.0) -> None:
        if not self._loop.is_running():
            return
        self._watcher.cancel()
        with contextlib.suppress(Exception):
            self._run(self._abort_all(), timeout)
        with contextlib.suppress(Exception):
            self._run(self._shutdown(), timeout)
        self._close_loop(timeout)
        remove_directory(self._directory)

    async def _shutdown(self) -> None:
        self._llm.shutdown()  # on its loop: it cancels its output handler, a task of that loop

    def _close_loop(self, timeout: float = 10.0) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout)
        if not self._thread.is_alive():
            self._loop.close()

    # --- requests --------------------------------------------------------------------------
    def submit(self, prompt_ids: list[int], params: SamplingParams, stream: RequestStream) -> None:
        if params.prompt_logprob_token_ids:  # vLLM 0.32 computes them on its V2 model runner only
            raise UnsupportedFieldError("Unsupported parameter: 'prompt_logprob_token_ids': the vLLM engine does "
                                        "not score given tokens yet.", param="prompt_logprob_token_ids")
        if self.queue_full:
            raise QueueFull(f"{self.stats()['waiting']} requests are already waiting")
        feeds = [SampleFeed(i, self.tokenizer, params, self.eos_token_ids) for i in range(params.n)]
        live = _Live(f"localoai-{next(self._ids)}", list(prompt_ids), params, stream, feeds)
        with self._lock:
            self._live[live.id] = live
        self._loop.call_soon_threadsafe(self._launch, live)

    def call(self, run: Callable[[], T]) -> Future[T]:
        raise NotImplementedError("the vLLM engine runs no callables on its model (capabilities.call is False)")

    def embed(self, prompts: Sequence[Sequence[int]], pooling: Pooling, normalize: bool) -> Any:
        raise NotImplementedError("the vLLM engine computes no embeddings (capabilities.embeddings is False)")

    # --- pause and resume ------------------------------------------------------------------
    def pause(self, mode: PauseMode = "abort", timeout: float | None = None) -> None:
        """vLLM's `pause_generation(mode)`, with its caches cleared; see `Engine.pause` for the modes."""
        if mode not in PAUSE_MODES:
            raise ValueError(f"mode must be one of {PAUSE_MODES}, not {mode!r}")
        if threading.current_thread() is self._thread:
            raise RuntimeError("pause() from the vLLM engine's own thread would wait for itself")
        with self._lock:
            first = self._pause_mode is None
            if first:
                self._pause_mode = mode
        if first:
            self.observer.paused(mode)
        future = asyncio.run_coroutine_threadsafe(self._llm.pause_generation(mode=mode, clear_cache=True), self._loop)
        try:
            future.result(timeout)
        except TimeoutError:
            future.cancel()
            self._run(self._llm.resume_generation())
            with self._lock:
                self._pause_mode = None
            raise TimeoutError(f"the engine did not pause within {timeout} s") from None

    def resume(self, *, bump_version: bool = True) -> int:
        """Push the live weights into vLLM, bump the policy version (unless `bump_version=False`), resume
        generating. Returns the policy version. With `bump_version=False` the weights are pushed only
        if a parameter's storage or version counter moved (a write through `param.data` moves neither:
        leaving a pause that bumps the version always pushes)."""
        if self._pause_mode is None:
            return self.policy_version
        if bump_version or weights_fingerprint(self.model) != self._pushed:
            self.push_weights()
        if bump_version:
            self.policy_version += 1
        self._run(self._llm.resume_generation())
        self._pause_mode = None
        self.observer.resumed()
        return self.policy_version

    def push_weights(self) -> float:
        """Write the live weights (adapters merged) and have vLLM's workers reload them; the seconds it took.
        Called by `resume()` when they changed; call it under `pause()` only."""
        started = time.perf_counter()
        try:
            write_weights(self.model, self._directory)
            self._run(self._llm.collective_rpc("reload_weights", kwargs={"weights_path": str(self._directory)}))
            self._run(self._llm.reset_prefix_cache())
        finally:
            (self._directory / "model.safetensors").unlink(missing_ok=True)
        self._pushed = weights_fingerprint(self.model)
        seconds = time.perf_counter() - started
        logger.info("pushed the live weights into vLLM in %.2f s", seconds)
        return seconds

    # --- the vLLM loop's side --------------------------------------------------------------
    def _run(self, coroutine: Any, timeout: float | None = None) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    def _run_soon(self, coroutine: Any) -> Future[Any]:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop)

    def _launch(self, live: _Live) -> None:
        live.task = self._loop.create_task(self._serve(live))

    async def _serve(self, live: _Live) -> None:
        """Run every sample of `live`, then end its stream with `RequestDone`."""
        try:
            if live.params.prompt_logprobs is not None:
                live.prompt_published = asyncio.Event()
            if live.params.max_tokens == 0:
                if live.params.prompt_logprobs is not None:  # vLLM generates at least one token: read, drop it
                    await self._sample(live, 0, prompt_only=True)
                self._put(live.stream, [SampleDelta(i, [], "", finish_reason="length",
                                                    policy_version=self.policy_version) for i in range(live.params.n)])
            else:
                samples = [asyncio.ensure_future(self._sample(live, i)) for i in range(live.params.n)]
                try:
                    await asyncio.gather(*samples)
                finally:  # one sample failed: the others stop too (their vLLM requests are aborted)
                    for sample in samples:
                        sample.cancel()
        except asyncio.CancelledError:  # the client went away (`_watch_cancelled`) or the engine stops
            if not live.stream.cancelled:
                self._close_unfinished(live)
        except Exception as exc:  # a failed request fails its stream, never the loop
            logger.exception("vLLM generation failed")
            live.done.error = exc
        finally:
            with self._lock:
                self._live.pop(live.id, None)
            live.done.timings["total"] = time.perf_counter() - live.queued_at
            live.done.timings.setdefault("queued", live.done.timings["total"])
            self._put(live.stream, live.done)

    async def _sample(self, live: _Live, index: int, *, prompt_only: bool = False) -> None:
        """Sample `index` of `live` as one vLLM request (`prompt_only`: its prompt logprobs, no output)."""
        from vllm.inputs.engine import tokens_input

        feed = live.feeds[index]
        params = vllm_sampling_params(live.params, index, self.eos_token_ids, max_tokens=1 if prompt_only else None)
        prompt = tokens_input(live.prompt_ids, cache_salt=f"localoai-v{self.policy_version}")
        outputs = self._llm.generate(prompt, params, request_id=f"{live.id}-{index}")
        published = live.prompt_published
        try:
            async with contextlib.aclosing(outputs):  # leaving early (a stop string) aborts vLLM's request
                async for output in outputs:
                    if index == 0 and published is not None and not published.is_set():
                        if output.prompt_logprobs is not None:
                            self._put(live.stream, prompt_entries(live.prompt_ids, output.prompt_logprobs,
                                                                  live.params.prompt_logprobs or 0))
                        published.set()
                    if prompt_only:
                        break
                    if published is not None and not published.is_set():
                        await published.wait()  # the other samples' tokens wait for sample 0's prompt logprobs
                    self._take(live, index, output)
                    if feed.finished or live.stream.cancelled:
                        break
        finally:
            if index == 0 and published is not None:
                published.set()
        if not prompt_only and not feed.finished and not live.stream.cancelled:  # vLLM ended without saying why
            self._put(live.stream, [feed.close(self.policy_version)])

    def _take(self, live: _Live, index: int, output: Any) -> None:
        """One vLLM output of sample `index` onto the stream."""
        feed = live.feeds[index]
        if index == 0 and "first_token" not in live.done.timings:
            live.done.timings["first_token"] = time.perf_counter() - live.queued_at
            live.done.cached_tokens = output.num_cached_tokens or 0  # vLLM's prefix cache: usage's cached_tokens
        completion = output.outputs[0]
        delta = feed.feed(list(completion.token_ids), completion.logprobs, completion.finish_reason,
                          self.policy_version)
        if delta.token_ids or delta.text or delta.finish_reason is not None:
            self._put(live.stream, [delta])

    def _put(self, stream: RequestStream, item: StreamItem) -> None:
        """Queue `item` for `stream` (vLLM loop only); `_flush` delivers what this loop iteration queued.

        vLLM's output handler wakes every request's task of an engine step in one loop iteration; a
        flush scheduled by the first of them runs after all of them, so a step's deltas reach the
        server's loop with one wake-up (`one_wakeup_per_loop`), not one `call_soon_threadsafe` each."""
        self._outbox.append((stream, item))
        if len(self._outbox) == 1:
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        outbox, self._outbox = self._outbox, []
        if not outbox:
            return
        with one_wakeup_per_loop():
            for stream, item in outbox:
                stream.put(item)
        rows = sum(1 for _, item in outbox if isinstance(item, list) for delta in item if delta.token_ids)
        if rows:  # the samples that got tokens this iteration: about one vLLM engine step's batch
            self.observer.step(rows)

    def _close_unfinished(self, live: _Live) -> None:
        deltas = [feed.close(self.policy_version) for feed in live.feeds if not feed.finished]
        if deltas:
            self._put(live.stream, deltas)

    async def _watch_cancelled(self) -> None:
        while True:
            await asyncio.sleep(CANCEL_POLL)
            with self._lock:
                gone = [live for live in self._live.values() if live.stream.cancelled]
            for live in gone:
                if live.task is not None and not live.task.done():
                    live.task.cancel()

    async def _abort_all(self) -> None:
        with self._lock:
            tasks = [live.task for live in self._live.values() if live.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._flush()
