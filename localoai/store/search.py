"""`SQLiteStore.search`: the inspector's list, filters the `Store` listing keywords have no keyword for.

Tool name, policy version, group and text filters run as SQL over the stored JSON, so a page of
10,000 records costs one indexed query plus one count. A file store is read through a read-only
connection of this reader's own, so a long filter never holds the store's lock (its writes, which
requests wait for, go on beside the reads: WAL); an in-memory store only through its own connection.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from localoai.store import generations
from localoai.store.base import ListQuery, Order
from localoai.store.database import Database
from localoai.store.records import GenerationRecord

__all__ = ["ListQuery", "StoreSearch"]


class StoreSearch:
    """Paged, filtered reads of one SQLite store (thread-safe: one lock around its own connection)."""

    def __init__(self, path: Path | None, db: Database) -> None:
        self._db = db
        self._own: sqlite3.Connection | None = None
        self._own_lock = threading.Lock()
        self._path = path
        self._closed = False

    def close(self) -> None:
        """Close this reader's own connection (the store's stays open). Idempotent."""
        with self._own_lock:
            self._closed = True
            if self._own is not None:
                self._own.close()
                self._own = None

    def page(self, query: ListQuery, offset: int, limit: int, order: Order = "desc") -> tuple[list[GenerationRecord], int]:
        """The records of one page in `order` of insertion, and how many match in all."""
        direction = generations.direction(order)
        with self._connection() as conn:
            where, params = _where(query)
            if not where:
                texts = conn.execute(f"SELECT record FROM generations ORDER BY seq {direction} LIMIT ? OFFSET ?",
                                     (limit, offset)).fetchall()
                total = conn.execute("SELECT entries FROM totals").fetchone()[0]
                return [GenerationRecord.from_json(text) for (text,) in texts], int(total)
            # One pass over the matches gives both the count and the page (ids only: a few bytes each).
            matching = conn.execute(
                f"SELECT seq FROM generations WHERE {' AND '.join(where)} ORDER BY seq {direction}", params
            ).fetchall()
            page = [seq for (seq,) in matching[offset:offset + limit]]
            texts = conn.execute(
                f"SELECT record FROM generations WHERE seq IN ({','.join('?' * len(page))}) ORDER BY seq {direction}",
                page,
            ).fetchall() if page else []
        return [GenerationRecord.from_json(text) for (text,) in texts], len(matching)

    def change_marker(self) -> tuple[Any, ...]:
        """`data_version` changes when another connection commits, `total_changes` when this one writes."""
        with self._connection() as conn:
            version = conn.execute("PRAGMA data_version").fetchone()[0]
            return (conn.total_changes, version)

    @contextlib.contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        if self._path is not None:
            with self._own_lock:
                if self._closed:
                    raise RuntimeError("this store search is closed")
                if self._own is None:  # opened on first use: a store that is never searched opens none
                    self._own = sqlite3.connect(f"{self._path.resolve().as_uri()}?mode=ro", uri=True,
                                                check_same_thread=False)
                    self._own.execute("PRAGMA busy_timeout = 10000")
                yield self._own
            return
        with self._db.reading() as conn:  # in memory: visible only through the store's connection
            yield conn


_GROUP_JSON = "json_extract(record, '$.group_id')"

# The tool and text filters first look for the value in the record's raw JSON (a plain substring
# search, fast), and parse the JSON only for the records that contain it.
_TOOL_CALLED = """(
    instr(record, ?) > 0 AND (
        EXISTS (SELECT 1 FROM json_each(record, '$.output.choices') AS c,
                              json_each(c.value, '$.message.tool_calls') AS t
                WHERE json_extract(t.value, '$.function.name') = ?)
        OR EXISTS (SELECT 1 FROM json_each(record, '$.output.output') AS o
                   WHERE json_extract(o.value, '$.type') = 'function_call' AND json_extract(o.value, '$.name') = ?)
    )
)"""

_TEXT_FOUND = """(
    instr(lower(record), ?) > 0 AND (
        instr(lower(id), ?) > 0
        OR instr(lower(json_extract(record, '$.prompt_text')), ?) > 0
        OR EXISTS (SELECT 1 FROM json_each(record, '$.completions') AS s
                   WHERE instr(lower(json_extract(s.value, '$.text')), ?) > 0)
        OR instr(lower(coalesce(json_extract(record, '$.error.message'), '')), ?) > 0
    )
)"""


def _where(query: ListQuery) -> tuple[list[str], list[Any]]:
    """The SQL of a `ListQuery` (the indexed columns first, so SQLite narrows with them)."""
    clauses: list[str] = []
    params: list[Any] = []
    for column, value in (("kind", query.kind), ("status", query.status), ("episode_id", query.episode_id)):
        if value:
            clauses.append(f"{column} = ?")
            params.append(value)
    if query.policy_version is not None:
        clauses.append("policy_version = ?")
        params.append(query.policy_version)
    if query.group_id:  # a record's group is in its JSON only (the table has no column for it)
        clauses.append(f"instr(record, ?) > 0 AND {_GROUP_JSON} = ?")
        params += [f'"group_id":{json.dumps(query.group_id)}', query.group_id]
    if query.tool:
        clauses.append(_TOOL_CALLED)
        # Records are compact JSON (`GenerationRecord.to_json`): a call's name is written `"name":"..."`.
        params += [f'"name":{json.dumps(query.tool)}', query.tool, query.tool]
    if query.text:
        needle = query.text.lower()
        clauses.append(_TEXT_FOUND)
        # As the text appears inside the record's (ASCII, escaped) JSON: a necessary condition.
        params += [json.dumps(needle)[1:-1].lower(), *[needle] * 4]
    return clauses, params
