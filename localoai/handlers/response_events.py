"""The Responses streaming events of a one-message response, built as the SDK's own types.

`ResponseEvents` holds the little state a stream needs (the response's echoed settings, the
message id, the text so far) and builds each event; `sequence_number` is stamped in one place
(`_event`), so the numbers always increase by one. No I/O: every builder is testable alone.

The order is OpenAI's, which the SDK's `responses.stream()` accumulator checks strictly:
created, in_progress, output_item.added, content_part.added, output_text.delta..., output_text.done,
content_part.done, output_item.done, then completed / incomplete (or failed).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from openai.types.responses import (
    Response,
    ResponseCompletedEvent,
    ResponseContentPartAddedEvent,
    ResponseContentPartDoneEvent,
    ResponseCreatedEvent,
    ResponseFailedEvent,
    ResponseIncompleteEvent,
    ResponseInProgressEvent,
    ResponseOutputItemAddedEvent,
    ResponseOutputItemDoneEvent,
    ResponseOutputMessage,
    ResponseOutputText,
    ResponseStreamEvent,
    ResponseTextDeltaEvent,
    ResponseTextDoneEvent,
    ResponseUsage,
)
from openai.types.responses.response_usage import InputTokensDetails, OutputTokensDetails

TERMINAL_EVENTS = frozenset({"response.completed", "response.incomplete", "response.failed"})
MessageStatus = Literal["in_progress", "completed", "incomplete"]


def usage(input_tokens: int, output_tokens: int) -> ResponseUsage:
    return ResponseUsage(
        input_tokens=input_tokens,
        input_tokens_details=InputTokensDetails(cached_tokens=0, cache_write_tokens=0),
        output_tokens=output_tokens,
        output_tokens_details=OutputTokensDetails(reasoning_tokens=0),
        total_tokens=input_tokens + output_tokens,
    )


@dataclass
class ResponseEvents:
    """Builds the events of one response. `settings` are the `Response` fields echoed from the
    request (id, model, instructions, temperature, tools, ...), the same on every event."""

    settings: dict[str, Any]
    message_id: str
    sequence: int = 0
    text: list[str] = field(default_factory=list)

    def _event(self, event_type: type[Any], **fields: Any) -> Any:
        event = event_type(sequence_number=self.sequence, **fields)
        self.sequence += 1
        return event

    # -- objects ---------------------------------------------------------------------------

    def response(self, status: str, output: list[Any], **fields: Any) -> Response:
        return Response(**{**self.settings, "status": status, "output": output, **fields})

    def part(self) -> ResponseOutputText:
        return ResponseOutputText(type="output_text", text="".join(self.text), annotations=[], logprobs=[])

    def message(self, status: MessageStatus, *, with_part: bool = True) -> ResponseOutputMessage:
        return ResponseOutputMessage(id=self.message_id, type="message", role="assistant", status=status,
                                     content=[self.part()] if with_part else [])

    # -- events, in stream order -----------------------------------------------------------

    def created(self) -> ResponseCreatedEvent:
        return self._event(ResponseCreatedEvent, type="response.created", response=self.response("in_progress", []))

    def in_progress(self) -> ResponseInProgressEvent:
        return self._event(ResponseInProgressEvent, type="response.in_progress",
                           response=self.response("in_progress", []))

    def message_added(self) -> ResponseOutputItemAddedEvent:
        return self._event(ResponseOutputItemAddedEvent, type="response.output_item.added", output_index=0,
                           item=self.message("in_progress", with_part=False))

    def part_added(self) -> ResponseContentPartAddedEvent:
        return self._event(ResponseContentPartAddedEvent, type="response.content_part.added", item_id=self.message_id,
                           output_index=0, content_index=0, part=self.part())

    def text_delta(self, delta: str) -> ResponseTextDeltaEvent:
        self.text.append(delta)
        return self._event(ResponseTextDeltaEvent, type="response.output_text.delta", item_id=self.message_id,
                           output_index=0, content_index=0, delta=delta, logprobs=[])

    def finished(self, response_usage: ResponseUsage, *, incomplete: bool) -> list[ResponseStreamEvent]:
        """The closing events: the text, part and message done, then `completed` or `incomplete`."""
        status: MessageStatus = "incomplete" if incomplete else "completed"
        ids = {"item_id": self.message_id, "output_index": 0, "content_index": 0}
        closing = [
            self._event(ResponseTextDoneEvent, type="response.output_text.done", text="".join(self.text),
                        logprobs=[], **ids),
            self._event(ResponseContentPartDoneEvent, type="response.content_part.done", part=self.part(), **ids),
            self._event(ResponseOutputItemDoneEvent, type="response.output_item.done", output_index=0,
                        item=self.message(status)),
        ]
        output = [self.message(status)]
        if incomplete:
            response = self.response("incomplete", output, usage=response_usage,
                                     incomplete_details={"reason": "max_output_tokens"})
            closing.append(self._event(ResponseIncompleteEvent, type="response.incomplete", response=response))
        else:
            response = self.response("completed", output, usage=response_usage, completed_at=int(time.time()))
            closing.append(self._event(ResponseCompletedEvent, type="response.completed", response=response))
        return closing

    def failed(self, message: str) -> ResponseFailedEvent:
        """A failure after the stream began: the text so far, as an incomplete message, and the error."""
        response = self.response("failed", [self.message("incomplete")],
                                 error={"code": "server_error", "message": message})
        return self._event(ResponseFailedEvent, type="response.failed", response=response)

    def snapshot(self, status: str) -> Response:
        """The response as it stands (a cancelled stream is recorded with this)."""
        return self.response(status, [self.message("incomplete")] if self.text else [])


def final_response(events: Iterable[ResponseStreamEvent]) -> Response:
    """Fold a stream into the `Response` a non-streamed request returns: OpenAI's terminal event
    carries the whole response, which the builder accumulated from the very deltas it sent."""
    for event in events:
        if event.type in TERMINAL_EVENTS:
            return event.response  # type: ignore[union-attr]
    raise ValueError("the event stream has no terminal event")
