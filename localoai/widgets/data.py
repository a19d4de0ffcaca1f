"""Every read the inspector makes of a store, in one place, through the store's API.

The list is read a page at a time, never the whole store: a `SQLiteStore` is searched by
`localoai.store.search.StoreSearch` (SQL over the stored JSON, in the store package); any other
`Store` is scanned with `iterate()` and filtered here (correct, slower). Rewards come from the
store's episodes (`Store.episode`), a record's GRPO group from its `group_id`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from localoai.store.base import Store
from localoai.store.records import GenerationRecord
from localoai.store.search import ListQuery, StoreSearch
from localoai.store.sqlite import SQLiteStore
from localoai.widgets.format import Summary, group_id, summarize, tool_names

PAGE_SIZE = 25

__all__ = ["PAGE_SIZE", "ListQuery", "Page", "StoreReader", "matches"]


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
        self._search = StoreSearch(store) if isinstance(store, SQLiteStore) else None

    def close(self) -> None:
        """Close this reader's own connection, if it has one (the store stays open). Idempotent."""
        if self._search is not None:
            self._search.close()

    # -- the list ----------------------------------------------------------------------------

    def page(self, query: ListQuery, offset: int = 0, limit: int = PAGE_SIZE) -> Page:
        """One page of summaries, newest first, and how many records match in all."""
        offset = max(0, offset)
        if self._search is not None:
            rows, total = self._search.page(query, offset, limit)
        else:
            rows, total = self._scan_page(query, offset, limit)
        return Page([summarize(record) for record in rows], total, offset, limit)

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

    def recent(self, limit: int) -> list[GenerationRecord]:
        """The `limit` most recent records, oldest first (for the plots; off the store's lock when a file)."""
        if self._search is not None:
            records = self._search.page(ListQuery(), 0, limit)[0]
        else:
            records = self.store.list(order="desc", limit=limit)
        return records[::-1]

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
        if self._search is not None:
            records = self._search.group(group, limit)
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
        """A cheap value that changes whenever a record is written (by this or another process)."""
        if self._search is not None:
            return self._search.change_marker()
        stats = self.store.stats()
        newest = self.store.list(limit=1)
        return (stats.get("entries"), newest[0].id if newest else None, newest[0].status if newest else None)


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
