"""Where every generation is kept, token-exact, for the HTTP API's stored objects and for trainers.

    store = open_store("runs/exp1/store.sqlite3")     # or ":memory:", or None for the default
    store.put(record)
    for record in store.iterate(status="completed"): ...
    store.list(kind="chat.completion", visible=True, limit=20)   # what the HTTP API may return

    recorder = Recorder(store)                         # the server writes through this, off its loop
    recorder.record(record)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from localoai.store.base import (
    CursorNotFound,
    EpisodeStore,
    ListQuery,
    Order,
    RecordFilter,
    RecordFilterArgs,
    RecordSearch,
    RecordStore,
    Store,
)
from localoai.store.conversations import ConversationNotFound, ConversationStore, DuplicateItemId
from localoai.store.episodes import StoredEpisode
from localoai.store.recorder import Recorder
from localoai.store.records import CompletionTrace, GenerationRecord, RecordKind, RecordStatus
from localoai.store.sqlite import (
    DEFAULT_DIRECTORY,
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_ENTRIES,
    DEFAULT_PATH,
    SQLiteStore,
    newest_run,
    run_path,
)

__all__ = [
    "DEFAULT_DIRECTORY",
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_ENTRIES",
    "DEFAULT_PATH",
    "CompletionTrace",
    "ConversationNotFound",
    "ConversationStore",
    "CursorNotFound",
    "DuplicateItemId",
    "EpisodeStore",
    "GenerationRecord",
    "ListQuery",
    "Order",
    "RecordFilter",
    "RecordFilterArgs",
    "RecordKind",
    "RecordSearch",
    "RecordStatus",
    "RecordStore",
    "Recorder",
    "SQLiteStore",
    "Store",
    "StoredEpisode",
    "newest_run",
    "open_store",
    "run_path",
    "store_location",
]


def open_store(spec: str | Path | Store | None = None, **options: Any) -> Store:
    """A store from what a user passes: `None` is a new file for this run (`run_path()`:
    `localoai-store/run-<start time, ms>-<4 hex>.sqlite3` under the working directory, so runs never
    mix), `":memory:"` an in-memory store, any other string or path a
    SQLite file (created with its directories), and a `Store` is used as is.

    `options` (`max_entries`, `max_bytes`) go to `SQLiteStore`; they cannot apply to a given store.
    """
    if isinstance(spec, (str, Path)):
        return SQLiteStore(spec, **options)
    if spec is None:
        return SQLiteStore(run_path(), **options)
    if isinstance(spec, Store):
        if options:
            raise TypeError(f"options {sorted(options)} apply only when open_store creates the store")
        return spec
    raise TypeError(f"store must be a path, ':memory:', a Store or None; got {type(spec).__name__}")


def store_location(store: Store) -> str:
    """Where `store` keeps its records, for logs and reprs: the file's absolute path, `:memory:`, or its repr."""
    if getattr(store, "memory", False):
        return ":memory:"
    path = getattr(store, "path", None)
    return str(Path(path).resolve()) if path is not None else repr(store)
