"""The Responses event stream of one response (`ResponseStream`): its generation round(s) in one
`GenerationRun`, shaped into events by `ResponseEvents`, hosted tool calls run between rounds.

With `include: ["message.output_text.logprobs"]` each text delta carries its tokens' logprobs
(`common.token_logprob`, as chat shows them). Tokens without text (a partial character) lend
theirs to the next text, and so do tokens whose text the output parser holds back; with a parser,
a step's logprobs go with the content text of that step only (reasoning and tool-call markup
have none).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from openai.types.responses import Response, ResponseStreamEvent

from localoai.engine.params import SampleDelta
from localoai.errors import ServerError
from localoai.handlers.common import token_logprob
from localoai.handlers.recording import RecordFields, written
from localoai.handlers.responses.events import TERMINAL_EVENTS, ResponseEvents, usage
from localoai.handlers.responses.inputs import KIND, PreparedResponse, ResponseInputs
from localoai.handlers.run import GenerationRun
from localoai.parsers.output import OutputPiece, OutputStream, ReasoningDelta
from localoai.served import LoadedModel, Services
from localoai.store.records import RecordStatus

MAX_HOSTED_ROUNDS = 8
"""Rounds of hosted tool calls (`start(hosted_tools=...)`) one response may run before it ends."""
FAILED = "The model failed while generating this response."


@dataclass
class ResponseFold:
    """Events folded into the `Response` a non-streamed request returns: OpenAI's terminal event
    carries the whole response, which the builder accumulated from the very deltas it sent."""

    final: Response | None = None
    failed: bool = False

    def add(self, event: ResponseStreamEvent) -> ResponseStreamEvent:
        if event.type in TERMINAL_EVENTS:
            self.final, self.failed = event.response, event.type == "response.failed"  # type: ignore[union-attr]
        return event

    def result(self) -> Response:
        if self.failed:
            raise ServerError(FAILED)
        if self.final is None:
            raise ValueError("the event stream has no terminal event")
        return self.final


@dataclass
class ResponseStream:
    """One response as it is generated: its event builder and its generation run."""

    prepared: PreparedResponse
    build: ResponseEvents
    run: GenerationRun = field(init=False)
    live: bool = True
    fold: ResponseFold = field(default_factory=ResponseFold)
    """Every event goes through it: the non-streamed answer is its result."""
    """False when nobody reads an event before the last (see `Generation`)."""

    @property
    def id(self) -> str:
        return str(self.build.settings["id"])

    def bind(self, services: Services) -> ResponseStream:
        self.run = GenerationRun(services, self._fields(), lambda: self.build.snapshot("cancelled"))
        return self

    def _fields(self) -> RecordFields:
        prepared, request = self.prepared, self.prepared.request
        return RecordFields(
            model=str(self.build.settings["model"]),
            record_id=self.id, kind=KIND, created=self.build.settings["created_at"], request=request,
            prompt_text=prepared.prompt.text, prompt_token_ids=prepared.prompt.token_ids,
            metadata=request.metadata, visible=request.store is not False,
            previous_response_id=request.previous_response_id, input_items=prepared.items,
            tools_not_offered=prepared.offered.not_offered, episode=prepared.episode)

    def continue_with(self, prepared: PreparedResponse) -> None:
        """The next round after hosted tool calls: its prompt is what the record shows from now on."""
        self.prepared = prepared
        self.run.fields = self._fields()

    def record(self, response: Response, *, status: RecordStatus | None = None,
               record_id: str | None = None) -> Future[bool]:
        return self.run.record(response, status=status, record_id=record_id)


async def response_events(model: LoadedModel, services: Services, inputs: ResponseInputs,
                          stream: ResponseStream) -> AsyncIterator[ResponseStreamEvent]:
    """The events of one response, each through `stream.fold`; recorded exactly once (see
    `GenerationRun`), a cancelled one as it stands (`GenerationRun.unfinished_write`)."""
    async for event in _events(model, services, inputs, stream):
        yield stream.fold.add(event)


async def _events(model: LoadedModel, services: Services, inputs: ResponseInputs,
                  stream: ResponseStream) -> AsyncIterator[ResponseStreamEvent]:
    build = stream.build
    with_logprobs = stream.prepared.params.logprobs is not None
    pending: list[dict[str, Any]] = []  # logprobs of tokens whose text has not been sent yet
    async with stream.run as run:
        yield build.created("queued" if build.settings["background"] else "in_progress")
        yield build.in_progress()
        if stream.prepared.compaction is not None:  # made before the answer (`context_management`)
            for event in build.whole_item(stream.prepared.compaction):
                yield event
        for hosted_round in range(MAX_HOSTED_ROUNDS + 1):
            prepared, first_item = stream.prepared, len(build.items)
            calls = prepared.output_parser.stream() if prepared.output_parser else None
            try:
                # Reasoning tokens are counted per step (below): a reasoning model keeps its steps.
                async with run.generate(prepared.prompt.token_ids, prepared.params, live=stream.live,
                                        steps=model.reasoning_format is not None) as generation:
                    async for item in generation:
                        if not isinstance(item, list):
                            continue
                        for delta in item:
                            if with_logprobs:
                                pending += [token_logprob(model, entry) for entry in delta.logprobs]
                            was_reasoning = calls is not None and calls.in_reasoning
                            events = _shaped(build, calls, delta, pending)
                            if was_reasoning or (calls is not None and calls.in_reasoning):
                                run.counts.reasoning += len(delta.token_ids)
                            for event in events:
                                yield event
            except ServerError:  # the engine failed; its cause is in the record and the log
                failed = build.failed(FAILED)
                await run.finish(failed.response)
                yield failed
                return
            sample = generation.samples[0]
            if calls is not None:
                for event in _parsed(build, calls.finish()):  # nothing left if the last delta ended it
                    yield event
                sample.tool_parse_error = "; ".join(filter(None, [calls.error, *build.call_errors])) or None
                sample.reasoning = build.reasoning or None
            hosted = build.pending_hosted()
            if not hosted:
                break
            # The model called a hosted tool the server runs: this round is recorded on its own,
            # the calls run (off the loop), and the model goes on from their results.
            await written(stream.record(build.snapshot("completed"), record_id=f"{stream.id}_{hosted_round}"))
            for call in hosted:
                result = await asyncio.to_thread(services.hosted_tools.run, call)
                for event in build.hosted_done(call, result):
                    yield event
            if sample.finish_reason != "stop" or hosted_round == MAX_HOSTED_ROUNDS \
                    or not build.only_hosted_calls_since(first_item):
                break  # out of tokens or rounds, or the client has calls of its own to run
            stream.continue_with(await inputs.continued(prepared, build.output()[first_item:], run.counts.output))
        counts = run.counts
        closing = build.finished(usage(counts.prompt, counts.output, counts.reasoning, counts.cached),
                                 incomplete=sample.finish_reason != "stop")
        await run.finish(closing[-1].response)  # type: ignore[union-attr]
        await inputs.append_to_conversation(stream.prepared, closing[-1].response)  # type: ignore[union-attr]
        for event in closing:
            yield event


def _shaped(
    build: ResponseEvents, calls: OutputStream | None, delta: SampleDelta, pending: list[dict[str, Any]],
) -> list[ResponseStreamEvent]:
    """The events for one step of the sample: its text as content, or through the output parser.
    `pending` (the logprobs not sent yet) is emptied once text carries them."""
    if calls is None:
        if not delta.text:
            return []
        events = build.text_delta(delta.text, pending[:])
        pending.clear()
        return events
    parsed = calls.feed(delta.text) if delta.text else []
    if delta.finish_reason is not None:
        parsed += calls.finish()
    if not parsed:  # text held back by the parser: its tokens' logprobs wait for the text they belong to
        return []
    events = _parsed(build, parsed, pending[:])
    pending.clear()
    return events


def _parsed(
    build: ResponseEvents, parsed: list[OutputPiece], logprobs: list[dict[str, Any]] | None = None,
) -> list[ResponseStreamEvent]:
    """Events for parsed pieces; `logprobs` go with the first content piece."""
    events: list[ResponseStreamEvent] = []
    for piece in parsed:
        if isinstance(piece, ReasoningDelta):
            events += build.reasoning_delta(piece.text)
        elif piece.index is not None:
            events += build.call_delta(piece)
        elif piece.content:
            events += build.text_delta(piece.content, logprobs)
            logprobs = None
    return events
