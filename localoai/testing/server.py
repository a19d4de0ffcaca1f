"""A running server on a tiny local model, for tests (yours and ours)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from localoai.server import Server, start
from localoai.testing.tiny import build_tiny_model


@contextlib.contextmanager
def running_server(model: Any = None, tokenizer: Any = None, **options: Any) -> Iterator[Server]:
    """Start a server on any free port with an in-memory store (a tiny model unless one is given);
    stop it on exit."""
    if model is None:
        model, tokenizer = build_tiny_model()
    options.setdefault("port", 0)
    options.setdefault("store", ":memory:")
    server = start(model, tokenizer, **options)
    try:
        yield server
    finally:
        server.stop()
