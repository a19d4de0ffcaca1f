"""The `generations` table of a SQLite store: its schema, and the SQL of the filters and cursors every listing shares.

A record is one row: the columns the filters use, indexed, and the record's JSON. Metadata pairs live in a side
table indexed by (key, value), so a metadata filter is an index lookup, not a JSON parse of every row.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from localoai.store.base import CursorNotFound, Order, RecordFilter

SCHEMA_VERSION = 2
"""`PRAGMA user_version` of the files this code writes. Version 1 (no `visible` column) was never
released, so it is refused rather than migrated."""

SCHEMA = f"""
BEGIN IMMEDIATE;
-- `seq` is an explicit AUTOINCREMENT key: it only ever grows (a deleted newest row's number is
-- never reused) and VACUUM cannot renumber it, so it is a stable insertion order for cursors.
CREATE TABLE IF NOT EXISTS generations (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    model TEXT NOT NULL,
    status TEXT NOT NULL,
    episode_id TEXT,
    visible INTEGER NOT NULL, -- GenerationRecord.store_visible: 1 when the HTTP API may return it
    created_at REAL NOT NULL,
    policy_version INTEGER NOT NULL,
    size INTEGER NOT NULL,
    record TEXT NOT NULL
);
-- An index on one column also holds the rowid (`seq`), so "WHERE kind = ? ORDER BY seq DESC
-- LIMIT 20" walks the index in order and stops after 20 rows.
CREATE INDEX IF NOT EXISTS generations_kind ON generations (kind);
CREATE INDEX IF NOT EXISTS generations_model ON generations (model);
CREATE INDEX IF NOT EXISTS generations_status ON generations (status);
CREATE INDEX IF NOT EXISTS generations_episode_id ON generations (episode_id);
CREATE INDEX IF NOT EXISTS generations_created_at ON generations (created_at);
-- `visible` keeps a `visible` filter in `seq` order (a page reads 20 rows, an export never sorts).
-- The HTTP API lists "visible = 1 AND kind = ?": the partial index makes that one ordered range even
-- when most visible records are of another kind, and costs nothing for hidden records (most puts).
-- A query must spell `visible = 1` literally to use it (see `filters`).
CREATE INDEX IF NOT EXISTS generations_visible ON generations (visible);
CREATE INDEX IF NOT EXISTS generations_visible_kind ON generations (kind) WHERE visible = 1;
CREATE TABLE IF NOT EXISTS generation_metadata (
    seq INTEGER NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (seq, key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS generation_metadata_pair ON generation_metadata (key, value, seq);
-- Running totals kept by triggers: the size check after each write reads one row instead of
-- counting the table, and they stay right when another process writes the same file.
CREATE TABLE IF NOT EXISTS totals (
    one INTEGER PRIMARY KEY CHECK (one = 1),
    entries INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    evicted INTEGER NOT NULL
);
INSERT OR IGNORE INTO totals VALUES (1, 0, 0, 0);
CREATE TRIGGER IF NOT EXISTS generations_inserted AFTER INSERT ON generations BEGIN
    UPDATE totals SET entries = entries + 1, bytes = bytes + NEW.size;
END;
CREATE TRIGGER IF NOT EXISTS generations_resized AFTER UPDATE OF size ON generations BEGIN
    UPDATE totals SET bytes = bytes - OLD.size + NEW.size;
END;
CREATE TRIGGER IF NOT EXISTS generations_deleted AFTER DELETE ON generations BEGIN
    UPDATE totals SET entries = entries - 1, bytes = bytes - OLD.size;
    DELETE FROM generation_metadata WHERE seq = OLD.seq;
END;
PRAGMA user_version = {SCHEMA_VERSION};
COMMIT;
"""

UPSERT = """
INSERT INTO generations (id, kind, model, status, episode_id, visible, created_at, policy_version, size, record)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (id) DO UPDATE SET
    kind = excluded.kind, model = excluded.model, status = excluded.status,
    episode_id = excluded.episode_id, visible = excluded.visible, created_at = excluded.created_at,
    policy_version = excluded.policy_version, size = excluded.size, record = excluded.record
"""


def filters(where: RecordFilter) -> tuple[list[str], list[Any]]:
    """The SQL of a filter: the one place where `RecordFilter` fields become WHERE clauses.

    Lists, so `cursors` can append the cursor bounds."""
    clauses: list[str] = []
    params: list[Any] = []
    for column, value in (
        ("kind", where.kind),
        ("model", where.model),
        ("status", where.status),
        ("episode_id", where.episode_id),
    ):
        if value is not None:
            clauses.append(f"{column} = ?")
            params.append(value)
    if where.visible is not None:
        # A literal, not a parameter: only then may SQLite use the partial index `WHERE visible = 1`.
        clauses.append("visible = 1" if where.visible else "visible = 0")
    for key, value in (where.metadata or {}).items():  # already `str` (RecordFilter copies them)
        clauses.append("seq IN (SELECT seq FROM generation_metadata WHERE key = ? AND value = ?)")
        params.extend((key, value))
    return clauses, params


def cursors(
    conn: sqlite3.Connection,
    where: list[str],
    params: list[Any],
    order: Order,
    after: str | None,
    before: str | None,
) -> None:
    """Add the `after`/`before` bounds to `where`: strictly past/short of the cursor in `order`."""
    descending = direction(order) == "DESC"
    for param, cursor, past in (("after", after, True), ("before", before, False)):
        if cursor is None:
            continue
        row = conn.execute("SELECT seq FROM generations WHERE id = ?", (cursor,)).fetchone()
        if row is None:
            raise CursorNotFound(param, cursor)
        where.append("seq < ?" if past == descending else "seq > ?")
        params.append(row[0])


def where_sql(clauses: list[str]) -> str:
    return f" WHERE {' AND '.join(clauses)}" if clauses else ""


def direction(order: str) -> str:
    if order not in ("asc", "desc"):
        raise ValueError(f"order must be 'asc' or 'desc', not {order!r}")
    return order.upper()


def opposite(order: str) -> str:
    return "ASC" if direction(order) == "DESC" else "DESC"
