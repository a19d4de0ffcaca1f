"""Notebook widgets over a generation store: `localoai.inspect(store)` or `server.inspect()`.

Needs `ipywidgets` (`pip install "localoai[notebook]"`); imported only when used.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from localoai.store.base import Store
    from localoai.widgets.inspector import Inspector

__all__ = ["Inspector", "inspect"]


def inspect(store: str | Path | Store, *, tokenizer: Any = None, live: bool = True, **options: Any) -> Inspector:
    """An inspector over a store: a `Store`, or the path of a saved SQLite store (no server needed);
    a directory (`"localoai-store"`) opens the newest run file the default store wrote there.

    `tokenizer` shows prompt tokens as text (without it, ids; completion tokens use the response's
    logprobs when it has them). `live` follows new records as they are written, by this process
    or another one writing the same file."""
    from localoai.store import newest_run, open_store
    from localoai.widgets.inspector import Inspector

    if isinstance(store, (str, Path)):
        if str(store) == ":memory:" or not Path(store).expanduser().exists():
            raise FileNotFoundError(f"no saved store at {store}")
        if Path(store).expanduser().is_dir():
            newest = newest_run(store)
            if newest is None:
                raise FileNotFoundError(f"no run files (run-*.sqlite3) in {store}")
            store = newest
        # No size limits: opening a store to look at it must never evict what it holds.
        store = open_store(store, max_entries=None, max_bytes=None)
    options.setdefault("title", f"localoai · {Path(store.path).name}" if getattr(store, "path", None) else
                       "localoai inspector")
    return Inspector(store, tokenizer=tokenizer, live=live, saved=True, **options)


def __getattr__(name: str) -> Any:
    if name == "Inspector":
        from localoai.widgets.inspector import Inspector

        return Inspector
    raise AttributeError(f"module 'localoai.widgets' has no attribute {name!r}")
