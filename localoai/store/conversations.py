"""Conversations (the Conversations API): a conversation's id, creation time and metadata, and its
items in insertion order, kept in the same SQLite file as the generation records.

    conversations = ConversationStore.beside(store)     # the record store's file (or memory)
    conversation = conversations.create({"topic": "x"}, [item, ...])
    conversations.add_items(conversation["id"], [item, ...])
    conversations.list_items(conversation["id"], limit=21, order="desc")
    conversations.items(conversation["id"])              # every item, oldest first

Items are stored as given (dicts already in the shape the API returns, each with a unique `id`);
this module never interprets them. Tables are created if missing, so a record store's file written
before conversations existed gains them on first open; their own schema version is kept in
`conversation_schema` (independent of the record store's `PRAGMA user_version`).

Threads: its own connection to the file, with the record store's pragmas (WAL,
`synchronous=NORMAL`, busy timeout), used under one lock: the same trade-offs as `SQLiteStore`
(see `localoai.store.database`), without reaching into that store's private connection. WAL lets the
two connections read beside each other; their writes queue on SQLite's write lock. With
`":memory:"` the connection is its own in-memory database, living as long as this store.
"""

from __future__ import annotations

import builtins
import json
import logging
import secrets
import sqlite3
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from localoai.store.base import CursorNotFound, Order, Store
from localoai.store.database import Database
from localoai.store.sqlite import SQLiteStore

logger = logging.getLogger("localoai.store")

SCHEMA_VERSION = 1
"""The `conversation_schema.version` of the tables this code writes."""

_SCHEMA = f"""
BEGIN IMMEDIATE;
-- `seq`: a stable creation order (AUTOINCREMENT numbers are never reused).
CREATE TABLE IF NOT EXISTS conversations (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    created_at INTEGER NOT NULL,
    metadata TEXT NOT NULL,
    next_position INTEGER NOT NULL DEFAULT 0 -- positions only grow: a cursor's place never moves
);
-- Clustered on (conversation, position): a page of items is one ordered range read.
CREATE TABLE IF NOT EXISTS conversation_items (
    conversation_id TEXT NOT NULL,
    position INTEGER NOT NULL,
    id TEXT NOT NULL,
    item TEXT NOT NULL,
    PRIMARY KEY (conversation_id, position)
) WITHOUT ROWID;
CREATE UNIQUE INDEX IF NOT EXISTS conversation_items_id ON conversation_items (conversation_id, id);
CREATE TABLE IF NOT EXISTS conversation_schema (
    one INTEGER PRIMARY KEY CHECK (one = 1),
    version INTEGER NOT NULL
);
INSERT OR IGNORE INTO conversation_schema VALUES (1, {SCHEMA_VERSION});
COMMIT;
"""


class ConversationNotFound(LookupError):
    def __init__(self, conversation_id: str) -> None:
        super().__init__(f"no conversation has id {conversation_id!r}")
        self.conversation_id = conversation_id


class DuplicateItemId(ValueError):
    """An item whose `id` the conversation already holds (or that repeats within one call)."""

    def __init__(self, index: int, item_id: str) -> None:
        super().__init__(f"the conversation already has an item with id {item_id!r}")
        self.index = index
        self.item_id = item_id


