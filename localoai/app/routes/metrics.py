"""`GET /metrics`: the server's Prometheus metrics, and the count of every request answered."""

from __future__ import annotations

import asyncio

from quart import Blueprint, Response, request

from localoai.metrics import CONTENT_TYPE
from localoai.served import ServedModel

UNMATCHED = "unmatched"
"""The `endpoint` label of requests to no route (a 404): one label, whatever the path."""


def blueprint(served: ServedModel) -> Blueprint:
    routes = Blueprint("metrics", __name__)
    metrics = served.metrics

    @routes.after_app_request
    async def count(response: Response) -> Response:
        # The route's pattern, not the path: ids in paths would make a label per request.
        rule = request.url_rule.rule if request.url_rule is not None else UNMATCHED
        metrics.request(rule, request.method, response.status_code)
        return response

    @routes.get("/metrics")
    async def exposition() -> Response:
        body = await asyncio.to_thread(metrics.exposition)  # reads the store's totals
        return Response(body, content_type=CONTENT_TYPE)

    return routes
