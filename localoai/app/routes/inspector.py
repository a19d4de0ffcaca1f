"""The inspector as a web page served by localoai itself: `/ui/` and the small JSON API it reads.

The page lives on the server's own thread and loop, so it stays interactive while a notebook
cell (a training loop) keeps the kernel busy: an ipywidget's clicks wait for the kernel, these
requests do not. Views are the widget's HTML (`localoai.widgets.views`, `render`, `plots`),
built here in Python; the page (`localoai/widgets/static/inspector.html`) only places it.
Store reads run in worker threads, never on the loop. Records are addressed by id only.

    GET /ui/                                   the page (no data: open even when an api_key is set)
    GET /ui/api/state                          store location, model, policy version, change marker
    GET /ui/api/records?offset=&limit=&...     one page of the list (filters as the widget's)
    GET /ui/api/records/<id>/<view>            {"id", "html"}: view in episode, tokens, group, raw
    GET /ui/api/plots                          {"html"}: the plots over the most recent records
"""

from __future__ import annotations

import asyncio
import time
from importlib import resources
from typing import Any

from quart import Blueprint, Response, redirect, request

from localoai.app.http import json_response
from localoai.errors import InvalidRequestError, NotFoundError
from localoai.served import ServedModel
from localoai.store import store_location
from localoai.widgets import plots
from localoai.widgets.data import PAGE_SIZE, ListQuery, StoreReader
from localoai.widgets.format import ENDPOINTS, STATUS_MARKS, Summary
from localoai.widgets.views import TABS, RecordViews

VIEWS = tuple(tab.lower() for tab in TABS)
PLOTTED_RECORDS = 1000
"""The plots cover this many of the most recent records: enough for a run's trend, cheap to read."""
MAX_PAGE = 200
FILTERS = ("episode_id", "status", "kind", "tool", "policy_version", "text", "group_id")


def blueprint(served: ServedModel) -> Blueprint:
    routes = Blueprint("inspector", __name__)
    reader = StoreReader(served.store)
    views = RecordViews(reader, served.tokenizer)
    page_html = resources.files("localoai.widgets").joinpath("static/inspector.html").read_text("utf-8")

    @routes.get("/ui")
    async def ui_redirect() -> Any:
        return redirect("ui/")  # relative: also right behind a proxy's path prefix

    @routes.get("/ui/")
    async def ui() -> Response:
        return Response(page_html, content_type="text/html; charset=utf-8",
                        headers={"Cache-Control": "no-store"})

    @routes.get("/ui/api/state")
    async def state() -> Response:
        marker = await asyncio.to_thread(reader.change_marker)
        return json_response({"store": store_location(served.store), "model": served.name,
                              "policy_version": served.policy_version, "marker": list(marker), "live": True})

    @routes.get("/ui/api/records")
    async def records() -> Response:
        query, offset, limit = list_arguments(request.args)
        page = await asyncio.to_thread(reader.page, query, offset, limit)
        return json_response({"rows": [row_json(row) for row in page.rows], "total": page.total,
                              "offset": page.offset, "limit": page.limit, "page": page.number, "pages": page.pages})

    @routes.get("/ui/api/records/<record_id>/<view>")
    async def record_view(record_id: str, view: str) -> Response:
        if view not in VIEWS:
            raise NotFoundError(f"No view {view!r}; expected one of {list(VIEWS)}.", param="view")

        def build() -> str | None:
            record = reader.get(record_id)
            return None if record is None else views.render(VIEWS.index(view), record)

        html = await asyncio.to_thread(build)
        if html is None:
            raise NotFoundError(f"No record found with id '{record_id}'.", param="record_id")
        return json_response({"id": record_id, "view": view, "html": html})

    @routes.get("/ui/api/plots")
    async def plots_view() -> Response:
        def build() -> str:
            return plots.dashboard(reader.recent(PLOTTED_RECORDS), served.store.episodes(), served.policy_version)

        return json_response({"html": await asyncio.to_thread(build)})

    return routes


def list_arguments(args: Any) -> tuple[ListQuery, int, int]:
    """The list's query string, validated: 400 naming the parameter for a bad number."""
    numbers: dict[str, int] = {}
    for name, default, low, high in (("offset", 0, 0, None), ("limit", PAGE_SIZE, 1, MAX_PAGE)):
        raw = args.get(name, str(default))
        try:
            numbers[name] = int(raw)
        except ValueError:
            raise InvalidRequestError(f"Invalid '{name}': expected an integer, got {raw!r}.", param=name,
                                      code="invalid_value") from None
        if numbers[name] < low or (high is not None and numbers[name] > high):
            bound = f"between {low} and {high}" if high is not None else f"at least {low}"
            raise InvalidRequestError(f"Invalid '{name}': must be {bound}.", param=name, code="invalid_value")
    unknown = sorted(set(args) - {*FILTERS, "offset", "limit"})
    if unknown:
        raise InvalidRequestError(f"Unknown parameter '{unknown[0]}'.", param=unknown[0], code="unknown_parameter")
    version = args.get("policy_version", "").strip().lstrip("v")
    if version and not version.lstrip("-").isdigit():
        raise InvalidRequestError("Invalid 'policy_version': expected an integer.", param="policy_version",
                                  code="invalid_value")
    query = ListQuery(**{name: args.get(name, "").strip() for name in FILTERS if name != "policy_version"},
                      policy_version=int(version) if version else None)
    return query, numbers["offset"], numbers["limit"]


def row_json(row: Summary) -> dict[str, Any]:
    return {"id": row.id, "kind": row.kind, "endpoint": ENDPOINTS.get(row.kind, row.kind), "status": row.status,
            "mark": STATUS_MARKS.get(row.status, "?"), "model": row.model, "created_at": row.created_at,
            "time": time.strftime("%H:%M:%S", time.localtime(row.created_at)), "policy_version": row.policy_version,
            "episode_id": row.episode_id, "group_id": row.group_id, "tools": list(row.tools), "preview": row.preview}

