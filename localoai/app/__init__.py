"""The Quart app: routes by endpoint family over one `ServedModel`, one error model."""

from __future__ import annotations

from quart import Quart, Response, request

from localoai.app.access import log_requests
from localoai.app.auth import OPEN_PATHS, require_api_key
from localoai.app.errors import register_error_handlers
from localoai.app.routes import (
    admin,
    chat,
    completions,
    conversations,
    embeddings,
    generate,
    inspector,
    messages,
    metrics,
    models,
    render,
    responses,
    stored_chat,
    tokenize,
)
from localoai.episodes.routing import EpisodePrefix
from localoai.handlers.chat.handler import ChatCompletions
from localoai.handlers.completions.handler import Completions
from localoai.handlers.responses.conversations import Conversations
from localoai.handlers.tokens.embeddings import Embeddings
from localoai.handlers.tokens.generate import TokenGeneration
from localoai.handlers.messages.handler import Messages
from localoai.handlers.responses.handler import Responses
from localoai.handlers.chat.stored import StoredChatCompletions
from localoai.handlers.responses.stored import StoredResponses
from localoai.served import ServedModel

DEFAULT_MAX_BODY_BYTES = 32 * 1024 * 1024
BODY_TIMEOUT = 30.0


async def _drain_body(response: Response) -> Response:
    """Read a body the route did not (a GET's, a refused request's): with it unread, hypercorn closes
    the connection after the answer without saying so, and a keep-alive client's next request on it
    fails with no answer at all."""
    try:
        await request.get_data()
    except Exception:  # noqa: BLE001 - too large, or the client went: the connection closes anyway
        response.headers["Connection"] = "close"
    return response


def create_app(served: ServedModel, *, api_key: str | None = None, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
               public_metrics: bool = False) -> Quart:
    """`public_metrics`: `GET /metrics` answers without the API key (a scraper that holds none)."""
    app = Quart("localoai", static_folder=None)  # no `/static/...` route: this app serves no files
    # BODY_TIMEOUT: a client that stops sending its body gets a 408 instead of holding the connection.
    app.config.update(MAX_CONTENT_LENGTH=max_body_bytes, RESPONSE_TIMEOUT=None, PROVIDE_AUTOMATIC_OPTIONS=False,
                      BODY_TIMEOUT=BODY_TIMEOUT)
    register_error_handlers(app)
    log_requests(app)
    app.after_request(_drain_body)
    if api_key:
        require_api_key(app, api_key, open_paths=OPEN_PATHS | ({"/metrics"} if public_metrics else set()))
    app.register_blueprint(admin.blueprint(served))
    app.register_blueprint(models.blueprint(served))
    parts = served.loaded, served.services  # what each handler is given: the model and the services
    chat_handler, completions_handler = ChatCompletions(*parts), Completions(*parts)
    responses_handler = Responses(*parts)
    app.register_blueprint(render.blueprint(chat_handler, completions_handler, responses_handler))
    app.register_blueprint(chat.blueprint(chat_handler))
    app.register_blueprint(stored_chat.blueprint(StoredChatCompletions(*parts)))
    app.register_blueprint(completions.blueprint(completions_handler))
    app.register_blueprint(responses.blueprint(responses_handler, StoredResponses(*parts)))
    app.register_blueprint(conversations.blueprint(Conversations(*parts)))
    app.register_blueprint(messages.blueprint(Messages(*parts)))
    app.register_blueprint(tokenize.blueprint(served))
    app.register_blueprint(embeddings.blueprint(Embeddings(*parts)))
    app.register_blueprint(generate.blueprint(TokenGeneration(*parts)))
    app.register_blueprint(inspector.blueprint(served))
    app.register_blueprint(metrics.blueprint(served))
    app.asgi_app = EpisodePrefix(app.asgi_app)  # type: ignore[method-assign]  # /episodes/{id}/v1/... is /v1/...
    return app
