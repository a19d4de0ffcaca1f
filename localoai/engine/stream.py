"""The bridge between the engine thread and the event loop, one per request.

The engine thread never touches asyncio objects directly: it schedules `put_nowait`
on the request's loop with `call_soon_threadsafe`. The event-loop side cancels by
setting a `threading.Event` the decode loop reads at every step.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator

from localoai.engine.params import PromptLogprobs, RequestDone, SampleDelta

StreamItem = list[SampleDelta] | PromptLogprobs | RequestDone


class RequestStream:
    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._loop = loop or asyncio.get_running_loop()
        self._queue: asyncio.Queue[StreamItem] = asyncio.Queue()
        self._cancelled = threading.Event()

    # Engine-thread side.
    def put(self, item: StreamItem) -> None:
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, item)
        except RuntimeError:  # the loop is closed: nobody is listening any more
            self._cancelled.set()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    # Event-loop side.
    def cancel(self) -> None:
        self._cancelled.set()

    async def __aiter__(self) -> AsyncIterator[StreamItem]:
        while True:
            item = await self._queue.get()
            yield item
            if isinstance(item, RequestDone):
                return
