"""How handler results become HTTP: one JSON encoder and one SSE encoder for every route.

Streams are validated before the first byte (the route prepares the request first); a
failure after that is sent as an SSE `error` event, which the `openai` SDK raises as an
`APIError`, instead of breaking the connection.

Two framings: chat and completions send `data:` lines ending with `data: [DONE]`; the Responses
API sends typed events (`event: <type>` before each `data:` line) and no `[DONE]` marker.
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
        # The SDK's models omit fields never set and keep explicit nulls, as OpenAI sends them; fields
        # named differently on the wire (`schema_` is `schema`) go by their wire name.
        return payload.model_dump_json(exclude_unset=True, by_alias=True)
    return json.dumps(payload, separators=(",", ":"))


def json_response(payload: BaseModel | dict[str, Any], status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(_encode(payload), status=status, content_type="application/json", headers=headers)


def error_response(error: OpenAIError) -> Response:
    return json_response(error.to_dict(), status=error.status, headers=error.headers)


def sse_event(payload: BaseModel | dict[str, Any] | str, *, event: str | None = None) -> bytes:
    data = payload if isinstance(payload, str) else _encode(payload)
    name = f"event: {event}\n" if event is not None else ""
    return f"{name}data: {data}\n\n".encode()


async def _sse_body(events: AsyncIterator[BaseModel], *, typed: bool) -> AsyncIterator[bytes]:
    try:
        async for event in events:
            yield sse_event(event, event=getattr(event, "type", None) if typed else None)
    except asyncio.CancelledError:  # the client went away; the generation was cancelled with it
        raise
    except OpenAIError as exc:
        if exc.__cause__ is not None:
            logger.error("stream failed", exc_info=exc.__cause__)
        yield sse_event(exc.to_dict(), event="error" if typed else None)
    except Exception:
        logger.exception("stream failed")
        failure = ServerError("The server failed while streaming this response.")
        yield sse_event(failure.to_dict(), event="error" if typed else None)
    if not typed:
        yield sse_event("[DONE]")


def sse_response(events: AsyncIterator[BaseModel], *, typed: bool = False) -> Response:
    """`typed`: name each event after its `type` and send no `[DONE]` (the Responses API's framing)."""
    response = Response(
        _sse_body(events, typed=typed),
        content_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
    response.timeout = None  # Quart cuts streams at 60 s by default; generations can be longer
    return response
