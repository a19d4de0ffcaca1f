"""`RequestStream`: the engine thread's outputs reaching a request's event loop, step by step for a
streamed answer, all at once at the end for a non-streamed one."""

from __future__ import annotations

import asyncio
import threading

from localoai.engine.params import PromptLogprobs, RequestDone, SampleDelta
from localoai.engine.stream import RequestStream, StreamItem, one_wakeup_per_loop


def _delta(token: int) -> SampleDelta:
    return SampleDelta(0, [token], f"t{token}")


async def _run(each_step: bool) -> tuple[list[int], list[StreamItem]]:
    """Put a prompt-logprobs item and three steps from another thread, as the engine does; return
    how many items the loop had received after each put, and what it received in the end."""
    stream = RequestStream(each_step=each_step)
    received: list[StreamItem] = []
    seen_after_put: list[int] = []

    async def consume() -> None:
        async for item in stream:
            received.append(item)

    consumer = asyncio.create_task(consume())
    loop = asyncio.get_running_loop()
    for item in [PromptLogprobs([None]), [_delta(1)], [_delta(2)], [_delta(3)]]:
        def engine_step(item: StreamItem = item) -> None:
            with one_wakeup_per_loop():
                stream.put(item)

        thread = threading.Thread(target=engine_step)
        thread.start()
        await loop.run_in_executor(None, thread.join)
        for _ in range(20):  # let the delivery (if any) and the consumer run
            await asyncio.sleep(0)
        seen_after_put.append(len(received))
    stream.put(RequestDone())  # from the loop's thread: delivered at once
    await asyncio.wait_for(consumer, 5)
    return seen_after_put, received


def test_each_step_delivers_every_item_as_it_is_put() -> None:
    seen, received = asyncio.run(_run(each_step=True))
    assert seen == [1, 2, 3, 4]
    assert [[d.token_ids[0] for d in item] for item in received[1:4]] == [[1], [2], [3]]  # type: ignore[union-attr]


def test_a_non_streamed_stream_delivers_once_at_the_end_with_its_steps_joined() -> None:
    seen, received = asyncio.run(_run(each_step=False))
    assert seen == [0, 0, 0, 0]  # nothing reached the loop before the request was done
    prompt, steps, done = received
    assert isinstance(prompt, PromptLogprobs) and isinstance(done, RequestDone)
    assert isinstance(steps, list) and [d.token_ids[0] for d in steps] == [1, 2, 3]
    assert "".join(d.text for d in steps) == "t1t2t3"
