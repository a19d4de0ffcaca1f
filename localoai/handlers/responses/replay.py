"""A stored response's events, for `GET /v1/responses/{id}?stream=true`.

The events are made by the live stream's own builder (`ResponseEvents`), fed the stored output
items in order (each keeping its stored id): the same event types and order as when the response
was generated, with each item's text or arguments in one delta (the stored response keeps no
per-token chunking, so sequence numbers are those of this replay, not of the original stream).
The terminal event carries the stored response exactly as `retrieve` returns it.
"""

from __future__ import annotations

from typing import Any

from openai.types.responses import Response, ResponseStreamEvent

from localoai.handlers.responses.client_tools import chat_tool_call
from localoai.handlers.responses.events import ResponseEvents
from localoai.parsers.tool_calls import StreamDelta
from localoai.protocol.hosted_tools import namespaced_name

_CLIENT_CALLS = {"custom_tool_call": "custom", "local_shell_call": "local_shell", "shell_call": "shell",
                 "apply_patch_call": "apply_patch"}
_RESULT_FIELDS = {"status", "output", "usage", "completed_at", "incomplete_details", "error"}


def replay_builder(response: Response) -> ResponseEvents:
    """A builder that re-creates `response`'s items under their stored ids."""
    settings = {key: getattr(response, key) for key in response.model_fields_set - _RESULT_FIELDS}
    settings.update(error=None, incomplete_details=None)  # as the live stream's opening events carry them
    return ResponseEvents(settings=settings, item_ids=[item.id for item in response.output if item.id])


def opening_events(build: ResponseEvents, response: Response) -> list[ResponseStreamEvent]:
    """`created` (queued for a background response) and `in_progress`."""
    return [build.created("queued" if response.background else "in_progress"), build.in_progress()]


def item_events(build: ResponseEvents, response: Response) -> list[ResponseStreamEvent]:
    """Every output item's events, then the closing ones (see `ResponseEvents.ended`)."""
    events: list[ResponseStreamEvent] = []
    for index, item in enumerate(response.output):
        if item.type == "message" and all(part.type == "output_text" for part in item.content):
            for part in item.content:
                logprobs = [entry.model_dump(mode="json") for entry in part.logprobs or []]
                events += build.text_delta(part.text, logprobs)
        elif item.type == "function_call":
            name = item.name
            if item.namespace:
                name = namespaced_name(item.namespace, item.name)
                build.namespaced[name] = (item.namespace, item.name)
            events += _call(build, index, item.call_id, name, item.arguments)
        elif item.type in _CLIENT_CALLS:
            call = chat_tool_call(item.model_dump(mode="json", exclude_none=True))
            assert call is not None
            name = call["function"]["name"]
            if getattr(item, "namespace", None):
                build.namespaced[name] = (item.namespace, item.name)  # type: ignore[union-attr]
            build.client_tools[name] = _CLIENT_CALLS[item.type]  # type: ignore[assignment]
            events += _call(build, index, item.call_id, name, call["function"]["arguments"])
        else:  # reasoning and any item without deltas of its own here
            events += build.whole_item(item)
    return [*events, *build.ended(response)]


def _call(build: ResponseEvents, index: int, call_id: Any, name: str, arguments: str) -> list[ResponseStreamEvent]:
    return [*build.call_delta(StreamDelta(index=index, id=call_id, name=name, arguments="")),
            *build.call_delta(StreamDelta(index=index, arguments=arguments))]


def replay_events(response: Response) -> list[ResponseStreamEvent]:
    build = replay_builder(response)
    return [*opening_events(build, response), *item_events(build, response)]
