from __future__ import annotations

from quart import Blueprint, Response, request

from localoai.app.http import json_response, sse_response
from localoai.episodes.routing import episode_ref
from localoai.handlers.chat.handler import ChatCompletions
from localoai.protocol.base import parse_request
from localoai.protocol.chat import ChatCompletionRequest


def blueprint(chat: ChatCompletions) -> Blueprint:
    routes = Blueprint("chat", __name__)

    @routes.post("/v1/chat/completions")
    async def create() -> Response:
        body = parse_request(ChatCompletionRequest, await request.get_data())
        prepared = await chat.services.off_loop(chat.prepare, body, episode_ref(request.headers, body.metadata))
        if prepared.request.stream:
            options = prepared.request.stream_options
            return sse_response(chat.chunks(prepared, include_usage=bool(options and options.include_usage)))
        return json_response(await chat.create(prepared))

    return routes
