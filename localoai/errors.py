"""One error model for every endpoint: exceptions that carry an OpenAI error envelope.

Handlers raise these; the app renders each as `{"error": {message, type, param, code}}`
with its HTTP status (and, once a stream has started, as an SSE error event).
Internal failures become `ServerError` with a generic message; their details go to the log.
"""

from __future__ import annotations

from typing import Any, ClassVar


class OpenAIError(Exception):
    """Base of every error a client can see."""

    status: ClassVar[int] = 500
    type: ClassVar[str] = "server_error"
    default_code: ClassVar[str | None] = None

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code if code is not None else self.default_code

    def to_dict(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    @property
    def headers(self) -> dict[str, str]:
        return {}


class InvalidRequestError(OpenAIError):
    """400: the request is malformed, out of range, or asks for something this server cannot do."""

    status = 400
    type = "invalid_request_error"


class UnsupportedFieldError(InvalidRequestError):
    """400 for a documented OpenAI field whose value this server cannot honour."""

    default_code = "unsupported_parameter"


class AuthenticationError(OpenAIError):
    status = 401
    type = "invalid_request_error"
    default_code = "invalid_api_key"


class NotFoundError(OpenAIError):
    status = 404
    type = "invalid_request_error"


class MethodNotAllowedError(OpenAIError):
    status = 405
    type = "invalid_request_error"


class RequestTooLargeError(OpenAIError):
    status = 413
    type = "invalid_request_error"
    default_code = "request_too_large"


class RateLimitError(OpenAIError):
    """429 when the engine's queue is full; `Retry-After` says when to try again (the SDK honours it)."""

    status = 429
    type = "requests"
    default_code = "rate_limit_exceeded"

    def __init__(self, message: str, *, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    @property
    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class ServerError(OpenAIError):
    """500 for a failed generation. `x-should-retry: false` stops the SDK from silently running it again."""

    status = 500
    type = "server_error"

    @property
    def headers(self) -> dict[str, str]:
        return {"x-should-retry": "false"}


ANTHROPIC_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                         404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error",
                         500: "api_error", 529: "overloaded_error"}


def anthropic_error(error: OpenAIError) -> dict[str, Any]:
    """The error in Anthropic's shape (`/v1/messages` paths): `{"type": "error", "error": {type, message}}`."""
    kind = ANTHROPIC_ERROR_TYPES.get(error.status, "invalid_request_error" if error.status < 500 else "api_error")
    return {"type": "error", "error": {"type": kind, "message": error.message}}


def model_not_found(model: str) -> NotFoundError:
    return NotFoundError(
        f"The model `{model}` does not exist or you do not have access to it.", param="model", code="model_not_found"
    )
