"""The default store: one SQLite database (standard library `sqlite3` only), bounded in size.

Records are rows of the `generations` table (`localoai.store.generations`), episodes of the `episodes` table
(`localoai.store.episodes`); the inspector's searches are `localoai.store.search`'s. Past `max_entries` or
`max_bytes` the oldest records go.
"""

from __future__ import annotations

import builtins
import logging
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from localoai.store import episodes as episode_rows
from localoai.store import generations
from localoai.store.base import ListQuery, Order, RecordFilter
from localoai.store.database import Database
from localoai.store.episodes import StoredEpisode
from localoai.store.records import GenerationRecord
from localoai.store.search import StoreSearch

if TYPE_CHECKING:
    from typing_extensions import Self, Unpack

    from localoai.episodes.trajectory import Trajectory
    from localoai.store.base import RecordFilterArgs

logger = logging.getLogger("localoai.store")

DEFAULT_PATH = Path("localoai-store") / "store.sqlite3"
DEFAULT_DIRECTORY = Path("localoai-store")
"""Where `open_store(None)` puts each run's file (`run_path`), under the working directory."""
DEFAULT_MAX_ENTRIES = 100_000
DEFAULT_MAX_BYTES = 2 * 1024**3
_BATCH = 256
"""Records per read in `iterate`/`export_jsonl`: memory stays flat whatever the store holds."""

_Row = tuple[tuple[Any, ...], list[tuple[str, str]], tuple[str, str | None] | None]
"""A record as `_upsert` writes it: its `generations` row, its metadata pairs, its episode and group."""


def _row(record: GenerationRecord) -> _Row:
    text = record.to_json()
    row = (
        record.id,
        record.kind,
        record.model,
        record.status,
        record.episode_id,
        1 if record.store_visible else 0,
        float(record.created_at),
        int(record.policy_version),
        len(text),  # ASCII JSON: characters are bytes
        text,
    )
    metadata = [(str(key), str(value)) for key, value in record.metadata.items()]
    episode = (record.episode_id, record.group_id) if record.episode_id is not None else None
    return row, metadata, episode


