"""What any generation store offers: the server writes records, the HTTP API and trainers read them.

Filters are shared by `list`, `iterate`, `count` and `export_jsonl`; every one given must
match (`metadata`: every key/value pair). Order is insertion order: a record keeps its
place when `put` replaces it, so pagination stays stable while records are updated.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

from localoai.store.records import GenerationRecord

Order = Literal["asc", "desc"]


class CursorNotFound(LookupError):
    """An `after`/`before` id that is not in the store (deleted or evicted): its place is unknown."""

    def __init__(self, param: str, record_id: str) -> None:
        super().__init__(f"{param}={record_id!r}: no stored record has this id")
        self.param = param
        self.record_id = record_id


@runtime_checkable
class Store(Protocol):
    @property
    def evicted(self) -> int:
        """How many records were deleted to stay within the size limits."""
        ...

    def put(self, record: GenerationRecord) -> None:
        """Insert, or replace the record with the same id."""
        ...

    def get(self, id: str) -> GenerationRecord | None: ...

    def delete(self, id: str) -> bool:
        """True when a record was deleted."""
        ...

    def list(
        self,
        *,
        kind: str | None = None,
        model: str | None = None,
        status: str | None = None,
        episode_id: str | None = None,
        metadata: Mapping[str, str] | None = None,
        after: str | None = None,
        before: str | None = None,
        limit: int = 20,
        order: Order = "desc",
    ) -> builtins.list[GenerationRecord]:
        """One page, as OpenAI's list endpoints: `desc` is newest first; `after` gives the items
        that follow that id in the chosen order, `before` the `limit` items just preceding it.
        Raises `CursorNotFound` for an unknown cursor id."""
        ...

    def iterate(
        self,
        *,
        kind: str | None = None,
        model: str | None = None,
        status: str | None = None,
        episode_id: str | None = None,
        metadata: Mapping[str, str] | None = None,
        after: str | None = None,
        before: str | None = None,
        order: Order = "asc",
    ) -> Iterator[GenerationRecord]:
        """Every matching record, read in batches (never all at once); oldest first by default."""
        ...

    def count(
        self,
        *,
        kind: str | None = None,
        model: str | None = None,
        status: str | None = None,
        episode_id: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> int: ...

    def export_jsonl(
        self,
        path: str | Path,
        *,
        kind: str | None = None,
        model: str | None = None,
        status: str | None = None,
        episode_id: str | None = None,
        metadata: Mapping[str, str] | None = None,
        after: str | None = None,
        before: str | None = None,
        order: Order = "asc",
    ) -> int:
        """Write the matching records as JSON lines (one `to_json()` per line); the count written."""
        ...

    def stats(self) -> dict[str, int]:
        """At least `entries`, `bytes` (the records' JSON) and `evicted`."""
        ...

    def close(self) -> None: ...
