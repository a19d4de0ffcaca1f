from __future__ import annotations

from quart import Blueprint, Response, request

from localoai.app.http import json_response
from localoai.handlers.tokens.tokenize import detokenize, tokenize
from localoai.protocol.base import parse_request
from localoai.protocol.tokenize import DetokenizeRequest, TokenizeRequest
from localoai.served import ServedModel


def blueprint(served: ServedModel) -> Blueprint:
    routes = Blueprint("tokenize", __name__)

    @routes.post("/tokenize")
    async def tokenize_route() -> Response:
        body = parse_request(TokenizeRequest, await request.get_data())
        return json_response(await served.off_loop(tokenize, served.loaded, body))

    @routes.post("/detokenize")
    async def detokenize_route() -> Response:
        return json_response(detokenize(served.loaded, parse_request(DetokenizeRequest, await request.get_data())))

    return routes
