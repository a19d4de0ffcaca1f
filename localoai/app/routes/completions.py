from __future__ import annotations

from quart import Blueprint, Response, request

from localoai.app.http import json_response, sse_response
from localoai.episodes.routing import episode_ref
from localoai.handlers.completions.handler import Completions
from localoai.protocol.base import parse_request
from localoai.protocol.completions import CompletionRequest


def blueprint(completions: Completions) -> Blueprint:
    routes = Blueprint("completions", __name__)

    @routes.post("/v1/completions")
    async def create() -> Response:
        body = parse_request(CompletionRequest, await request.get_data())
        prepared = await completions.services.off_loop(completions.prepare, body, episode_ref(request.headers, None))
        if prepared.request.stream:
            options = prepared.request.stream_options
            return sse_response(completions.chunks(prepared, include_usage=bool(options and options.include_usage)))
        return json_response(await completions.create(prepared))

    return routes
