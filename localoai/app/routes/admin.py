"""Trainer controls over HTTP, with vLLM's names: pause and resume generation around a weight
update from another process, and read or set the policy version.

`POST /pause?mode=keep|wait|abort` (default `abort`, as vLLM) answers once the engine is
parked; `POST /resume?bump_version=true|false` resumes; `GET /is_paused`;
`GET /policy_version` and `POST /policy_version` with `{"policy_version": N}`. The queue
guard answers generation requests with a 429 before any stream starts when the queue is full.
"""

from __future__ import annotations

import asyncio

from quart import Blueprint, Response, request

from localoai.app.http import json_response
from localoai.engine.interface import PAUSE_MODES
from localoai.errors import InvalidRequestError, RateLimitError
from localoai.protocol.admin import PolicyVersionRequest
from localoai.protocol.base import parse_request
from localoai.served import ServedModel

GENERATION_PATHS = frozenset({"/v1/chat/completions", "/v1/completions", "/v1/responses", "/v1/messages",
                              "/inference/v1/generate"})


def blueprint(served: ServedModel) -> Blueprint:
    routes = Blueprint("admin", __name__)
    engine = served.engine

    @routes.before_app_request
    async def refuse_when_queue_full() -> None:
        # Checked before the route streams anything; the engine's own bound stays the hard limit.
        if request.method == "POST" and request.path in GENERATION_PATHS and engine.queue_full:
            served.metrics.queue_rejected()
            raise RateLimitError("Too many requests are waiting for the model; try again shortly.")

    def state() -> dict[str, object]:
        return {"is_paused": engine.paused, "policy_version": served.policy_version}

    @routes.post("/pause")
    async def pause() -> Response:
        mode = request.args.get("mode", "abort")
        if mode not in PAUSE_MODES:
            raise InvalidRequestError(f"Invalid value for 'mode': {mode!r}; expected one of {list(PAUSE_MODES)}.",
                                      param="mode", code="invalid_value")
        await asyncio.to_thread(engine.pause, mode)
        return json_response(state())

    @routes.post("/resume")
    async def resume() -> Response:
        bump = request.args.get("bump_version", "true").lower()
        if bump not in ("true", "false"):
            raise InvalidRequestError("Invalid value for 'bump_version': expected true or false.",
                                      param="bump_version", code="invalid_value")
        # Off the loop: the vLLM engine pushes the weights here (seconds on a large model).
        await asyncio.to_thread(engine.resume, bump_version=bump == "true")
        return json_response(state())

    @routes.get("/is_paused")
    async def is_paused() -> Response:
        return json_response({"is_paused": engine.paused})

    @routes.get("/policy_version")
    async def get_policy_version() -> Response:
        return json_response(state())

    @routes.post("/policy_version")
    async def set_policy_version() -> Response:
        served.policy_version = parse_request(PolicyVersionRequest, await request.get_data()).policy_version
        return json_response(state())

    return routes
