"""`RequestStream`: the engine thread's outputs reaching a request's event loop, step by step for a
streamed answer, all at once at the end for a non-streamed one; `joined_deltas`, one delta per sample
per policy version for a reader that needs no step boundaries."""

from __future__ import annotations

import asyncio
import threading

from hypothesis import given, settings
from hypothesis import strategies as st

from localoai.engine.params import PromptLogprobs, RequestDone, SampleDelta, TokenLogprob, joined_deltas
from localoai.engine.stream import RequestStream, StreamItem, one_wakeup_per_loop
from localoai.handlers.generation import SampleTrace


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


# --- joined deltas: a non-streamed reader's one delta per sample per policy version ----------------


@st.composite
def _steps(draw: st.DrawFn) -> list[SampleDelta]:
    """Steps of up to three samples as an engine reports them: interleaved, some without tokens
    (a flush of held-back text), the policy version rising across pauses, each sample finished last."""
    samples = draw(st.integers(1, 3))
    version = 0
    deltas: list[SampleDelta] = []
    for _ in range(draw(st.integers(0, 12))):
        version += draw(st.sampled_from([0, 0, 0, 1]))
        for index in range(samples):
            if draw(st.booleans()):
                tokens = draw(st.lists(st.integers(0, 50), max_size=3))
                deltas.append(SampleDelta(index, tokens, draw(st.text(max_size=4)),
                                          [TokenLogprob(token, -0.5 * token) for token in tokens],
                                          policy_version=version))
    for index in range(samples):
        deltas.append(SampleDelta(index, draw(st.lists(st.integers(0, 50), max_size=2)), draw(st.text(max_size=3)),
                                  finish_reason=draw(st.sampled_from(["stop", "length"])),
                                  stop_reason=draw(st.sampled_from([None, "END", 7])), policy_version=version))
        deltas[-1].logprobs = [TokenLogprob(token, -1.0) for token in deltas[-1].token_ids]
    return deltas


def _traces(deltas: list[SampleDelta]) -> dict[int, tuple[object, ...]]:
    traces: dict[int, SampleTrace] = {}
    stop_reasons: dict[int, object] = {}
    for delta in deltas:
        traces.setdefault(delta.index, SampleTrace()).add(delta)
        stop_reasons[delta.index] = delta.stop_reason
    return {index: (trace.token_ids, trace.logprobs, "".join(trace.text), trace.finish_reason,
                    trace.policy_versions, stop_reasons[index]) for index, trace in traces.items()}


@settings(max_examples=300, deadline=None)
@given(_steps())
def test_joined_deltas_keep_every_token_text_logprob_finish_and_version_span(deltas: list[SampleDelta]) -> None:
    joined = joined_deltas(deltas)
    assert _traces(joined) == _traces(deltas)
    for index in {delta.index for delta in deltas}:
        # One delta per run of a policy version among the sample's deltas that carry tokens.
        versions = [delta.policy_version for delta in deltas if delta.index == index and delta.token_ids]
        runs = sum(1 for i, version in enumerate(versions) if i == 0 or versions[i - 1] != version)
        assert len([delta for delta in joined if delta.index == index]) == max(1, runs)


def test_joined_deltas_leave_the_engines_deltas_as_they_were() -> None:
    deltas = [SampleDelta(0, [1], "a"), SampleDelta(0, [2], "b", finish_reason="stop")]
    joined = joined_deltas(deltas)
    assert [(d.token_ids, d.text) for d in joined] == [([1, 2], "ab")]
    assert [(d.token_ids, d.text, d.finish_reason) for d in deltas] == [([1], "a", None), ([2], "b", "stop")]
