"""localoai: serve the model in your Python process over the OpenAI API.

    server = localoai.start(model)          # a transformers model already in memory
    client = server.client()                # an openai.OpenAI pointed at it
    server.inspect()                        # the live inspector (server.url + "/ui/"), in a notebook or a browser
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["Server", "__version__", "inspect", "running_servers", "start", "stop_all"]

if TYPE_CHECKING:
    from localoai.server import Server, running_servers, start, stop_all
    from localoai.widgets import inspect


def __getattr__(name: str) -> Any:
    # torch, transformers and quart load on first use, not on `import localoai`.
    if name in ("Server", "start", "running_servers", "stop_all"):
        import localoai.server as server

        return getattr(server, name)
    if name == "inspect":  # ipywidgets loads only when an inspector is asked for
        from localoai.widgets import inspect

        return inspect
    raise AttributeError(f"module 'localoai' has no attribute {name!r}")
