"""How handler results become HTTP: one JSON encoder and one SSE encoder for every route.

Streams are validated before the first byte (the route prepares the request first); a
failure after that is sent as an SSE `error` event, which the `openai` SDK raises as an
`APIError`, instead of breaking the connection.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from pydantic import BaseModel
from quart import Response

from localoai.errors import OpenAIError, ServerError

logger = logging.getLogger("localoai.http")


def _encode(payload: BaseModel | dict[str, Any]) -> str:
    if isinstance(payload, BaseModel):
        # The SDK's models omit fields never set and keep explicit nulls, as OpenAI sends them.
        return payload.model_dump_json(exclude_unset=True)
    return json.dumps(payload, separators=(",", ":"))


def json_response(payload: BaseModel | dict[str, Any], status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(_encode(payload), status=status, content_type="application/json", headers=headers)


def error_response(error: OpenAIError) -> Response:
    return json_response(error.to_dict(), status=error.status, headers=error.headers)


def sse_event(payload: BaseModel | dict[str, Any] | str) -> bytes:
    data = payload if isinstance(payload, str) else _encode(payload)
    return f"data: {data}\n\n".encode()


async def _sse_body(events: AsyncIterator[BaseModel]) -> AsyncIterator[bytes]:
    try:
        async for event in events:
            yield sse_event(event)
    except asyncio.CancelledError:  # the client went away; the generation was cancelled with it
        raise
    except OpenAIError as exc:
        if exc.__cause__ is not None:
            logger.error("stream failed", exc_info=exc.__cause__)
        yield sse_event(exc.to_dict())
    except Exception:
        logger.exception("stream failed")
        yield sse_event(ServerError("The server failed while streaming this response.").to_dict())
    yield sse_event("[DONE]")


def sse_response(events: AsyncIterator[BaseModel]) -> Response:
    response = Response(
        _sse_body(events),
        content_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
    response.timeout = None  # Quart cuts streams at 60 s by default; generations can be longer
    return response