class ConversationStore:
    """Conversations and their items in one SQLite file (or in memory with `":memory:"`).

    Conversations are returned as `{"id", "object": "conversation", "created_at", "metadata"}`,
    items as the dicts that were stored. Every method is thread-safe and short: one indexed
    lookup or one page under the lock, JSON encoded and parsed outside it.
    """

    def __init__(self, path: str | Path = ":memory:") -> None:
        self.memory = str(path) == ":memory:"
        self.path: Path | None = None if self.memory else Path(path).expanduser()
        self._db = Database(self.path, create=self._create)

    @classmethod
    def beside(cls, store: Store) -> ConversationStore:
        """The conversation store for a record store: the same file for a file-backed
        `SQLiteStore`, memory for an in-memory one or for another kind of `Store`."""
        if isinstance(store, SQLiteStore) and store.path is not None:
            return cls(store.path)
        if not isinstance(store, SQLiteStore):
            logger.info("record store %r is not a SQLiteStore: conversations are kept in memory", store)
        return cls(":memory:")

    def __repr__(self) -> str:
        return f"ConversationStore({':memory:' if self.path is None else str(self.path)!r})"

    # -- connection --------------------------------------------------------------------

    def _create(self, conn: sqlite3.Connection) -> None:
        conn.executescript(_SCHEMA)  # IF NOT EXISTS throughout: safe on every open, in any process
        version = conn.execute("SELECT version FROM conversation_schema").fetchone()[0]
        if version != SCHEMA_VERSION:
            raise RuntimeError(
                f"store {self.path or ':memory:'} has conversation schema version {version}; this localoai "
                f"reads only version {SCHEMA_VERSION}: use another store path, or move this file away"
            )

    def close(self) -> None:
        """Idempotent. An in-memory store's conversations are gone afterwards."""
        self._db.close()

    # -- conversations -------------------------------------------------------------------

    def create(
        self,
        metadata: Mapping[str, str] | None = None,
        items: Sequence[Mapping[str, Any]] = (),
        *,
        conversation_id: str | None = None,
        created_at: int | None = None,
    ) -> dict[str, Any]:
        """A new conversation holding `items` (in order); returns the conversation."""
        conversation = {
            "id": conversation_id or f"conv_{secrets.token_hex(24)}",  # OpenAI's ids are this long
            "object": "conversation",
            "created_at": int(time.time()) if created_at is None else int(created_at),
            "metadata": dict(metadata or {}),
        }
        rows = _item_rows(items)
        meta = json.dumps(conversation["metadata"])

        def work(conn: sqlite3.Connection) -> None:
            conn.execute("INSERT INTO conversations (id, created_at, metadata) VALUES (?, ?, ?)",
                         (conversation["id"], conversation["created_at"], meta))
            _insert_items(conn, conversation["id"], 0, rows)

        self._db.write(work)
        return conversation

    def get(self, conversation_id: str) -> dict[str, Any] | None:
        with self._db.reading() as conn:
            row = conn.execute("SELECT id, created_at, metadata FROM conversations WHERE id = ?",
                               (conversation_id,)).fetchone()
        return None if row is None else _conversation(row)

    def update_metadata(self, conversation_id: str, metadata: Mapping[str, str] | None) -> dict[str, Any]:
        """Replace the metadata; returns the conversation. Raises `ConversationNotFound`."""
        meta = json.dumps(dict(metadata or {}))

        def work(conn: sqlite3.Connection) -> tuple[Any, ...]:
            conn.execute("UPDATE conversations SET metadata = ? WHERE id = ?", (meta, conversation_id))
            return _conversation_row(conn, conversation_id)

        return _conversation(self._db.write(work))

    def delete(self, conversation_id: str) -> bool:
        """Delete a conversation and its items; False when there was none."""

        def work(conn: sqlite3.Connection) -> bool:
            conn.execute("DELETE FROM conversation_items WHERE conversation_id = ?", (conversation_id,))
            return conn.execute("DELETE FROM conversations WHERE id = ?", (conversation_id,)).rowcount > 0

        return bool(self._db.write(work))

    # -- items ---------------------------------------------------------------------------

    def add_items(self, conversation_id: str, items: Sequence[Mapping[str, Any]]) -> builtins.list[dict[str, Any]]:
        """Append `items` (all or none); returns them. Raises `ConversationNotFound`, and
        `DuplicateItemId` for an id the conversation already has."""
        rows = _item_rows(items)

        def work(conn: sqlite3.Connection) -> None:
            row = conn.execute("SELECT next_position FROM conversations WHERE id = ?", (conversation_id,)).fetchone()
            if row is None:
                raise ConversationNotFound(conversation_id)
            _insert_items(conn, conversation_id, row[0], rows)

        self._db.write(work)
        return [dict(item) for item in items]

    def get_item(self, conversation_id: str, item_id: str) -> dict[str, Any] | None:
        """One item, or None. Raises `ConversationNotFound`."""
        with self._db.reading() as conn:
            _conversation_row(conn, conversation_id)
            row = conn.execute("SELECT item FROM conversation_items WHERE conversation_id = ? AND id = ?",
                               (conversation_id, item_id)).fetchone()
        return None if row is None else json.loads(row[0])

    def delete_item(self, conversation_id: str, item_id: str) -> dict[str, Any] | None:
        """Delete one item; returns the conversation, or None when it has no such item.
        Raises `ConversationNotFound`."""

        def work(conn: sqlite3.Connection) -> tuple[Any, ...] | None:
            row = _conversation_row(conn, conversation_id)
            deleted = conn.execute("DELETE FROM conversation_items WHERE conversation_id = ? AND id = ?",
                                   (conversation_id, item_id)).rowcount
            return row if deleted else None

        row = self._db.write(work)
        return None if row is None else _conversation(row)

    def list_items(
        self, conversation_id: str, *, after: str | None = None, limit: int = 20, order: Order = "desc"
    ) -> builtins.list[dict[str, Any]]:
        """Up to `limit` items past the item `after`, in insertion order (`asc`) or newest first.
        Raises `ConversationNotFound`, and `CursorNotFound` for an `after` the conversation lacks."""
        if limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        if order not in ("asc", "desc"):
            raise ValueError(f"order must be 'asc' or 'desc', not {order!r}")
        descending = order == "desc"
        with self._db.reading() as conn:
            _conversation_row(conn, conversation_id)
            where, params = "conversation_id = ?", [conversation_id]
            if after is not None:
                cursor = conn.execute("SELECT position FROM conversation_items WHERE conversation_id = ? AND id = ?",
                                      (conversation_id, after)).fetchone()
                if cursor is None:
                    raise CursorNotFound("after", after)
                where += " AND position < ?" if descending else " AND position > ?"
                params.append(cursor[0])
            sql = (f"SELECT item FROM conversation_items WHERE {where} "
                   f"ORDER BY position {'DESC' if descending else 'ASC'} LIMIT ?")
            rows = conn.execute(sql, [*params, limit]).fetchall()
        return [json.loads(text) for (text,) in rows]

    def items(self, conversation_id: str) -> builtins.list[dict[str, Any]]:
        """Every item, oldest first (what a response in this conversation renders).
        Raises `ConversationNotFound`."""
        with self._db.reading() as conn:
            _conversation_row(conn, conversation_id)
            rows = conn.execute("SELECT item FROM conversation_items WHERE conversation_id = ? ORDER BY position",
                                (conversation_id,)).fetchall()
        return [json.loads(text) for (text,) in rows]


