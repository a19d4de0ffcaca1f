"""The Quart app: routes by endpoint family over one `ServedModel`, one error model."""

from __future__ import annotations

from quart import Quart

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
from localoai.handlers.chat import ChatCompletions
from localoai.handlers.completions import Completions
from localoai.handlers.conversations import Conversations
from localoai.handlers.embeddings import Embeddings
from localoai.handlers.generate import TokenGeneration
from localoai.handlers.messages import Messages
from localoai.handlers.responses import Responses
from localoai.handlers.stored_chat import StoredChatCompletions
from localoai.handlers.stored_responses import StoredResponses
from localoai.served import ServedModel

DEFAULT_MAX_BODY_BYTES = 32 * 1024 * 1024


def create_app(served: ServedModel, *, api_key: str | None = None, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
               public_metrics: bool = False) -> Quart:
    """`public_metrics`: `GET /metrics` answers without the API key (a scraper that holds none)."""
    app = Quart("localoai")
    app.config.update(MAX_CONTENT_LENGTH=max_body_bytes, RESPONSE_TIMEOUT=None, PROVIDE_AUTOMATIC_OPTIONS=False)
    register_error_handlers(app)
    log_requests(app)
    if api_key:
        require_api_key(app, api_key, open_paths=OPEN_PATHS | ({"/metrics"} if public_metrics else set()))
    app.register_blueprint(admin.blueprint(served))
    app.register_blueprint(models.blueprint(served))
    chat_handler, completions_handler = ChatCompletions(served), Completions(served)
    responses_handler = Responses(served)
    app.register_blueprint(render.blueprint(chat_handler, completions_handler, responses_handler))
    app.register_blueprint(chat.blueprint(chat_handler))
    app.register_blueprint(stored_chat.blueprint(StoredChatCompletions(served)))
    app.register_blueprint(completions.blueprint(completions_handler))
    app.register_blueprint(responses.blueprint(responses_handler, StoredResponses(served)))
    app.register_blueprint(conversations.blueprint(Conversations(served)))
    app.register_blueprint(messages.blueprint(Messages(served)))
    app.register_blueprint(tokenize.blueprint(served))
    app.register_blueprint(embeddings.blueprint(Embeddings(served)))
    app.register_blueprint(generate.blueprint(TokenGeneration(served)))
    app.register_blueprint(inspector.blueprint(served))
    app.register_blueprint(metrics.blueprint(served))
    app.asgi_app = EpisodePrefix(app.asgi_app)  # type: ignore[method-assign]  # /episodes/{id}/v1/... is /v1/...
    return app
