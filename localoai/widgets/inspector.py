"""The inspector widget: a filtered, paged list of generations and views of the selected one.

Layout: filters, the list (a `Select`, one page at a time), and tabs for the selected record
(episode, tokens, group, raw), each an `HTML` widget filled by `localoai.widgets.render`.

Live updates: a daemon thread asks the store every `poll_interval` seconds whether anything was
written (one cheap query) and, if so, refreshes the page: however fast requests arrive, the
front end gets at most one update per interval. The refresh runs on that thread rather than on
the kernel's event loop because a training cell blocks the loop for minutes, and that is when
the researcher wants to watch; widget state changes are sent through the kernel's iopub thread,
which takes messages from any thread. One lock serialises refreshes with the notebook's own
clicks, so the two never interleave their changes to the same widgets.
"""

from __future__ import annotations

import html
import logging
import threading
from typing import Any

import ipywidgets as widgets

from localoai.store.base import Store
from localoai.store.records import GenerationRecord
from localoai.widgets import render
from localoai.widgets.data import PAGE_SIZE, ListQuery, Page, StoreReader
from localoai.widgets.views import TABS, RecordViews

logger = logging.getLogger("localoai.widgets")

STATUS_OPTIONS = [("any status", ""), ("completed", "completed"), ("failed", "failed"),
                  ("incomplete", "incomplete"), ("cancelled", "cancelled"), ("in progress", "in_progress")]
ENDPOINT_OPTIONS = [("any endpoint", ""), ("responses", "response"), ("compactions", "response.compaction"),
                    ("chat", "chat.completion"), ("completions", "text_completion"), ("messages", "message"),
                    ("generate", "generate"), ("embeddings", "embedding")]


