from __future__ import annotations

from quart import Blueprint, Response, request

from localoai.app.http import json_response
from localoai.episodes.routing import episode_ref
from localoai.errors import UnsupportedFieldError
from localoai.handlers.chat.handler import ChatCompletions
from localoai.handlers.completions.handler import Completions
from localoai.handlers.tokens.render import generate_request
from localoai.handlers.responses.handler import Responses
from localoai.protocol.base import parse_request
from localoai.protocol.chat import ChatCompletionRequest
from localoai.protocol.completions import CompletionRequest
from localoai.protocol.responses import ResponseCreateRequest


def blueprint(chat: ChatCompletions, completions: Completions, responses: Responses) -> Blueprint:
    routes = Blueprint("render", __name__)

    @routes.post("/v1/chat/completions/render")
    async def render_chat() -> Response:
        body = parse_request(ChatCompletionRequest, await request.get_data())
        prepared = await chat.services.off_loop(chat.prepare, body, episode_ref(request.headers, body.metadata))
        return json_response(generate_request("chatcmpl-", body.model, prepared.prompt.token_ids, prepared.prompt.text,
                                              prepared.params, body.stream, body.stream_options))

    @routes.post("/v1/completions/render")
    async def render_completion() -> Response:
        body = parse_request(CompletionRequest, await request.get_data())
        prepared = await completions.services.off_loop(completions.prepare, body, episode_ref(request.headers, None))
        if prepared.ranked:  # the token-in endpoint returns every sample; it would not keep the best n
            raise UnsupportedFieldError("Unsupported value for 'best_of': a rendered request cannot rank its samples; "
                                        "render with n and rank them yourself.", param="best_of")
        return json_response([generate_request("cmpl-", body.model, prompt.token_ids, prompt.text, prompt.params,
                                               body.stream, body.stream_options) for prompt in prepared.prompts])

    @routes.post("/v1/responses/render")
    async def render_response() -> Response:
        body = parse_request(ResponseCreateRequest, await request.get_data())
        prepared = await responses.prepare(body, episode_ref(request.headers, body.metadata), compaction=False)
        return json_response(generate_request("resp_", body.model, prepared.prompt.token_ids, prepared.prompt.text,
                                              prepared.params, body.stream))

    return routes
