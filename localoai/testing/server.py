"""A running server on a tiny local model, for tests (yours and ours)."""

from __future__ import annotations

import contextlib
import gc
import time
from collections.abc import Callable, Iterator
from typing import Any

from localoai.engine.stream import RequestStream
from localoai.server import Server, start
from localoai.testing.tiny import build_tiny_model


@contextlib.contextmanager
def running_server(model: Any = None, tokenizer: Any = None, **options: Any) -> Iterator[Server]:
    """Start a server on any free port with an in-memory store (a tiny model unless one is given);
    stop it on exit. `engine=ScriptedEngine(tokenizer, script)` serves scripted tokens instead of the
    model's (the model still gives the server its identity and hidden size)."""
    if model is None:
        model, tokenizer = build_tiny_model()
    options.setdefault("port", 0)
    options.setdefault("store", ":memory:")
    server = start(model, tokenizer, **options)
    try:
        yield server
    finally:
        server.stop()


def wait_until(condition: Callable[[], bool], timeout: float = 60.0, message: str = "condition not reached") -> None:
    """Poll `condition` until it holds; `AssertionError(message)` after `timeout` seconds. For what
    happens on the server's threads after a request returns (records written, slots freed)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(message)
        time.sleep(0.01)


def request_streams() -> list[RequestStream]:
    """The engine's per-request streams still alive in this process, after a full collection: once
    the requests are over and their handlers have unwound, none should be (a leak test's measure).
    Poll it with `wait_until`: a handler whose client left may still be unwinding."""
    gc.collect()
    return [obj for obj in gc.get_objects() if type(obj) is RequestStream]
