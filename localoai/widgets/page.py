"""`server.inspect()`: the inspector page the server serves at `/ui/`, embedded in a notebook as an iframe.

The page talks to the localoai server directly (its own thread), not to the kernel, so it stays
interactive while a cell runs. The browser must reach the server: on a local kernel it does
(`http://127.0.0.1:PORT/ui/`); on a remote kernel, install `jupyter-server-proxy` and pass
`proxy=True` (the page then loads from the notebook's own origin, `/proxy/PORT/ui/`), or fall back
to the kernel-driven widget with `server.inspect(widget=True)`.
"""

from __future__ import annotations

import html
import os
import urllib.parse
import webbrowser
from dataclasses import dataclass, replace


@dataclass(frozen=True)
class InspectorPage:
    """Where the inspector page is, and how to show it: as a cell's last expression (an iframe),
    `open()` in a browser (scripts), or its `url`."""

    url: str
    record: str | None = None
    tab: str | None = None
    api_key: str | None = None
    page_size: int = 25
    height: int = 760

    @property
    def link(self) -> str:
        """The page's URL with its selection (and key, in the fragment: never sent to a server's logs)."""
        fragment = {k: v for k, v in (("record", self.record), ("tab", self.tab), ("key", self.api_key)) if v}
        if self.page_size != 25:
            fragment["limit"] = str(self.page_size)
        return self.url + (f"#{urllib.parse.urlencode(fragment)}" if fragment else "")

    def show(self, record_id: str, tab: str | None = None) -> InspectorPage:
        """The same page opened on one record (highlighted in the list); display it or `open()` it."""
        shown = replace(self, record=record_id, tab=tab)
        object.__setattr__(self, "record", record_id)  # `inspector.show(id)` then `inspector` shows it too
        object.__setattr__(self, "tab", tab)
        return shown

    def open(self) -> bool:
        """Open the page in the default web browser (from a script)."""
        return webbrowser.open(self.link)

    def _repr_html_(self) -> str:
        return (f'<iframe class="localoai-ui" src="{html.escape(self.link)}" width="100%" height="{self.height}" '
                f'style="border:1px solid #ddd" title="localoai inspector"></iframe>'
                f'<div style="font-size:11px;color:#666">localoai inspector · <a href="{html.escape(self.url)}" '
                f'target="_blank">open in a new tab</a></div>')

    def __repr__(self) -> str:
        return f"<localoai inspector at {self.url}>"


def page_url(server_url: str, port: int, proxy: bool | str | None) -> str:
    """The page's URL as the browser should load it: direct, or through `jupyter-server-proxy`."""
    if not proxy:
        return f"{server_url}/ui/"
    prefix = proxy if isinstance(proxy, str) else os.environ.get("JUPYTERHUB_SERVICE_PREFIX", "/")
    return f"{prefix.rstrip('/')}/proxy/{port}/ui/"
