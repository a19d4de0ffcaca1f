from __future__ import annotations

from quart import Blueprint, Response

from localoai.app.http import json_response
from localoai.handlers.models import list_models, retrieve_model
from localoai.served import ServedModel


def blueprint(served: ServedModel) -> Blueprint:
    routes = Blueprint("models", __name__)

    @routes.get("/health")
    async def health() -> Response:
        return json_response({"status": "ok", "model": served.name, "policy_version": served.policy_version})

    @routes.get("/v1/models")
    async def models() -> Response:
        return json_response(list_models(served.loaded))

    @routes.get("/v1/models/<path:model_id>")
    async def model(model_id: str) -> Response:
        return json_response(retrieve_model(served.loaded, model_id))

    return routes
