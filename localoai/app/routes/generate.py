from __future__ import annotations

from quart import Blueprint, Response, request

from localoai.app.http import json_response, sse_response
from localoai.episodes.routing import episode_ref
from localoai.handlers.tokens.generate import TokenGeneration
from localoai.protocol.base import parse_request
from localoai.protocol.generate import GenerateRequest


def blueprint(generate: TokenGeneration) -> Blueprint:
    routes = Blueprint("generate", __name__)

    @routes.post("/inference/v1/generate")
    async def create() -> Response:
        body = parse_request(GenerateRequest, await request.get_data())
        prepared = await generate.services.off_loop(generate.prepare, body, episode_ref(request.headers, None))
        if body.stream:
            options = body.stream_options
            return sse_response(generate.chunks(prepared, include_usage=bool(options and options.include_usage)))
        return json_response(await generate.create(prepared))

    return routes
