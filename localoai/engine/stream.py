"""The bridge between the engine thread and the event loop, one per request.

The engine thread never touches asyncio objects directly: it schedules `put_nowait`
on the request's loop with `call_soon_threadsafe`. The event-loop side cancels by
setting a `threading.Event` the decode loop reads at every step.

Inside `one_wakeup_per_loop()` (the engine wraps every step in it) the items are held and
delivered at its end with one `call_soon_threadsafe` per event loop, in the order they were
put: each call writes to the loop's self-pipe and wakes it, and one per request per step was
the largest cost of a step outside the forward pass with many requests running.

A stream made with `each_step=False` (a non-streamed answer, which nobody reads before the end)
keeps its items on the engine side until the request is done and then delivers them all at
once, consecutive steps' deltas joined into one list: its handler wakes once per request
instead of once per step. Each wake-up hands the event loop Python work that takes the GIL; the
engine thread, back from writing the wake-up, then waits for the GIL before its next forward
pass, so per-step wake-ups cost every request in the batch, not only their own.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager

from localoai.engine.params import PromptLogprobs, RequestDone, SampleDelta

StreamItem = list[SampleDelta] | PromptLogprobs | RequestDone
_Pending = dict[asyncio.AbstractEventLoop, list[tuple["RequestStream", StreamItem]]]

_held = threading.local()
"""`pending`: the items held by the current thread's `one_wakeup_per_loop()`, else None."""


class RequestStream:
    def __init__(self, loop: asyncio.AbstractEventLoop | None = None, *, each_step: bool = True) -> None:
        self._loop = loop or asyncio.get_running_loop()
        self._queue: asyncio.Queue[StreamItem] = asyncio.Queue()
        self._cancelled = threading.Event()
        self._backlog: list[StreamItem] | None = None if each_step else []
        """Items kept until the request is done (engine thread only); None: delivered as they come."""

    # Engine-thread side.
    def put(self, item: StreamItem) -> None:
        if self._backlog is not None:
            self._backlog.append(item)
            if not isinstance(item, RequestDone):
                return
            items, self._backlog = _joined(self._backlog), []
        else:
            items = [item]
        pending: _Pending | None = getattr(_held, "pending", None)
        if pending is not None:
            pending.setdefault(self._loop, []).extend((self, each) for each in items)
        else:
            _wake(self._loop, [(self, each) for each in items])

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


@contextmanager
def one_wakeup_per_loop() -> Iterator[None]:
    """Hold the streams' items put by this thread inside the block; deliver them at its end
    (also when it raises) with one wake-up per event loop."""
    _held.pending = {}
    try:
        yield
    finally:
        deliver_held()
        _held.pending = None


def deliver_held() -> None:
    """Inside `one_wakeup_per_loop`: deliver what is held so far now (one wake-up per event loop),
    so the tokens of a step reach their clients before the step's next forward pass, not after it."""
    pending: _Pending | None = getattr(_held, "pending", None)
    if not pending:
        return
    _held.pending = {}
    for loop, items in pending.items():
        _wake(loop, items)


def _joined(items: list[StreamItem]) -> list[StreamItem]:
    """The items with each run of consecutive step lists joined into one list, in order."""
    joined: list[StreamItem] = []
    for item in items:
        if isinstance(item, list) and joined and isinstance(joined[-1], list):
            joined[-1].extend(item)
        else:
            joined.append(list(item) if isinstance(item, list) else item)
    return joined


def _deliver(items: list[tuple[RequestStream, StreamItem]]) -> None:
    for stream, item in items:
        stream._queue.put_nowait(item)


def _wake(loop: asyncio.AbstractEventLoop, items: list[tuple[RequestStream, StreamItem]]) -> None:
    try:
        loop.call_soon_threadsafe(_deliver, items)
    except RuntimeError:  # the loop is closed: nobody is listening any more
        for stream, _ in items:
            stream._cancelled.set()