class Inspector(widgets.VBox):
    """Browse a store's generations; `live=True` follows new ones as the server writes them."""

    def __init__(
        self,
        store: Store,
        *,
        tokenizer: Any = None,
        live: bool = True,
        page_size: int = PAGE_SIZE,
        poll_interval: float = 0.5,
        title: str = "localoai inspector",
        saved: bool = False,
    ) -> None:
        self.reader = StoreReader(store)
        self.record_views = RecordViews(self.reader, tokenizer)
        self.page_size = page_size
        self.poll_interval = poll_interval
        self.offset = 0
        self.current: Page | None = None
        self.record: GenerationRecord | None = None
        self._lock = threading.RLock()
        self._filling = False  # set while the list's options are replaced: not a user's click
        self._rendered: set[int] = set()  # tabs already rendered for `self.record`
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None
        self._live_wanted = live
        self._seen: tuple[Any, ...] = ()  # the store's change marker when the list was last read

        text = {"continuous_update": False, "layout": widgets.Layout(width="170px")}
        self.episode_filter = widgets.Text(placeholder="episode id", **text)
        self.group_filter = widgets.Text(placeholder="group id", **text)
        self.status_filter = widgets.Dropdown(options=STATUS_OPTIONS, layout=widgets.Layout(width="130px"))
        self.endpoint_filter = widgets.Dropdown(options=ENDPOINT_OPTIONS, layout=widgets.Layout(width="140px"))
        self.tool_filter = widgets.Text(placeholder="tool name", **text)
        self.policy_filter = widgets.Text(placeholder="policy version", **text)
        self.search = widgets.Text(placeholder="search text", **text)
        self.refresh_button = widgets.Button(description="⟳", tooltip="refresh", layout=widgets.Layout(width="40px"))
        self.previous_button = widgets.Button(description="◀ newer", layout=widgets.Layout(width="90px"))
        self.next_button = widgets.Button(description="older ▶", layout=widgets.Layout(width="90px"))
        self.heading = widgets.HTML()
        self.listing = widgets.Select(options=[], rows=3, layout=widgets.Layout(width="100%"))
        self.listing.add_class("localoai-list")
        self.views = [widgets.HTML(render.empty("Select a generation above.")) for _ in TABS]
        self.tabs = widgets.Tab(children=self.views, titles=TABS)

        filters = [self.episode_filter, self.group_filter, self.status_filter, self.endpoint_filter, self.tool_filter,
                   self.policy_filter, self.search]
        for control in filters:
            control.observe(self._on_filter, names="value")
        self.refresh_button.on_click(lambda _: self.refresh())
        self.previous_button.on_click(lambda _: self._turn_page(-1))
        self.next_button.on_click(lambda _: self._turn_page(+1))
        self.listing.observe(self._on_select, names="value")
        self.tabs.observe(self._on_tab, names="selected_index")

        self._title = title
        self._saved = saved  # a saved file, not a running server's store: never called "live"
        super().__init__(children=[
            widgets.HBox([*filters, self.refresh_button], layout=widgets.Layout(flex_flow="row wrap")),
            widgets.HBox([self.previous_button, self.next_button, self.heading]),
            self.listing,
            self.tabs,
        ])
        self.add_class("localoai-inspector")
        # The front end counts this widget's views: when every view is gone (its cell ran again or
        # its output was cleared), the poller stops instead of updating a widget nobody sees.
        self._shown = False
        self._view_count = 0
        self.observe(self._on_views, names="_view_count")
        self.refresh()
        if live:
            self.start_live()

    # -- the query ---------------------------------------------------------------------------

    def query(self) -> ListQuery:
        version = self.policy_filter.value.strip().lstrip("v")
        return ListQuery(
            episode_id=self.episode_filter.value.strip(),
            status=self.status_filter.value,
            kind=self.endpoint_filter.value,
            tool=self.tool_filter.value.strip(),
            policy_version=int(version) if version.lstrip("-").isdigit() else None,
            text=self.search.value.strip(),
            group_id=self.group_filter.value.strip(),
        )

    def refresh(self) -> None:
        """Re-read the current page (what the live poller calls; also the ⟳ button)."""
        with self._lock:
            self._seen = self.reader.change_marker()  # taken first: a write during the read shows next time
            page = self.reader.page(self.query(), self.offset, self.page_size)
            if page.total and page.offset >= page.total:  # the page emptied (filters, deletions)
                self.offset = (page.pages - 1) * self.page_size
                page = self.reader.page(self.query(), self.offset, self.page_size)
            self.current = page
            self._fill_list(page)
            if self.record is not None:
                row = next((r for r in page.rows if r.id == self.record.id), None)
                if row is not None and row.status != self.record.status:  # it finished since shown
                    self.show(self.record.id)

    def _fill_list(self, page: Page) -> None:
        # The heading first: whoever sees the new rows (the live poller fills them) sees their count too.
        following = self._poller is not None and self._poller.is_alive()
        live = (" · saved store, following new writes" if self._saved else " · live") if following else (
            " · saved store" if self._saved else "")
        self.heading.value = (
            f"<b>{html.escape(self._title)}</b> · {page.total} generation{'s' if page.total != 1 else ''}"
            f" · page {page.number} of {page.pages}{live}"
        )
        self.previous_button.disabled = page.offset == 0
        self.next_button.disabled = page.offset + page.limit >= page.total
        selected = self.listing.value
        options = render.list_labels(page.rows)
        self._filling = True
        try:
            with self.listing.hold_sync():
                self.listing.options = options
                self.listing.rows = max(3, min(self.page_size, 15, len(options)))
                self.listing.value = selected if any(value == selected for _, value in options) else None
        finally:
            self._filling = False

    def _on_filter(self, _change: dict[str, Any]) -> None:
        self.offset = 0
        self.refresh()

    def _turn_page(self, step: int) -> None:
        self.offset = max(0, self.offset + step * self.page_size)
        self.refresh()

    # -- the selected record -----------------------------------------------------------------

    def _on_select(self, change: dict[str, Any]) -> None:
        if not self._filling and change["new"]:
            self.show(change["new"])

    def show(self, record_id: str) -> None:
        """Open one record in the views (also usable from code: `inspector.show("resp_...")`)."""
        with self._lock:
            self.record = self.reader.get(record_id)
            self._rendered = set()
            if self.listing.value != record_id and any(value == record_id for _, value in self.listing.options):
                self._filling = True  # highlight the row opened from code, without opening it twice
                try:
                    self.listing.value = record_id
                finally:
                    self._filling = False
            if self.record is None:
                for view in self.views:
                    view.value = render.empty(f"{record_id} is no longer in the store.")
                return
            self._render_tab(self.tabs.selected_index or 0)

    def _on_tab(self, change: dict[str, Any]) -> None:
        if change["new"] is not None:
            with self._lock:
                self._render_tab(change["new"])

    def _render_tab(self, index: int) -> None:
        record = self.record
        if record is None or index in self._rendered:
            return
        self._rendered.add(index)
        self.views[index].value = self.record_views.render(index, record)

    # -- live updates -------------------------------------------------------------------------

    def start_live(self) -> None:
        """Follow the store: refresh whenever something was written, at most once per interval."""
        self._live_wanted = True
        if self._poller is not None and self._poller.is_alive():
            if not self._stop.is_set():
                return
            self._poller.join()  # it was told to stop (its views went away): it ends within an interval
        self._stop.clear()
        self._poller = threading.Thread(target=self._poll, name="localoai-inspector", daemon=True)
        self._poller.start()
        with self._lock:
            if self.current is not None:
                self._fill_list(self.current)  # the heading now says "live"

    def stop_live(self) -> None:
        self._live_wanted = False
        self._stop.set()
        if self._poller is not None and self._poller is not threading.current_thread():
            self._poller.join(5)
        self._poller = None

    def _on_views(self, change: dict[str, Any]) -> None:
        if change["new"]:
            self._shown = True
            if self._live_wanted:
                self.start_live()
        elif self._shown:
            self._stop.set()  # not joined: this runs on the kernel's message handler

    def _poll(self) -> None:
        try:
            while not self._stop.wait(self.poll_interval):
                if self.reader.change_marker() != self._seen:
                    self.refresh()
        except Exception:  # the store was closed, or the widget torn down: stop following
            logger.debug("inspector stopped following its store", exc_info=True)

    def close(self) -> None:
        self.stop_live()
        self.reader.close()
        super().close()

    # -- static display ------------------------------------------------------------------------

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        """The widget, plus a static HTML copy of the page and the open view: what a notebook saved
        with outputs (or rendered without a widget manager) shows."""
        bundle = super()._repr_mimebundle_(**kwargs)
        if isinstance(bundle, dict):
            bundle["text/html"] = self.snapshot_html()
        return bundle

    def snapshot_html(self) -> str:
        rows = self.current.rows if self.current else []
        snapshot = f"<h4>{html.escape(self._title)}</h4>" + render.list_table(rows)
        if self.record is not None:
            snapshot += self.views[self.tabs.selected_index or 0].value
        return snapshot
