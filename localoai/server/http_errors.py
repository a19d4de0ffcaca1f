"""Hypercorn's own answers to requests that are not valid HTTP, in OpenAI's error shape.

A malformed request line or header never reaches the app: hypercorn's HTTP/1.1 protocol answers
it with an empty-bodied 400 (`H11Protocol._send_error_response`). For servers started here
(`Config.openai_errors`), that answer carries the same `{"error": {...}}` body as every other
error, and h11's 501 for a transfer coding it does not know becomes a 400 (bad input is never a
5xx here). Hypercorn's private method is wrapped only when it exists with the expected signature;
another version keeps its empty body, nothing worse.
"""

from __future__ import annotations

import json
from typing import Any

_MESSAGES = {
    400: "The request is not valid HTTP/1.1.",
    413: "The request is larger than this server accepts.",
    414: "The request URL is too long.",
    431: "The request's header fields are too large.",
}


def error_body(status: int) -> bytes:
    message = _MESSAGES.get(status, "The request could not be read.")
    return json.dumps({"error": {"message": message, "type": "invalid_request_error", "param": None,
                                 "code": "invalid_http_request"}}).encode()


def shape_protocol_errors() -> None:
    """Wrap hypercorn's h11 error answer once per process (idempotent)."""
    try:
        import h11
        from hypercorn.protocol.h11 import H11Protocol
    except ImportError:  # pragma: no cover - hypercorn is a dependency
        return
    original = getattr(H11Protocol, "_send_error_response", None)
    if original is None or getattr(original, "_openai_shaped", False):
        return

    async def send_error_response(self: Any, status_code: int) -> None:
        if not getattr(self.config, "openai_errors", False):
            await original(self, status_code)
            return
        status_code = status_code if status_code < 500 else 400  # h11's 501 (an unknown transfer coding): the client's fault
        body = error_body(status_code)
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                   (b"connection", b"close"), *self.config.response_headers("h11")]
        await self._send_h11_event(h11.Response(status_code=status_code, headers=headers))
        await self._send_h11_event(h11.Data(data=body))
        await self._send_h11_event(h11.EndOfMessage())

    send_error_response._openai_shaped = True  # type: ignore[attr-defined]
    H11Protocol._send_error_response = send_error_response  # type: ignore[method-assign]
