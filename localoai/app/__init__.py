"""The Quart app: routes by endpoint family over one `ServedModel`, one error model."""

from __future__ import annotations

from quart import Quart

from localoai.app.auth import require_api_key
from localoai.app.errors import register_error_handlers
from localoai.app.routes import admin, chat, completions, conversations, models, responses, stored_chat, tokenize
from localoai.episodes.routing import EpisodePrefix
from localoai.handlers.chat import ChatCompletions
from localoai.handlers.completions import Completions
from localoai.handlers.conversations import Conversations
from localoai.handlers.responses import Responses
from localoai.handlers.stored_chat import StoredChatCompletions
from localoai.handlers.stored_responses import StoredResponses
from localoai.served import ServedModel

DEFAULT_MAX_BODY_BYTES = 32 * 1024 * 1024
BODY_TIMEOUT = 30.0


def create_app(served: ServedModel, *, api_key: str | None = None, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> Quart:
    app = Quart("localoai", static_folder=None)  # no `/static/...` route: this app serves no files
    # BODY_TIMEOUT: a client that stops sending its body gets a 408 instead of holding the connection.
    app.config.update(MAX_CONTENT_LENGTH=max_body_bytes, RESPONSE_TIMEOUT=None, PROVIDE_AUTOMATIC_OPTIONS=False,
                      BODY_TIMEOUT=BODY_TIMEOUT)
    register_error_handlers(app)
    if api_key:
        require_api_key(app, api_key)
    app.register_blueprint(admin.blueprint(served))
    app.register_blueprint(models.blueprint(served))
    app.register_blueprint(chat.blueprint(ChatCompletions(served)))
    app.register_blueprint(stored_chat.blueprint(StoredChatCompletions(served)))
    app.register_blueprint(completions.blueprint(Completions(served)))
    app.register_blueprint(responses.blueprint(Responses(served), StoredResponses(served)))
    app.register_blueprint(conversations.blueprint(Conversations(served)))
    app.register_blueprint(tokenize.blueprint(served))
    app.asgi_app = EpisodePrefix(app.asgi_app)  # type: ignore[method-assign]  # /episodes/{id}/v1/... is /v1/...
    return app
