"""One SQLite connection shared by every thread under one lock: what the record store and the
conversation store both stand on.

Why one connection rather than one per thread: SQLite takes one writer at a time whatever we do,
and the lock queues this process's writers in Python instead of having them sleep-and-retry on
SQLITE_BUSY; per-thread connections would each belong to their thread (the server's executor
threads come and go), so `close()` could not close them. An in-memory database then needs no
shared cache (whose table locks fail at once with SQLITE_LOCKED, which `busy_timeout` does not
retry): the one connection is the database. The cost: this process's reads wait for its writes
instead of running beside them as WAL allows; both are short, and callers encode and parse JSON
outside the lock.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

logger = logging.getLogger("localoai.store")

BUSY_TIMEOUT_S = 60.0
"""How long a write waits for another process holding the database's write lock."""


class Database:
    def __init__(self, path: Path | None, *, create: Callable[[sqlite3.Connection], None]) -> None:
        """Open `path` (None: in memory) and run `create` (schema set-up and version checks) on it."""
        self.path = path
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = self._connect(create)

    def _connect(self, create: Callable[[sqlite3.Connection], None]) -> sqlite3.Connection:
        if self.path is None:
            conn = sqlite3.connect(":memory:", check_same_thread=False, isolation_level=None)
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # `timeout` is SQLite's busy_timeout: waits for other processes using the same file.
            conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, check_same_thread=False, isolation_level=None)
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            if self.path is not None:
                # WAL: a commit appends the transaction to the -wal file with write(2), and readers
                # keep reading the last committed state while a write is under way.
                # synchronous=NORMAL: no fsync at commit, only when the WAL is checkpointed into
                # the database. A committed write is then in the OS page cache as soon as it
                # returns, so it survives the process being killed (SIGKILL, the OOM killer, a
                # crashed CUDA kernel): the next open replays the WAL. Only an OS crash or power
                # loss can lose the last transactions before a checkpoint, and even then the
                # database is consistent (never corrupt). FULL would fsync every write for that
                # case, which costs milliseconds per write on most disks.
                mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                if str(mode).lower() != "wal":
                    logger.warning("store %s: SQLite refused WAL mode (journal_mode=%s)", self.path, mode)
                conn.execute("PRAGMA synchronous = NORMAL")
            create(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError(f"store {self.path or ':memory:'} is closed")
        return self._conn

    def write(self, work: Callable[..., Any], *args: Any) -> Any:
        """Run `work(conn, *args)` in one write transaction, under the lock; an exception rolls
        the whole call back."""
        with self._lock:
            conn = self._connection()
            # IMMEDIATE takes SQLite's write lock first (waiting up to busy_timeout for another
            # process): a transaction that read first and then wanted to write could fail with
            # SQLITE_BUSY at once instead of waiting.
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = work(conn, *args)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.rollback()
                raise
            return result

    @contextmanager
    def reading(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            yield self._connection()

    def close(self) -> None:
        """Idempotent; any later call raises `RuntimeError`."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
