"""Every read the inspector makes of a store, in one place, through the store's API.

The list is read a page at a time, never the whole store, through `Store.search` (the SQLite store runs it as
SQL over the stored JSON); live updates poll `Store.change_marker`. Rewards come from the store's episodes
(`Store.episode`), a record's GRPO group from its `group_id`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from localoai.store.base import ListQuery, Store
from localoai.store.records import GenerationRecord
from localoai.widgets.format import Summary, summarize

PAGE_SIZE = 25

__all__ = ["PAGE_SIZE", "ListQuery", "Page", "StoreReader"]


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

    def close(self) -> None:
        """Nothing to release: the store owns its connections (kept for the callers that close readers)."""

    # -- the list ----------------------------------------------------------------------------

    def page(self, query: ListQuery, offset: int = 0, limit: int = PAGE_SIZE) -> Page:
        """One page of summaries, newest first, and how many records match in all."""
        offset = max(0, offset)
        rows, total = self.store.search(query, offset=offset, limit=limit)
        return Page([summarize(record) for record in rows], total, offset, limit)

    def recent(self, limit: int) -> list[GenerationRecord]:
        """The `limit` most recent records, oldest first (for the plots)."""
        return self.store.search(ListQuery(), limit=limit)[0][::-1]

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
        records = self.store.search(ListQuery(group_id=group), limit=limit, order="asc")[0]
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
        return self.store.change_marker()
