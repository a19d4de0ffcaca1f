from __future__ import annotations

from quart import Blueprint, Response, request

from localoai.app.http import json_response
from localoai.handlers.chat.stored import StoredChatCompletions
from localoai.protocol.base import parse_request
from localoai.protocol.stored import MetadataUpdate, parse_list_query

LIST_FIELDS = frozenset({"after", "limit", "order", "model", "metadata"})
MESSAGE_FIELDS = frozenset({"after", "limit", "order"})


def blueprint(stored: StoredChatCompletions) -> Blueprint:
    routes = Blueprint("stored_chat", __name__)

    @routes.get("/v1/chat/completions")
    async def list_completions() -> Response:
        return json_response(await stored.list(parse_list_query(request.args, allowed=LIST_FIELDS)))

    @routes.get("/v1/chat/completions/<completion_id>")
    async def retrieve(completion_id: str) -> Response:
        return json_response(await stored.retrieve(completion_id))

    @routes.post("/v1/chat/completions/<completion_id>")
    async def update(completion_id: str) -> Response:
        body = parse_request(MetadataUpdate, await request.get_data())
        return json_response(await stored.update(completion_id, body.metadata))

    @routes.delete("/v1/chat/completions/<completion_id>")
    async def delete(completion_id: str) -> Response:
        return json_response(await stored.delete(completion_id))

    @routes.get("/v1/chat/completions/<completion_id>/messages")
    async def messages(completion_id: str) -> Response:
        query = parse_list_query(request.args, allowed=MESSAGE_FIELDS)
        return json_response(await stored.messages(completion_id, query))

    return routes
