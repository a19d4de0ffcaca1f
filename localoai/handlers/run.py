"""One generation run and one fold, used by every generating family.

`GenerationRun`: submit to the engine (`generate`, once or more: Responses' hosted-tool rounds),
keep the trace, count the tokens (`TokenCounts`), and record exactly once whatever happens:
`finish` records and awaits the write; leaving the run's block without it (a failure, a client
gone, a cancelled task) records what the fold holds so far, without waiting.

`Fold`: shaped steps in, the non-streamed object out. A family's stream passes each step through
its fold; a non-streamed request drains the same stream (`folded`) and answers the fold's
result, which is also what the record keeps, so streamed and non-streamed agree by construction.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future
from contextlib import asynccontextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol, TypeVar

from pydantic import BaseModel

from localoai.engine.params import SamplingParams
from localoai.handlers.generation import Generation
from localoai.handlers.recording import RecordFields, record_generation, written
from localoai.served import Services
from localoai.store.records import RecordStatus

S = TypeVar("S")
R = TypeVar("R", covariant=True)


class Fold(Protocol[S, R]):
    """Shaped steps folded, as they go by, into the object a non-streamed request returns."""

    def add(self, step: S) -> S:
        """Fold one step in; return it (to be streamed)."""
        ...

    def result(self) -> R:
        """The non-streamed object of the steps folded so far."""
        ...


async def folded(steps: AsyncIterator[Any], fold: Fold[Any, R]) -> R:
    """Drain a family's stream, whose steps go through `fold`; the fold's result."""
    async for _ in steps:
        pass
    return fold.result()


@dataclass
class TokenCounts:
    """Tokens over every generation of a run: the prompt's (cached among them), the output's
    (reasoning among them)."""

    prompt: int = 0
    output: int = 0
    cached: int = 0
    reasoning: int = 0


class GenerationRun:
    """One request's generation(s) and its record, written exactly once (see the module)."""

    def __init__(self, services: Services, fields: RecordFields,
                 snapshot: Callable[[], BaseModel | None]) -> None:
        self.fields = fields
        """What the record says besides generation and output (Responses updates the prompt per round)."""
        self.generation: Generation | None = None
        """The latest generation submitted."""
        self.counts = TokenCounts()
        self.unfinished_write: Future[bool] | None = None
        """The write of the record of a run left unfinished (failed or cancelled)."""
        self._services = services
        self._snapshot = snapshot
        self._recorded = False

    async def __aenter__(self) -> GenerationRun:
        return self

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None,
                        traceback: TracebackType | None) -> None:
        self.abandon()

    def abandon(self) -> None:
        """Record the run as it stands (failed or cancelled), without waiting (`unfinished_write`);
        nothing when it was recorded already."""
        if not self._recorded:
            self._recorded = True
            self.unfinished_write = self.record(self._snapshot())

    @asynccontextmanager
    async def generate(self, prompt_ids: list[int], params: SamplingParams, *,
                       live: bool = True, steps: bool = True) -> AsyncIterator[Generation]:
        """Submit one generation (see `Generation.running`); its tokens are counted once it ends."""
        async with Generation.running(self._services, prompt_ids, params, live=live, steps=steps) as generation:
            self.generation = generation
            yield generation
        self.counts.prompt += len(prompt_ids)
        self.counts.output += sum(len(sample.token_ids) for sample in generation.samples)
        self.counts.cached += generation.cached_tokens

    async def finish(self, output: BaseModel | None) -> None:
        """Record the run with its final `output` and wait for the write (a lost record raises)."""
        self._recorded = True
        await written(self.record(output))

    def record(self, output: BaseModel | None, *, status: RecordStatus | None = None,
               record_id: str | None = None) -> Future[bool]:
        """Queue a record of the run as it stands. `record_id`: a side record (a round before the last
        of a response that ran hosted tools): not visible in the API, not in the episode."""
        fields = self.fields
        if record_id is not None:
            fields = dataclasses.replace(fields, record_id=record_id, visible=False, episode=None)
        return record_generation(self._services, fields, self.generation, output, status=status)
