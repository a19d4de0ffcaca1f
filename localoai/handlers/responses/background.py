"""`background: true` responses: the same event stream run in an asyncio task on the server loop,
kept by response id until it ends. The create call answers at once with the `queued` response,
recorded "in_progress" so that `GET /v1/responses/{id}` can poll it; the task records it again as
it starts and when it ends. `cancel` cancels the task, which leaves the `Generation` block (the
engine stops at its next decode step) and records the response `cancelled`. A streamed background
response sends the task's events; a client that goes away stops reading them, not the task."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from openai.types.responses import Response, ResponseStreamEvent

from localoai.handlers.recording import written
from localoai.handlers.responses.stream import ResponseStream

logger = logging.getLogger(__name__)


@dataclass
class _Task:
    stream: ResponseStream
    task: asyncio.Task[None]


class BackgroundResponses:
    """Background responses still running, by response id; each removes itself when it ends."""

    def __init__(self, events: Callable[[ResponseStream], AsyncIterator[ResponseStreamEvent]]) -> None:
        self._events = events
        self.running: dict[str, _Task] = {}

    async def start(
        self, stream: ResponseStream, *, sse: bool = False,
    ) -> tuple[Response, AsyncIterator[ResponseStreamEvent] | None]:
        """Start a background response: the `queued` response (recorded before this returns, so
        it can be polled), and with `sse` the events of the task as it runs."""
        queued = stream.build.response("queued", [])
        write = stream.record(queued, status="in_progress")  # written before any of the task's
        sink: asyncio.Queue[ResponseStreamEvent | None] | None = asyncio.Queue() if sse else None
        task = asyncio.create_task(self._run(stream, sink), name=f"response {stream.id}")
        task.add_done_callback(functools.partial(self._ended_task, stream, sink))
        self.running[stream.id] = _Task(stream, task)  # registered before a cancel can see the record
        await written(write)
        return queued, (_drained(sink) if sink is not None else None)

    async def _run(self, stream: ResponseStream, sink: asyncio.Queue[ResponseStreamEvent | None] | None) -> None:
        try:
            async for event in self._events(stream):
                if event.type == "response.in_progress":  # pollers see it start
                    stream.record(event.response, status="in_progress")  # type: ignore[union-attr]
                if sink is not None:
                    sink.put_nowait(event)
        except Exception:  # noqa: BLE001 - a task's failure has no caller to go to; it is recorded
            logger.exception("background response %s failed", stream.id)

    def _ended_task(self, stream: ResponseStream, sink: asyncio.Queue[ResponseStreamEvent | None] | None,
                    task: asyncio.Task[None]) -> None:
        """The task's done callback, whichever way it ended, also cancelled before its first step
        (the server stopping as it starts), when `_run` never ran: the response is recorded
        `cancelled` then (the run's own exit recorded it otherwise), and its entry and sink end."""
        self.running.pop(stream.id, None)
        if task.cancelled():
            stream.run.abandon()
        if sink is not None:
            sink.put_nowait(None)

    async def cancel(self, response_id: str) -> None:
        """Stop a background response running here (no-op otherwise): its task is cancelled, the
        engine stops at its next decode step, and the `cancelled` record is written before this
        returns. What the client gets back is the stored response (see `StoredResponses.cancel`)."""
        running = self.running.get(response_id)
        if running is None or running.task.done():
            return
        running.task.cancel()
        await self._ended(running)

    async def cancel_all(self) -> None:
        """Cancel every background response still running: the server is stopping, and a record
        left `in_progress` would never end. Each is recorded `cancelled` before this returns."""
        for response_id in list(self.running):
            await self.cancel(response_id)

    async def finished(self, response_id: str) -> None:
        """Wait until a background response running here has ended and its record is written (at
        once when none runs). Cancelling the waiter leaves the response running."""
        running = self.running.get(response_id)
        if running is not None:
            await self._ended(running)

    @staticmethod
    async def _ended(running: _Task) -> None:
        await asyncio.wait({running.task})
        if running.stream.run.unfinished_write is not None:
            await written(running.stream.run.unfinished_write, required=False)


async def _drained(sink: asyncio.Queue[ResponseStreamEvent | None]) -> AsyncIterator[ResponseStreamEvent]:
    """A background task's events as it sends them, until it ends."""
    while (event := await sink.get()) is not None:
        yield event
