from __future__ import annotations

from quart import Blueprint, Response, request

from localoai.app.http import json_response
from localoai.handlers.responses.conversations import Conversations
from localoai.protocol.base import parse_request
from localoai.protocol.conversations import (
    ConversationCreateRequest,
    ConversationUpdateRequest,
    ItemsCreateRequest,
    parse_include_only,
    parse_items_query,
)


def blueprint(conversations: Conversations) -> Blueprint:
    routes = Blueprint("conversations", __name__)

    @routes.post("/v1/conversations")
    async def create() -> Response:
        body = parse_request(ConversationCreateRequest, await request.get_data())
        return json_response(await conversations.create(body))

    @routes.get("/v1/conversations/<conversation_id>")
    async def retrieve(conversation_id: str) -> Response:
        return json_response(await conversations.retrieve(conversation_id))

    @routes.post("/v1/conversations/<conversation_id>")
    async def update(conversation_id: str) -> Response:
        body = parse_request(ConversationUpdateRequest, await request.get_data())
        return json_response(await conversations.update(conversation_id, body.metadata))

    @routes.delete("/v1/conversations/<conversation_id>")
    async def delete(conversation_id: str) -> Response:
        return json_response(await conversations.delete(conversation_id))

    @routes.get("/v1/conversations/<conversation_id>/items")
    async def list_items(conversation_id: str) -> Response:
        query, include = parse_items_query(request.args)
        return json_response(await conversations.list_items(conversation_id, query, include))

    @routes.post("/v1/conversations/<conversation_id>/items")
    async def add_items(conversation_id: str) -> Response:
        include = parse_include_only(request.args)
        body = parse_request(ItemsCreateRequest, await request.get_data())
        return json_response(await conversations.add_items(conversation_id, body, include))

    @routes.get("/v1/conversations/<conversation_id>/items/<item_id>")
    async def retrieve_item(conversation_id: str, item_id: str) -> Response:
        include = parse_include_only(request.args)
        return json_response(await conversations.retrieve_item(conversation_id, item_id, include))

    @routes.delete("/v1/conversations/<conversation_id>/items/<item_id>")
    async def delete_item(conversation_id: str, item_id: str) -> Response:
        return json_response(await conversations.delete_item(conversation_id, item_id))

    return routes
