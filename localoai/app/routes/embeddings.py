from __future__ import annotations

from quart import Blueprint, Response, request

from localoai.app.http import json_response
from localoai.episodes.routing import episode_ref
from localoai.handlers.tokens.embeddings import Embeddings
from localoai.protocol.base import parse_request
from localoai.protocol.embeddings import EmbeddingRequest


def blueprint(embeddings: Embeddings) -> Blueprint:
    routes = Blueprint("embeddings", __name__)

    @routes.post("/v1/embeddings")
    async def create() -> Response:
        body = parse_request(EmbeddingRequest, await request.get_data())
        prepared = await embeddings.services.off_loop(embeddings.prepare, body, episode_ref(request.headers, None))
        return json_response(await embeddings.create(prepared))

    return routes