def _item_rows(items: Sequence[Mapping[str, Any]]) -> builtins.list[tuple[str, str]]:
    """(id, JSON) per item, encoded before the lock; an id repeated within the call is refused."""
    rows: builtins.list[tuple[str, str]] = []
    seen: set[str] = set()
    for index, item in enumerate(items):
        item_id = item.get("id")
        if not isinstance(item_id, str) or not item_id:
            raise ValueError(f"items[{index}] has no id")
        if item_id in seen:
            raise DuplicateItemId(index, item_id)
        seen.add(item_id)
        rows.append((item_id, json.dumps(item)))
    return rows


def _insert_items(conn: sqlite3.Connection, conversation_id: str, start: int, rows: Sequence[tuple[str, str]]) -> None:
    if not rows:
        return
    taken = {item_id for (item_id,) in conn.execute(
        f"SELECT id FROM conversation_items WHERE conversation_id = ? AND id IN ({','.join('?' * len(rows))})",
        [conversation_id, *(item_id for item_id, _ in rows)],
    )}
    for index, (item_id, _) in enumerate(rows):
        if item_id in taken:
            raise DuplicateItemId(index, item_id)
    conn.executemany(
        "INSERT INTO conversation_items (conversation_id, position, id, item) VALUES (?, ?, ?, ?)",
        [(conversation_id, start + offset, item_id, text) for offset, (item_id, text) in enumerate(rows)],
    )
    conn.execute("UPDATE conversations SET next_position = ? WHERE id = ?", (start + len(rows), conversation_id))


def _conversation_row(conn: sqlite3.Connection, conversation_id: str) -> tuple[Any, ...]:
    row = conn.execute("SELECT id, created_at, metadata FROM conversations WHERE id = ?",
                       (conversation_id,)).fetchone()
    if row is None:
        raise ConversationNotFound(conversation_id)
    return tuple(row)


def _conversation(row: Sequence[Any]) -> dict[str, Any]:
    return {"id": row[0], "object": "conversation", "created_at": row[1], "metadata": json.loads(row[2])}
