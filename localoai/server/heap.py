"""`gc.freeze()` while the servers that asked for it (`start(gc_freeze=True)`) run."""

from __future__ import annotations

import gc
import threading


class HeapFreeze:
    """`gc.freeze()` while servers that asked for it run (vLLM does the same after startup).

    A process that holds torch, transformers and a model has half a million objects or more, and
    every full collection walks them all: 0.2-0.3 s with a 5M-parameter model and nothing else, during
    which no thread runs Python, the engine's included, so serving stalls. Frozen objects are left
    out of collections (they are still freed by reference counting; only reference cycles among
    them wait for the thaw). Thawed when the last such server stops, unless something else had
    frozen objects before.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._holders = 0
        self._thaw = False

    def hold(self) -> None:
        with self._lock:
            if self._holders == 0:
                self._thaw = gc.get_freeze_count() == 0
                gc.collect()  # what is garbage now is freed, not frozen
                gc.freeze()
            self._holders += 1

    def release(self) -> None:
        with self._lock:
            self._holders -= 1
            if self._holders == 0 and self._thaw:
                gc.unfreeze()


heap_freeze = HeapFreeze()
"""The process's one freeze, held by every server that asked for it."""
