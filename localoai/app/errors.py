"""Every error the app returns is OpenAI-shaped (Anthropic-shaped under `/v1/messages`), the framework's
own 404/405/413 included."""

from __future__ import annotations

import logging

from quart import Quart, Response, request
from werkzeug.exceptions import HTTPException

from localoai.app.http import error_response
from localoai.errors import (
    InvalidRequestError,
    MethodNotAllowedError,
    NotFoundError,
    OpenAIError,
    RequestTooLargeError,
    ServerError,
)

logger = logging.getLogger("localoai.http")


def _from_http(exc: HTTPException) -> OpenAIError:
    if exc.code == 404:
        return NotFoundError("Unknown request URL. Please check the URL for typos.", code="unknown_url")
    if exc.code == 405:
        return MethodNotAllowedError("Method not allowed for this URL.", code="method_not_allowed")
    if exc.code == 413:
        return RequestTooLargeError("The request body is larger than this server accepts.")
    if exc.code is not None and 400 <= exc.code < 500:
        return InvalidRequestError(exc.description or "Bad request.")
    return ServerError("The server failed to handle this request.")


MESSAGES_PATH = "/v1/messages"


def _anthropic() -> bool:
    """Whether this request is answered in Anthropic's error shape: the Messages API's paths."""
    path = request.path
    return path == MESSAGES_PATH or path.startswith(MESSAGES_PATH + "/")


def register_error_handlers(app: Quart) -> None:
    @app.errorhandler(OpenAIError)
    async def openai_error(exc: OpenAIError) -> Response:
        if isinstance(exc, ServerError) and exc.__cause__ is not None:
            logger.error("request failed", exc_info=exc.__cause__)
        return error_response(exc, anthropic=_anthropic())

    @app.errorhandler(HTTPException)
    async def http_error(exc: HTTPException) -> Response:
        response = error_response(_from_http(exc), anthropic=_anthropic())
        if exc.code == 413:
            # The unread rest of the body makes the connection unusable: say so, or a keep-alive
            # client reuses it and finds it closed before its next request is answered.
            response.headers["Connection"] = "close"
        return response

    @app.errorhandler(Exception)
    async def unexpected(exc: Exception) -> Response:
        logger.exception("unexpected error")  # details stay in the log, never in the response
        return error_response(ServerError("The server had an error while processing your request."),
                              anthropic=_anthropic())
