"""Compiling requests' output constraints for the local engine, on a thread of their own.

A grammar is compiled for the served vocabulary before its request waits for admission, so
neither the event loop nor the engine thread (which decodes everyone's tokens) waits for it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from localoai.engine.running import Request

logger = logging.getLogger("localoai.engine")


class ConstraintCompiler:
    """Compiles `request.params.constraint` into `request.constraint`, then hands the request to
    `compiled(request, error)` (error None on success), called holding `lock` (the engine's queue
    lock). `pending` counts the requests not yet handed over, changed under that lock too, so a
    request is always counted once against the queue's bound: pending, then waiting."""

    def __init__(self, tokenizer: Any, vocab_size: int, compiled: Callable[[Request, BaseException | None], None],
                 lock: threading.Condition) -> None:
        self.pending = 0
        self._tokenizer = tokenizer
        self._vocab_size = vocab_size
        self._compiled = compiled
        self._lock = lock
        self._executor: ThreadPoolExecutor | None = None

    def submit(self, request: Request) -> None:
        """Compile `request`'s constraint on the compile thread (the caller holds `lock`)."""
        self.pending += 1
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="localoai-grammar")
        self._executor.submit(self._compile, request)

    def shutdown(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=False)
            self._executor = None

    def _compile(self, request: Request) -> None:
        from localoai.constraints.grammar import compile_grammar

        assert request.params.constraint is not None
        error: BaseException | None = None
        try:
            request.constraint = compile_grammar(request.params.constraint.grammar, self._tokenizer, self._vocab_size)
        except Exception as exc:  # validated when the request was read: a failure here is ours
            logger.exception("compiling the output constraint failed")
            error = exc
        with self._lock:
            self.pending -= 1
            self._compiled(request, error)
