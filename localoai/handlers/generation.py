"""One submitted generation (`Generation`) and the trace it keeps of each sample (`SampleTrace`)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from localoai.engine.interface import QueueFull, check_supported
from localoai.engine.params import PromptLogprobs, RequestDone, SampleDelta, SamplingParams, joined_deltas
from localoai.engine.stream import RequestStream
from localoai.errors import RateLimitError, ServerError
from localoai.served import Services
from localoai.store.records import CompletionTrace, RecordStatus


@dataclass
class SampleTrace:
    """What one sample produced, token for token, as the engine reported it."""

    token_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    text: list[str] = field(default_factory=list)
    finish_reason: str | None = None
    tool_parse_error: str | None = None
    """Why tool-call markup in the output could not be parsed (it was returned as text)."""
    reasoning: str | None = None
    """The reasoning the output parser found in `text` (returned as `reasoning_content` / reasoning items)."""
    policy_versions: list[list[int]] = field(default_factory=list)
    """`[start_token_index, version]` spans: which weights' version produced each token."""

    def add(self, delta: SampleDelta) -> None:
        if delta.token_ids and (not self.policy_versions or self.policy_versions[-1][1] != delta.policy_version):
            self.policy_versions.append([len(self.token_ids), delta.policy_version])
        self.token_ids.extend(delta.token_ids)
        self.logprobs.extend(entry.logprob for entry in delta.logprobs)
        self.text.append(delta.text)
        self.finish_reason = delta.finish_reason or self.finish_reason

    def version_spans(self) -> list[tuple[int, int]]:
        """`(tokens, version)`: how many tokens each run of one policy version produced."""
        ends = [start for start, _ in self.policy_versions[1:]] + [len(self.token_ids)]
        return [(end - start, version) for (start, version), end in zip(self.policy_versions, ends)]

    def as_record(self, index: int) -> CompletionTrace:
        trace = CompletionTrace(index=index, completion_token_ids=self.token_ids, logprobs=self.logprobs,
                                text="".join(self.text), finish_reason=self.finish_reason,
                                policy_versions=self.policy_versions)
        if self.tool_parse_error is not None:
            trace["tool_parse_error"] = self.tool_parse_error
        if self.reasoning is not None:
            trace["reasoning_content"] = self.reasoning
        return trace


class Generation:
    """One submitted generation: iterate its outputs, and it keeps the trace as they go by.

    Leaving its `running()` block before the end (a client disconnect, a failure) cancels the
    generation on the engine; `status` then says how it ended. `live=False` (an answer nobody
    reads before it is complete) delivers every output at once at the end (`RequestStream`'s
    `each_step=False`): the same items in the same order, without a wake-up per step. With
    `steps=False` as well (a reader that needs no step boundaries: no per-step counts, no per-step
    offsets) each sample's deltas come joined, one per policy version (`joined_deltas`), so the
    reader shapes one delta per sample rather than one per token.
    """

    def __init__(self, services: Services, prompt_ids: list[int], params: SamplingParams, *,
                 live: bool = True, steps: bool = True) -> None:
        self.params = params
        self._joined = not (live or steps)
        self.samples = [SampleTrace() for _ in range(params.n)]
        self.timings: dict[str, float] = {}
        self.cached_tokens = 0
        """Prompt tokens whose KV the prefix cache supplied (known at the end)."""
        self.status: RecordStatus = "in_progress"
        self.error: dict[str, Any] | None = None
        self.policy_version = services.policy_version
        """The version at the start: the first token's, or the server's at submission if none came."""
        self._services = services
        self._prompt_tokens = len(prompt_ids)
        check_supported(services.engine.capabilities, params)
        self._stream = RequestStream(each_step=live)
        try:
            services.engine.submit(prompt_ids, params, self._stream)
        except QueueFull:
            services.metrics.queue_rejected()
            self.status = "cancelled"
            raise RateLimitError(
                "Too many requests are waiting for the model; try again shortly.", retry_after=1
            ) from None

    @classmethod
    @asynccontextmanager
    async def running(
        cls, services: Services, prompt_ids: list[int], params: SamplingParams, *, live: bool = True,
        steps: bool = True,
    ) -> AsyncIterator[Generation]:
        generation = cls(services, prompt_ids, params, live=live, steps=steps)
        try:
            yield generation
        finally:
            if generation.status == "in_progress":
                generation._stream.cancel()
                generation.status = "cancelled"

    async def __aiter__(self) -> AsyncIterator[list[SampleDelta] | PromptLogprobs]:
        async for item in self._stream:
            if isinstance(item, RequestDone):
                self.timings, self.cached_tokens = item.timings, item.cached_tokens
                self.status = "failed" if item.error is not None else "completed"
                self._observe()
                if item.error is not None:
                    self.error = {"type": type(item.error).__name__, "message": str(item.error)}
                    raise ServerError("The model failed while generating this response.") from item.error
                return
            if isinstance(item, list):
                if self._joined:
                    item = joined_deltas(item)
                for delta in item:
                    if delta.token_ids and not any(sample.token_ids for sample in self.samples):
                        self.policy_version = delta.policy_version
                    self.samples[delta.index].add(delta)
            yield item

    def _observe(self) -> None:
        """Count the ended generation in the server's metrics (once, at its end)."""
        spans = [sample.version_spans() for sample in self.samples]
        self._services.metrics.generation(status=self.status, prompt_tokens=self._prompt_tokens, samples=spans,
                                        timings=self.timings, current_version=self._services.policy_version,
                                        cached_tokens=self.cached_tokens)

    def traces(self, first_index: int = 0) -> list[CompletionTrace]:
        return [sample.as_record(first_index + i) for i, sample in enumerate(self.samples)]
