"""What any generation store offers: the server writes records, the HTTP API and trainers read them.

`Store` is three protocols, one per kind of consumer: `RecordStore` (records), `EpisodeStore` (episodes and
rewards) and `RecordSearch` (the inspector's searches). Nothing here knows its consumers' types.

Filters are shared by `list`, `iterate`, `count` and `export_jsonl`, given as keyword arguments
(`kind=`, `model=`, `status=`, `episode_id=`, `visible=`, `metadata=`) and gathered into one
`RecordFilter`; every one given must match (`metadata`: every key/value pair). Order is insertion
order: a record keeps its place when `put` replaces it, so pagination stays stable while records
are updated.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypedDict, runtime_checkable

from localoai.store.records import GenerationRecord

if TYPE_CHECKING:
    from typing_extensions import Unpack  # typing.Unpack is 3.11+; only type checkers read this

    from localoai.store.episodes import StoredEpisode

Order = Literal["asc", "desc"]


class RecordFilterArgs(TypedDict, total=False):
    """The filter keywords the listing methods take, for type checkers (`**filters: Unpack[...]`).

    Must name exactly `RecordFilter`'s fields (a test checks this)."""

    kind: str | None
    model: str | None
    status: str | None
    episode_id: str | None
    visible: bool | None
    metadata: Mapping[str, str] | None


@dataclass(frozen=True)
class RecordFilter:
    """Which records a listing covers; `None` (or empty `metadata`) means "any".

    One value object so a store builds its query from one place, and a caller can build a filter
    once and pass it on as `store.list(**vars(where))`. `visible` matches
    `GenerationRecord.store_visible`: `True` for what the HTTP API may return.
    """

    kind: str | None = None
    model: str | None = None
    status: str | None = None
    episode_id: str | None = None
    visible: bool | None = None
    metadata: Mapping[str, str] | None = field(default=None, hash=False)  # a dict has no hash
    """Copied to a plain `dict[str, str]` (keys and values as `str`), or `None` when empty."""

    def __post_init__(self) -> None:
        # A string "false" from a query string would match nothing, silently: refuse it here.
        if self.visible is not None and not isinstance(self.visible, bool):
            raise TypeError(f"visible must be True, False or None, not {self.visible!r}")
        pairs = {str(key): str(value) for key, value in self.metadata.items()} if self.metadata else None
        object.__setattr__(self, "metadata", pairs or None)  # a copy: the caller's dict may change


class CursorNotFound(LookupError):
    """An `after`/`before` id that is not in the store (deleted or evicted): its place is unknown."""

    def __init__(self, param: str, record_id: str) -> None:
        super().__init__(f"{param}={record_id!r}: no stored record has this id")
        self.param = param
        self.record_id = record_id


@dataclass(frozen=True)
class ListQuery:
    """What `Store.search` filters on (the inspector's list); empty values mean "any". `tool`: a function the
    generation called; `text` matches ids, prompts, completions and errors, case-insensitively."""

    episode_id: str = ""
    status: str = ""
    kind: str = ""
    tool: str = ""
    policy_version: int | None = None
    text: str = ""
    group_id: str = ""


@runtime_checkable
class RecordStore(Protocol):
    """Generation records: what the server writes and the HTTP API lists."""

    @property
    def evicted(self) -> int:
        """How many records were deleted to stay within the size limits."""
        ...

    def put(self, record: GenerationRecord) -> None:
        """Insert, or replace the record with the same id."""
        ...

    def put_many(self, records: Sequence[GenerationRecord]) -> None:
        """`put` each record, in order, as one write: all of them are stored, or (it raises) none."""
        ...

    def get(self, id: str) -> GenerationRecord | None: ...

    def delete(self, id: str) -> bool:
        """True when a record was deleted."""
        ...

    def list(
        self,
        *,
        after: str | None = None,
        before: str | None = None,
        limit: int = 20,
        order: Order = "desc",
        **filters: Unpack[RecordFilterArgs],
    ) -> builtins.list[GenerationRecord]:
        """One page, as OpenAI's list endpoints: `desc` is newest first; `after` gives the items
        that follow that id in the chosen order, `before` the `limit` items just preceding it.
        Raises `CursorNotFound` for an unknown cursor id, `TypeError` for an unknown filter."""
        ...

    def iterate(
        self,
        *,
        after: str | None = None,
        before: str | None = None,
        order: Order = "asc",
        **filters: Unpack[RecordFilterArgs],
    ) -> Iterator[GenerationRecord]:
        """Every matching record, read in batches (never all at once); oldest first by default."""
        ...

    def count(self, **filters: Unpack[RecordFilterArgs]) -> int: ...

    def export_jsonl(
        self,
        path: str | Path,
        *,
        after: str | None = None,
        before: str | None = None,
        order: Order = "asc",
        **filters: Unpack[RecordFilterArgs],
    ) -> int:
        """Write the matching records as JSON lines (one `to_json()` per line); the count written."""
        ...

    def stats(self) -> dict[str, int]:
        """At least `entries`, `bytes` (the records' JSON), `evicted` and `failed_writes`."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class EpisodeStore(Protocol):
    """Episodes and their rewards (see `localoai.store.episodes`): a record names its episode in `episode_id`.
    Trajectories are computed from these and the records by `localoai.episodes.trajectory`."""

    def add_episode(self, episode_id: str, group: str | None = None, metadata: dict[str, Any] | None = None) -> None:
        ...

    def set_reward(self, episode_id: str, reward: float, **info: Any) -> None: ...

    def episode(self, episode_id: str) -> StoredEpisode | None: ...

    def episodes(self, group: str | None = None) -> builtins.list[StoredEpisode]: ...

    def groups(self) -> builtins.list[str]: ...


@runtime_checkable
class RecordSearch(Protocol):
    """The inspector's reads: searches the listing keywords cannot express, and a change marker to poll."""

    def search(self, query: ListQuery, *, offset: int = 0, limit: int = 20,
               order: Order = "desc") -> tuple[builtins.list[GenerationRecord], int]:
        """One page of the records `query` matches (`desc`: newest first) and how many match in all."""
        ...

    def change_marker(self) -> tuple[Any, ...]:
        """A cheap value that changes whenever a record is written (by this process or another)."""
        ...


@runtime_checkable
class Store(RecordStore, EpisodeStore, RecordSearch, Protocol):
    """Everything the server and its readers use: records, episodes, search. A consumer that needs one part
    takes that part's protocol."""
