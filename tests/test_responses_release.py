"""Background responses give back what they held once they end, whichever way: cancelled with
`POST /v1/responses/{id}/cancel` or deleted while they run, streamed to a client that goes away
(the response runs on) and then cancelled, or left to run to their end. Afterwards none of their
engine streams (`RequestStream`) and none of their `ResponseStream`s is alive: nothing (a registry,
a task, a stored exception's traceback, an engine thread's local) keeps them.

A response is held mid-generation by the scripted engine's script (`held_mid_generation`), so it
is cancelled while it runs, never after it ended."""

from __future__ import annotations

import gc
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import openai
import pytest

from localoai.handlers.responses.stream import ResponseStream
from localoai.testing import ScriptedEngine, request_streams, wait_until

LONG = 1500
"""Tokens a held response may write: far more than it gets to."""


@pytest.fixture(scope="module")
def server(scripted_server: Any) -> Any:
    return scripted_server


@contextmanager
def held_mid_generation(engine: ScriptedEngine) -> Iterator[None]:
    """Inside the block, a new request writes " hello", then its next step waits (the engine thread
    with it, as in a long forward pass) until the block ends; it then goes on as the script says."""
    original, go = engine.script, threading.Event()
    first = engine.tokenizer.encode(" hello", add_special_tokens=False)

    def script(prompt_ids: list[int], params: Any, index: int) -> Iterator[int]:
        yield from first
        go.wait(60)
        yield from original(prompt_ids, params, index)

    engine.script = script
    try:
        yield
    finally:
        go.set()
        engine.script = original


def response_streams(ids: set[str]) -> list[str]:
    """The ids among `ids` whose `ResponseStream` is still alive."""
    gc.collect()
    return [obj.id for obj in gc.get_objects() if type(obj) is ResponseStream and obj.id in ids]


def test_ended_background_responses_release_their_streams(server: Any) -> None:
    client = server.client(max_retries=0, timeout=60)
    engine = server.served.engine
    before = weakref.WeakSet(request_streams())  # what earlier tests left is theirs to answer for
    ids: set[str] = set()
    create: dict[str, Any] = {"model": server.model, "input": "hello", "background": True, "temperature": 0}

    # POST cancel while it runs
    with held_mid_generation(engine):
        running = client.responses.create(**create, max_output_tokens=LONG)
        ids.add(running.id)
        wait_until(lambda: engine.stats()["rows"] > 0, message="it never started decoding")
        assert client.responses.cancel(running.id).status == "cancelled"

    # DELETE while it runs
    with held_mid_generation(engine):
        running = client.responses.create(**create, max_output_tokens=LONG)
        ids.add(running.id)
        wait_until(lambda: engine.stats()["rows"] > 0, message="it never started decoding")
        client.responses.delete(running.id)
        with pytest.raises(openai.NotFoundError):
            client.responses.retrieve(running.id)

    # streamed: the client reads a delta and goes away (the response runs on), then cancels it
    with held_mid_generation(engine):
        events = client.responses.create(**create, max_output_tokens=LONG, stream=True)
        created = next(iter(events))
        ids.add(created.response.id)
        assert next(event for event in events if event.type == "response.output_text.delta").delta == " hello"
        events.close()
        assert client.responses.retrieve(created.response.id).status == "in_progress"
        assert client.responses.cancel(created.response.id).status == "cancelled"

    # streamed: the client goes away at once, the response runs to its end
    with client.responses.create(**create, max_output_tokens=16, stream=True) as events:
        created = next(iter(events))
    ids.add(created.response.id)
    wait_until(lambda: client.responses.retrieve(created.response.id).status == "incomplete")

    wait_until(lambda: engine.stats()["running"] == 0 and server.served.recorder.pending == 0)
    wait_until(lambda: not [stream for stream in request_streams() if stream not in before], timeout=30,
               message="request streams of ended background responses still alive")
    wait_until(lambda: not response_streams(ids), timeout=30,
               message="ResponseStreams of ended background responses still alive")
