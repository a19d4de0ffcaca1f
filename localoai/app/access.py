"""One INFO line per request on the `localoai.access` logger: method, path, status, milliseconds.

For a streamed response the time is until the response started (its headers), which is when a
client knows whether it was accepted; the stream's own length is in the stored record's timings.
Off unless logging is configured at INFO (`localoai serve --log-level info`).
"""

from __future__ import annotations

import logging
import time

from quart import Quart, Response, g, request

logger = logging.getLogger("localoai.access")


def log_requests(app: Quart) -> None:
    @app.before_request
    async def started() -> None:
        g.access_started = time.perf_counter()

    @app.after_request
    async def finished(response: Response) -> Response:
        if logger.isEnabledFor(logging.INFO):
            began = getattr(g, "access_started", None)
            took = f" {1000 * (time.perf_counter() - began):.1f} ms" if began is not None else ""
            client = request.remote_addr or "-"
            logger.info("%s %s %s %d%s", client, request.method, request.full_path.rstrip("?"), response.status_code,
                        took)
        return response
