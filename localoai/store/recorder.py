"""Writes records on one background thread, so the server's event loop never waits for SQLite.

    recorder = Recorder(store)
    written = recorder.record(record)   # returns at once: the record is queued
    written.result()                    # True once it is in the store (False if it failed)
    recorder.flush()          # waits until everything queued so far is in the store
    recorder.close()          # flushes and stops the thread (the store stays open)

A `put` can wait seconds (another process holding the write lock, a WAL checkpoint); on the
event loop that would stall every request. One writer thread also keeps writes in the order
they were recorded, so a later record with the same id replaces an earlier one. The records
queued while a write runs (a burst of answers ending on the same engine step) are written
together in one transaction (`Store.put_many`): a commit per record was most of a record's cost.
"""

from __future__ import annotations

import logging
import queue
import threading
from concurrent.futures import Future

from localoai.store.base import Store
from localoai.store.records import GenerationRecord

logger = logging.getLogger("localoai.store")


class _Flush:
    """A marker in the queue: the thread sets `done` on reaching it, so all before it is written.

    (The queue's other sentinel, `None`, ends the thread; `close` queues it last.)"""

    __slots__ = ("done",)

    def __init__(self) -> None:
        self.done = threading.Event()


_Write = tuple[GenerationRecord, Future[bool]]
_Item = _Write | _Flush | None

MAX_BATCH = 64
"""Most records written in one transaction by default: those queued while the previous write ran."""


class Recorder:
    """Puts records into `store` on a daemon thread named "localoai-recorder".

    The caller hands a record over: it must not change it after `record()` (the thread encodes it
    later). A batch whose write raises is written again record by record; a record's write that
    raises is retried once; if that fails too it is logged with its traceback and counted in
    `failed`, and the thread goes on with the next record. The recorder does not own
    the store: close the recorder first, then the store.
    """

    def __init__(self, store: Store, *, max_batch: int = MAX_BATCH) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, not {max_batch}")
        self.store = store
        self.max_batch = max_batch
        """Most records written in one transaction (1: a transaction per record)."""
        self.failed = 0
        """Records that could not be written (two attempts failed); each was logged."""
        # Unbounded: put never blocks.
        self._queue: queue.Queue[_Item] = queue.Queue()
        # Held while checking `_closed` and queueing, so no record can land behind the sentinel.
        self._lock = threading.Lock()
        self._failed_lock = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="localoai-recorder", daemon=True)
        self._thread.start()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"pending={self.pending}"
        return f"Recorder({self.store!r}, {state}, failed={self.failed})"

    @property
    def pending(self) -> int:
        """About how many records (and flush markers) wait in the queue."""
        return self._queue.qsize()

    def record(self, record: GenerationRecord) -> Future[bool]:
        """Queue `record` for writing; never blocks. After `close` it is written here instead.

        The future resolves to True once the record is in the store, False if writing failed:
        the server awaits it before a response's last byte, so what a client got is durable."""
        written: Future[bool] = Future()
        with self._lock:
            if not self._closed:
                self._queue.put_nowait((record, written))
                return written
        logger.debug("recorder closed: writing %s synchronously", record.id)
        _resolve(written, self._write(record))
        return written

    def flush(self, timeout: float | None = 10.0) -> bool:
        """Wait until every record queued before this call is written (or failed); False on timeout."""
        with self._lock:
            marker = None if self._closed else _Flush()
            if marker is not None:
                self._queue.put_nowait(marker)
        if marker is None:
            # The sentinel is queued: the thread ends once everything before it is written.
            self._thread.join(timeout)
            return not self._thread.is_alive()
        return marker.done.wait(timeout)

    def close(self, timeout: float | None = 10.0) -> bool:
        """Write everything queued and stop the thread; idempotent. False if `timeout` passed first
        (the thread then keeps writing the rest in the background)."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._queue.put_nowait(None)
        self._thread.join(timeout)
        if self._thread.is_alive():
            logger.warning("recorder: %d records still queued after %ss; still writing them", self.pending, timeout)
            return False
        return True

    # -- the thread ----------------------------------------------------------------------------

    def _run(self) -> None:
        held: list[_Item] = []  # an item taken from the queue while gathering a batch, not handled yet
        while True:
            item = held.pop() if held else self._queue.get()
            if item is None:
                return
            if isinstance(item, _Flush):
                item.done.set()
                continue
            batch = [item]
            while len(batch) < self.max_batch:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if not isinstance(more, tuple):
                    held.append(more)
                    break
                batch.append(more)
            self._write_batch(batch)

    def _write_batch(self, batch: list[_Write]) -> None:
        """The records queued meanwhile in one transaction; if that fails, each on its own (`_write`),
        so that one record the store refuses costs no other."""
        if len(batch) > 1:
            try:
                self.store.put_many([record for record, _ in batch])
            except Exception as error:  # noqa: BLE001 - written one by one below
                logger.warning("recorder: writing %d records at once failed (%r); writing them one by one",
                               len(batch), error)
            else:
                for _, written in batch:
                    _resolve(written, True)
                return
        for record, written in batch:
            try:
                ok = self._write(record)
            except Exception:  # noqa: BLE001 - `_write` handles store errors; this is for anything else
                self._count_failure()
                logger.exception("recorder: could not write %r", record)
                ok = False
            _resolve(written, ok)

    def _write(self, record: GenerationRecord) -> bool:
        """Put, retrying once (a transient error must not lose the record); never raises."""
        try:
            self.store.put(record)
            return True
        except Exception as error:  # noqa: BLE001 - retried below
            logger.warning("recorder: writing %s failed (%r); retrying once", record.id, error)
        try:
            self.store.put(record)
            return True
        except Exception:  # noqa: BLE001 - the thread must survive any store error
            self._count_failure()
            logger.exception("recorder: writing %s failed twice; the record is lost", record.id)
            return False

    def _count_failure(self) -> None:
        # `record()` after `close` writes on the caller's thread, maybe while this one still runs.
        with self._failed_lock:
            self.failed += 1


def _resolve(written: Future[bool], ok: bool) -> None:
    """Tell the waiter; a waiter that went away (its future was cancelled) must not stop the writer."""
    if written.set_running_or_notify_cancel():
        written.set_result(ok)
