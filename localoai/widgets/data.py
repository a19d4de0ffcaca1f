"""Every read the inspector makes of a store, in one place.

The list is read a page at a time, never the whole store: on a `SQLiteStore` the filters that
the store's API has no keyword for (tool name, policy version, text search) run as SQL over the
stored JSON, so a page of 10,000 records costs one indexed query plus one count; any other
`Store` is scanned with `iterate()` and filtered here (correct, slower). Rewards come from the
store's episodes (`Store.episode`), a record's GRPO group from its `group_id`.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from localoai.store.base import Store
from localoai.store.records import GenerationRecord
from localoai.store.sqlite import SQLiteStore
from localoai.widgets.format import Summary, group_id, summarize, tool_names

PAGE_SIZE = 25


@dataclass(frozen=True)
class ListQuery:
    """The list's filters; empty values mean "any". `text` matches ids, prompts, completions, errors."""

    episode_id: str = ""
    status: str = ""
    kind: str = ""
    tool: str = ""
    policy_version: int | None = None
    text: str = ""
    group_id: str = ""


@dataclass(frozen=True)
class Page:
    rows: list[Summary]
    total: int
    offset: int
    limit: int

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.limit)) if self.limit else 1

    @property
    def number(self) -> int:
        """This page's number, from 1."""
        return self.offset // self.limit + 1 if self.limit else 1


