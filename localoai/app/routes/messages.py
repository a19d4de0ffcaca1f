"""Anthropic's Messages API: `POST /v1/messages` and `POST /v1/messages/count_tokens`.

Claude Code calls them with `?beta=true` and `anthropic-version` / `anthropic-beta` headers: the
query and the headers change nothing here and are accepted. Errors are in Anthropic's shape
(`localoai.app.errors`)."""

from __future__ import annotations

from quart import Blueprint, Response, request

from localoai.app.http import json_response, sse_response
from localoai.episodes.routing import episode_ref
from localoai.handlers.messages.handler import Messages
from localoai.protocol.base import parse_request
from localoai.protocol.messages import CountTokensRequest, MessageCreateRequest


def blueprint(messages: Messages) -> Blueprint:
    routes = Blueprint("messages", __name__)

    @routes.post("/v1/messages")
    async def create() -> Response:
        body = parse_request(MessageCreateRequest, await request.get_data())
        prepared = await messages.services.off_loop(messages.prepare, body, episode_ref(request.headers, None))
        if body.stream:
            return sse_response(messages.events(prepared), typed=True, anthropic=True)
        return json_response(await messages.create(prepared))

    @routes.post("/v1/messages/count_tokens")
    async def count_tokens() -> Response:
        body = parse_request(CountTokensRequest, await request.get_data())
        return json_response(await messages.services.off_loop(messages.count_tokens, body))

    return routes
