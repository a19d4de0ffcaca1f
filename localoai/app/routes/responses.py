from __future__ import annotations

from quart import Blueprint, Response, request

from localoai.app.http import json_response, sse_response
from localoai.episodes.routing import episode_ref
from localoai.handlers.responses.handler import Responses
from localoai.handlers.responses.stored import StoredResponses
from localoai.protocol.base import parse_request
from localoai.protocol.responses import (
    CompactRequest,
    InputTokensRequest,
    ResponseCreateRequest,
    parse_input_items_query,
    parse_retrieve_query,
)


def blueprint(responses: Responses, stored: StoredResponses) -> Blueprint:
    routes = Blueprint("responses", __name__)

    @routes.post("/v1/responses")
    async def create() -> Response:
        body = parse_request(ResponseCreateRequest, await request.get_data())
        prepared = await responses.prepare(body, episode_ref(request.headers, body.metadata))
        if prepared.request.background:
            queued, events = await responses.start_background(prepared, stream=bool(prepared.request.stream))
            return sse_response(events, typed=True) if events is not None else json_response(queued)
        if prepared.request.stream:
            return sse_response(responses.events(prepared), typed=True)
        return json_response(await responses.create(prepared))

    @routes.post("/v1/responses/compact")
    async def compact() -> Response:
        body = parse_request(CompactRequest, await request.get_data())
        prepared = await responses.compactions.prepare(body, episode_ref(request.headers, None))
        return json_response(await responses.compactions.create(prepared))

    @routes.post("/v1/responses/input_tokens")
    async def input_tokens() -> Response:
        body = parse_request(InputTokensRequest, await request.get_data())
        return json_response(await responses.count_input_tokens(body))

    @routes.get("/v1/responses/<response_id>")
    async def retrieve(response_id: str) -> Response:
        query = parse_retrieve_query(request.args)
        if query.stream:
            return sse_response(await stored.stream(response_id, query.starting_after, responses.background.finished), typed=True)
        return json_response(await stored.retrieve(response_id))

    @routes.delete("/v1/responses/<response_id>")
    async def delete(response_id: str) -> Response:
        await stored.retrieve(response_id)  # a 404 first, for what is not visible
        await responses.background.cancel(response_id)  # a running background response stops before it goes
        return json_response(await stored.delete(response_id))

    @routes.post("/v1/responses/<response_id>/cancel")
    async def cancel(response_id: str) -> Response:
        await stored.retrieve(response_id)
        await responses.background.cancel(response_id)  # stops it if it is running here in the background
        return json_response(await stored.cancel(response_id))

    @routes.get("/v1/responses/<response_id>/input_items")
    async def input_items(response_id: str) -> Response:
        query, include = parse_input_items_query(request.args)
        return json_response(await stored.input_items(response_id, query, include))

    @routes.after_app_serving
    async def cancel_background() -> None:
        await responses.background.cancel_all()  # the server is stopping: no background response stays in_progress

    return routes