class StoreReader:
    """Reads for the inspector. Thread-safe as the store is: the live poller and the notebook both call it."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._sql = isinstance(store, SQLiteStore)
        self._own: sqlite3.Connection | None = None
        self._own_lock = threading.Lock()
        path = getattr(store, "path", None) if self._sql else None
        if path is not None:
            # A file: read through a connection of our own, so a long filter never holds the store's
            # lock (its writes, which requests wait for, go on beside our reads: WAL).
            self._own = sqlite3.connect(f"{Path(path).resolve().as_uri()}?mode=ro", uri=True, check_same_thread=False)
            self._own.execute("PRAGMA busy_timeout = 10000")

    def close(self) -> None:
        """Close this reader's own connection (the store stays open). Idempotent."""
        with self._own_lock:
            if self._own is not None:
                self._own.close()
                self._own = None

    # -- the list ----------------------------------------------------------------------------

    def page(self, query: ListQuery, offset: int = 0, limit: int = PAGE_SIZE) -> Page:
        """One page of summaries, newest first, and how many records match in all."""
        offset = max(0, offset)
        if self._sql:
            rows, total = self._sql_page(query, offset, limit)
        else:
            rows, total = self._scan_page(query, offset, limit)
        return Page([summarize(record) for record in rows], total, offset, limit)

    def _sql_page(self, query: ListQuery, offset: int, limit: int) -> tuple[list[GenerationRecord], int]:
        with self._connection() as conn:
            where, params = _where(query)
            if not where:
                texts = conn.execute("SELECT record FROM generations ORDER BY seq DESC LIMIT ? OFFSET ?",
                                     (limit, offset)).fetchall()
                total = conn.execute("SELECT entries FROM totals").fetchone()[0]
                return [GenerationRecord.from_json(text) for (text,) in texts], int(total)
            # One pass over the matches gives both the count and the page (ids only: a few bytes each).
            matching = conn.execute(f"SELECT seq FROM generations WHERE {' AND '.join(where)} ORDER BY seq DESC",
                                    params).fetchall()
            page = [seq for (seq,) in matching[offset:offset + limit]]
            texts = conn.execute(
                f"SELECT record FROM generations WHERE seq IN ({','.join('?' * len(page))}) ORDER BY seq DESC", page
            ).fetchall() if page else []
        return [GenerationRecord.from_json(text) for (text,) in texts], len(matching)

    def _scan_page(self, query: ListQuery, offset: int, limit: int) -> tuple[list[GenerationRecord], int]:
        keywords = {key: value for key, value in (("kind", query.kind), ("status", query.status),
                                                  ("episode_id", query.episode_id)) if value}
        rows: list[GenerationRecord] = []
        total = 0
        for record in self.store.iterate(order="desc", **keywords):  # type: ignore[arg-type]
            if matches(record, query):
                if offset <= total < offset + limit:
                    rows.append(record)
                total += 1
        return rows, total

    # -- single records, episodes, groups -------------------------------------------------------

    def get(self, record_id: str) -> GenerationRecord | None:
        return self.store.get(record_id)

    def episode(self, episode_id: str, limit: int = 500) -> list[GenerationRecord]:
        """The generations of one episode, oldest first."""
        return list(self.store.list(episode_id=episode_id, order="asc", limit=limit))

    def chain(self, record: GenerationRecord, limit: int = 100) -> list[GenerationRecord]:
        """A response and the responses it continues (`previous_response_id`), oldest first."""
        chain = [record]
        while chain[0].previous_response_id and len(chain) < limit:
            earlier = self.get(chain[0].previous_response_id)
            if earlier is None:
                break
            chain.insert(0, earlier)
        return chain

    def previous_turn(self, record: GenerationRecord) -> GenerationRecord | None:
        """The generation whose tokens this one re-sends: its previous response, else the episode's
        generation just before it."""
        if record.previous_response_id:
            return self.get(record.previous_response_id)
        if record.episode_id:
            # The store's own order (insertion), never timestamps: turns within a second tie.
            episode = self.episode(record.episode_id)
            at = next((i for i, r in enumerate(episode) if r.id == record.id), len(episode))
            return episode[at - 1] if at > 0 else None
        return None

    def group(self, group: str, limit: int = 2000) -> dict[str, list[GenerationRecord]]:
        """A group's episodes (records without an episode count as their own), each oldest first."""
        if self._sql:
            with self._connection() as conn:
                where, params = _where(ListQuery(group_id=group))
                texts = conn.execute(
                    f"SELECT record FROM generations WHERE {' AND '.join(where)} ORDER BY seq LIMIT ?", [*params, limit]
                ).fetchall()
            records = [GenerationRecord.from_json(text) for (text,) in texts]
        else:
            records = [r for r in self.store.iterate() if group_id(r) == group][:limit]
        episodes: dict[str, list[GenerationRecord]] = {}
        for record in records:
            episodes.setdefault(record.episode_id or record.id, []).append(record)
        return episodes

    def reward(self, episode_id: str | None) -> float | None:
        """The reward attached to the episode (`store.set_reward`), `None` when it has none."""
        stored = self.store.episode(episode_id) if episode_id else None
        return stored.reward if stored is not None else None

    # -- live updates -------------------------------------------------------------------------

    def change_marker(self) -> tuple[Any, ...]:
        """A cheap value that changes whenever a record is written (by this or another process):
        `data_version` changes when another connection commits, `total_changes` when this one writes."""
        if self._sql:
            with self._connection() as conn:
                version = conn.execute("PRAGMA data_version").fetchone()[0]
                return (conn.total_changes, version)
        stats = self.store.stats()
        newest = self.store.list(limit=1)
        return (stats.get("entries"), newest[0].id if newest else None, newest[0].status if newest else None)

    # -- SQLite access ----------------------------------------------------------------------------

    @contextlib.contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        if self._own is not None:
            with self._own_lock:
                if self._own is None:
                    raise RuntimeError("this inspector's store reader is closed")
                yield self._own
            return
        # An in-memory store is only visible through the store's own connection, under its lock.
        with self.store._db.reading() as conn:  # type: ignore[attr-defined]
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


def matches(record: GenerationRecord, query: ListQuery) -> bool:
    """The same filter as the SQL, on a record in memory (for stores that are not SQLite)."""
    if query.kind and record.kind != query.kind:
        return False
    if query.status and record.status != query.status:
        return False
    if query.episode_id and record.episode_id != query.episode_id:
        return False
    if query.policy_version is not None and record.policy_version != query.policy_version:
        return False
    if query.group_id and group_id(record) != query.group_id:
        return False
    if query.tool and query.tool not in tool_names(record):
        return False
    if query.text:
        needle = query.text.lower()
        haystacks = [record.id, record.prompt_text, *(s.get("text", "") for s in record.completions),
                     (record.error or {}).get("message", "")]
        if not any(needle in str(h).lower() for h in haystacks):
            return False
    return True
