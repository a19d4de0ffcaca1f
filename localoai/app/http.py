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
from quart import Response, current_app, has_app_context

from localoai.errors import OpenAIError, ServerError, anthropic_error

logger = logging.getLogger("localoai.http")


def _encode(payload: BaseModel | dict[str, Any] | list[Any]) -> str:
    if isinstance(payload, BaseModel):
        # The SDK's models omit fields never set and keep explicit nulls, as OpenAI sends them; fields
        # named differently on the wire (`schema_` is `schema`) go by their wire name.
        return payload.model_dump_json(exclude_unset=True, by_alias=True)
    return json.dumps(payload, separators=(",", ":"))


def json_response(
    payload: BaseModel | dict[str, Any] | list[Any], status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    return Response(_encode(payload), status=status, content_type="application/json", headers=headers)


def error_response(error: OpenAIError, *, anthropic: bool = False) -> Response:
    """`anthropic`: in Anthropic's error shape (the Messages API's paths)."""
    body = anthropic_error(error) if anthropic else error.to_dict()
    return json_response(body, status=error.status, headers=error.headers)


def sse_event(payload: BaseModel | dict[str, Any] | str, *, event: str | None = None) -> bytes:
    data = payload if isinstance(payload, str) else _encode(payload)
    name = f"event: {event}\n" if event is not None else ""
    return f"{name}data: {data}\n\n".encode()


class OpenStreams:
    """The streams a server is sending, so that `stop()` can end them cleanly: each gets an error
    event and its normal end (`[DONE]`) instead of a cut connection. Used on the server's loop only."""

    def __init__(self) -> None:
        self.stopping = False
        self.tasks: set[asyncio.Task[Any]] = set()

    def stop_all(self) -> None:
        self.stopping = True
        for task in list(self.tasks):
            task.cancel()


def open_streams(app: Any) -> OpenStreams:
    return app.extensions.setdefault("localoai.streams", OpenStreams())


async def _sse_body(events: AsyncIterator[BaseModel], *, typed: bool, anthropic: bool,
                    streams: OpenStreams | None = None) -> AsyncIterator[bytes]:
    shape = anthropic_error if anthropic else OpenAIError.to_dict
    task = asyncio.current_task()
    if streams is not None and task is not None:
        streams.tasks.add(task)
    try:
        async for event in events:
            yield sse_event(event, event=getattr(event, "type", None) if typed else None)
    except asyncio.CancelledError:
        if streams is None or not streams.stopping or task is None:
            raise  # the client went away; the generation was cancelled with it
        if hasattr(task, "uncancel"):  # Python 3.11+ counts cancellations; 3.10 does not
            task.uncancel()  # the server is stopping (`OpenStreams.stop_all`): end this stream properly
        await events.aclose()  # the generation ends as cancelled, as on a disconnect
        stopping = ServerError("The server stopped while streaming this response.")
        yield sse_event(shape(stopping), event="error" if typed else None)
    except OpenAIError as exc:
        if exc.__cause__ is not None:
            logger.error("stream failed", exc_info=exc.__cause__)
        yield sse_event(shape(exc), event="error" if typed else None)
    except Exception:
        logger.exception("stream failed")
        failure = ServerError("The server failed while streaming this response.")
        yield sse_event(shape(failure), event="error" if typed else None)
    finally:
        if streams is not None and task is not None:
            streams.tasks.discard(task)
    if not typed:
        yield sse_event("[DONE]")


def sse_response(events: AsyncIterator[BaseModel], *, typed: bool = False, anthropic: bool = False) -> Response:
    """`typed`: name each event after its `type` and send no `[DONE]` (the Responses and Messages APIs'
    framing); `anthropic`: a failure after the start is sent in Anthropic's error shape."""
    response = Response(
        _sse_body(events, typed=typed, anthropic=anthropic,
                  streams=open_streams(current_app) if has_app_context() else None),
        content_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
    response.timeout = None  # Quart cuts streams at 60 s by default; generations can be longer
    return response