class SQLiteStore:
    """A `Store` in one SQLite file, or in memory with `":memory:"`.

    Threads: one connection, used under one lock; durability: WAL with `synchronous=NORMAL`
    (both explained in `localoai.store.database`). Bounds: `None` disables a limit; the record
    just written is never evicted, so one record larger than `max_bytes` is kept alone.
    """

    def __init__(
        self,
        path: str | Path = DEFAULT_PATH,
        *,
        max_entries: int | None = DEFAULT_MAX_ENTRIES,
        max_bytes: int | None = DEFAULT_MAX_BYTES,
    ) -> None:
        for name, limit in (("max_entries", max_entries), ("max_bytes", max_bytes)):
            if limit is not None and limit < 1:
                raise ValueError(f"{name} must be at least 1, or None for no limit; got {limit}")
        self.memory = str(path) == ":memory:"
        self.failed_writes = 0
        self._failed_lock = threading.Lock()
        """`put` calls that raised since this store was opened (each also logged by its caller)."""
        self.path: Path | None = None if self.memory else Path(path).expanduser()
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._warned_full = False
        self._db = Database(self.path, create=self._create)
        self._search = StoreSearch(self.path, self._db)
        try:
            evicted = self._db.write(self._evict, -1)  # limits lower than when the file was written
        except BaseException:
            self.close()
            raise
        self._log_eviction(*evicted)

    def __repr__(self) -> str:
        return f"SQLiteStore({':memory:' if self.path is None else str(self.path)!r})"

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- connection --------------------------------------------------------------------

    def _create(self, conn: sqlite3.Connection) -> None:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version == 0:  # a new database (two processes creating it at once is fine: IF NOT EXISTS)
            conn.executescript(generations.SCHEMA)
            conn.executescript(episode_rows.SCHEMA)
        elif version == generations.SCHEMA_VERSION:
            conn.executescript(episode_rows.SCHEMA)  # a store written before episodes existed gains the table
        else:
            # No migration: version 1 was never released, and a newer file needs a newer localoai.
            raise RuntimeError(
                f"store {self.path or ':memory:'} has schema version {version}; this localoai reads only "
                f"version {generations.SCHEMA_VERSION} and does not convert files: use another store path, or move "
                "this file away"
            )

    # -- writes --------------------------------------------------------------------------

    def put(self, record: GenerationRecord) -> None:
        self.put_many([record])

    def put_many(self, records: Sequence[GenerationRecord]) -> None:
        """Insert or replace each record, in order, in one transaction: all are written, or none
        (a commit per record is most of a small record's cost)."""
        rows = [_row(record) for record in records]  # encoded before taking the lock
        try:
            evicted = self._db.write(self._upsert_all, rows)
        except Exception:
            with self._failed_lock:
                self.failed_writes += 1
            raise
        self._log_eviction(*evicted)

    def _upsert_all(self, conn: sqlite3.Connection, rows: builtins.list[_Row]) -> tuple[int, int]:
        removed = freed = 0
        for row, metadata, episode in rows:
            evicted = self._upsert(conn, row, metadata, episode)
            removed, freed = removed + evicted[0], freed + evicted[1]
        return removed, freed

    def _upsert(
        self, conn: sqlite3.Connection, row: tuple[Any, ...], metadata: builtins.list[tuple[str, str]],
        episode: tuple[str, str | None] | None = None,
    ) -> tuple[int, int]:
        conn.execute(generations.UPSERT, row)
        if episode is not None:  # every episode a record names is listed (one a client made up too)
            episode_rows.register(conn, *episode)
        # A replaced record keeps its `seq`, hence its place in every listing.
        seq = conn.execute("SELECT seq FROM generations WHERE id = ?", (row[0],)).fetchone()[0]
        conn.execute("DELETE FROM generation_metadata WHERE seq = ?", (seq,))
        if metadata:
            conn.executemany(
                "INSERT INTO generation_metadata (seq, key, value) VALUES (?, ?, ?)",
                [(seq, key, value) for key, value in metadata],
            )
        return self._evict(conn, seq)

    def _evict(self, conn: sqlite3.Connection, keep_seq: int) -> tuple[int, int]:
        """Delete the oldest records until both limits hold; never the record `keep_seq`."""
        entries, total = conn.execute("SELECT entries, bytes FROM totals").fetchone()
        over_entries = entries - self.max_entries if self.max_entries is not None else 0
        over_bytes = total - self.max_bytes if self.max_bytes is not None else 0
        if over_entries <= 0 and over_bytes <= 0:
            return 0, 0
        removed = freed = 0
        cutoff = None
        oldest = conn.execute("SELECT seq, size FROM generations WHERE seq != ? ORDER BY seq", (keep_seq,))
        try:
            for seq, size in oldest:
                removed, freed, cutoff = removed + 1, freed + size, seq
                if removed >= over_entries and freed >= over_bytes:
                    break
        finally:
            oldest.close()
        if cutoff is None:
            return 0, 0
        conn.execute("DELETE FROM generations WHERE seq <= ? AND seq != ?", (cutoff, keep_seq))
        conn.execute("UPDATE totals SET evicted = evicted + ?", (removed,))
        return removed, freed

    def _log_eviction(self, removed: int, freed: int) -> None:
        if not removed:
            return
        if not self._warned_full:
            # Once per store at WARNING: the researcher must learn that data is being dropped.
            self._warned_full = True
            logger.warning(
                "store %s is full (max_entries=%s, max_bytes=%s): evicting the oldest records; "
                "export them first or raise the limits to keep them",
                self.path or ":memory:",
                self.max_entries,
                self.max_bytes,
            )
        logger.debug("store %s: evicted %d records (%d bytes)", self.path or ":memory:", removed, freed)

    def delete(self, id: str) -> bool:
        def work(conn: sqlite3.Connection) -> bool:
            return conn.execute("DELETE FROM generations WHERE id = ?", (id,)).rowcount > 0

        return bool(self._db.write(work))

    # -- episodes --------------------------------------------------------------------------

    def add_episode(self, episode_id: str, group: str | None = None, metadata: dict[str, Any] | None = None) -> None:
        """Register an episode (a known one keeps its metadata; it gains `group` if it had none)."""
        self._db.write(episode_rows.register, episode_id, group, metadata)

    def set_reward(self, episode_id: str, reward: float, **info: Any) -> None:
        """Attach a reward (and any JSON-able `info`) to an episode; setting it again replaces it."""
        self._db.write(episode_rows.set_reward, episode_id, float(reward), info)

    def episode(self, episode_id: str) -> StoredEpisode | None:
        with self._db.reading() as conn:
            return episode_rows.get(conn, episode_id)

    def episodes(self, group: str | None = None) -> builtins.list[StoredEpisode]:
        """Every episode (oldest first), or `group`'s."""
        with self._db.reading() as conn:
            return episode_rows.list_episodes(conn, group)

    def groups(self) -> builtins.list[str]:
        with self._db.reading() as conn:
            return episode_rows.list_groups(conn)

    def trajectory(self, episode_id: str) -> Trajectory:
        """`localoai.episodes.trajectory.trajectory(self, episode_id)`, for reading a saved store."""
        from localoai.episodes.trajectory import trajectory

        return trajectory(self, episode_id)

    def trajectories(self, group: str | None = None) -> builtins.list[Trajectory]:
        """`localoai.episodes.trajectory.trajectories(self, group)`, for reading a saved store."""
        from localoai.episodes.trajectory import trajectories

        return trajectories(self, group)

    # -- reads ---------------------------------------------------------------------------

    def get(self, id: str) -> GenerationRecord | None:
        with self._db.reading() as conn:
            row = conn.execute("SELECT record FROM generations WHERE id = ?", (id,)).fetchone()
        return None if row is None else GenerationRecord.from_json(row[0])

    def list(
        self,
        *,
        after: str | None = None,
        before: str | None = None,
        limit: int = 20,
        order: Order = "desc",
        **filters: Unpack[RecordFilterArgs],
    ) -> builtins.list[GenerationRecord]:
        if limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        where, params = generations.filters(RecordFilter(**filters))
        # `before` alone wants the `limit` items nearest the cursor: read towards it, then flip.
        backwards = before is not None and after is None
        direction = generations.opposite(order) if backwards else generations.direction(order)
        with self._db.reading() as conn:
            generations.cursors(conn, where, params, order, after, before)
            sql = f"SELECT record FROM generations{generations.where_sql(where)} ORDER BY seq {direction} LIMIT ?"
            rows = conn.execute(sql, [*params, limit]).fetchall()
        if backwards:
            rows.reverse()
        return [GenerationRecord.from_json(text) for (text,) in rows]

    def iterate(
        self,
        *,
        after: str | None = None,
        before: str | None = None,
        order: Order = "asc",
        **filters: Unpack[RecordFilterArgs],
    ) -> Iterator[GenerationRecord]:
        texts = self._texts(RecordFilter(**filters), after, before, order)
        return (GenerationRecord.from_json(text) for text in texts)

    def _texts(self, matching: RecordFilter, after: str | None, before: str | None, order: Order) -> Iterator[str]:
        """The matching records' JSON, a batch per lock hold; cursor ids are checked right away."""
        where, params = generations.filters(matching)
        direction = generations.direction(order)
        with self._db.reading() as conn:
            generations.cursors(conn, where, params, order, after, before)
        step = "seq > ?" if direction == "ASC" else "seq < ?"
        sql = f"SELECT seq, record FROM generations{generations.where_sql([*where, step])} ORDER BY seq {direction} LIMIT {_BATCH}"

        def batches() -> Iterator[str]:
            # Keyset paging on `seq`: no lock or SQLite cursor is held between batches, so the
            # consumer may write to the store (or stop) at any point.
            last = -1 if direction == "ASC" else 2**63 - 1
            while True:
                with self._db.reading() as conn:
                    rows = conn.execute(sql, [*params, last]).fetchall()
                for _, text in rows:
                    yield text
                if len(rows) < _BATCH:
                    return
                last = rows[-1][0]

        return batches()

    def count(self, **filters: Unpack[RecordFilterArgs]) -> int:
        where, params = generations.filters(RecordFilter(**filters))
        with self._db.reading() as conn:
            if not where:
                return int(conn.execute("SELECT entries FROM totals").fetchone()[0])
            return int(conn.execute(f"SELECT COUNT(*) FROM generations{generations.where_sql(where)}", params).fetchone()[0])

    def export_jsonl(
        self,
        path: str | Path,
        *,
        after: str | None = None,
        before: str | None = None,
        order: Order = "asc",
        **filters: Unpack[RecordFilterArgs],
    ) -> int:
        """Written to a temporary file and renamed into place: a reader never sees half a file."""
        path = Path(path).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        texts = self._texts(RecordFilter(**filters), after, before, order)
        partial = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        written = 0
        try:
            with open(partial, "w", encoding="utf-8") as out:
                for text in texts:  # the stored JSON as is: no parse and re-encode
                    out.write(text)
                    out.write("\n")
                    written += 1
            os.replace(partial, path)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        return written

    # -- searches (the inspector's) ---------------------------------------------------------

    def search(self, query: ListQuery, *, offset: int = 0, limit: int = 20,
               order: Order = "desc") -> tuple[builtins.list[GenerationRecord], int]:
        return self._search.page(query, max(0, offset), limit, order)

    def change_marker(self) -> tuple[Any, ...]:
        return self._search.change_marker()

    @property
    def evicted(self) -> int:
        """Records evicted over the database's life (kept in the file, so it survives restarts)."""
        with self._db.reading() as conn:
            return int(conn.execute("SELECT evicted FROM totals").fetchone()[0])

    def stats(self) -> dict[str, int]:
        """`bytes` counts the records' JSON; `file_bytes` the database pages (indexes included);
        `failed_writes` the writes that raised since the store was opened."""
        with self._db.reading() as conn:
            entries, total, evicted = conn.execute("SELECT entries, bytes, evicted FROM totals").fetchone()
            pages = conn.execute("PRAGMA page_count").fetchone()[0]
            page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        return {"entries": entries, "bytes": total, "evicted": evicted, "file_bytes": pages * page_size,
                "failed_writes": self.failed_writes}

    def close(self) -> None:
        """Closing the last connection checkpoints the WAL into the database file. Idempotent."""
        self._search.close()
        self._db.close()


def run_path(directory: str | Path = DEFAULT_DIRECTORY) -> Path:
    """A new file for one run: `run-YYYYMMDD-HHMMSS.mmm-xxxx.sqlite3` in `directory` (names sort by start time).

    A fresh file per server start is the safe default: a trainer reading `trajectories()` or
    `export_jsonl` can never get another run's rollouts by accident; earlier runs stay on disk,
    one file each (`localoai.inspect("localoai-store")` opens the newest, any file can be opened by path)."""
    now = time.time()
    stamp = f"{time.strftime('%Y%m%d-%H%M%S', time.localtime(now))}.{int(now * 1000) % 1000:03d}"
    return Path(directory).expanduser() / f"run-{stamp}-{secrets.token_hex(2)}.sqlite3"


def newest_run(directory: str | Path = DEFAULT_DIRECTORY) -> Path | None:
    """The newest run file `run_path` made in `directory`, None when there is none."""
    runs = sorted(Path(directory).expanduser().glob("run-*.sqlite3"))
    return runs[-1] if runs else None

