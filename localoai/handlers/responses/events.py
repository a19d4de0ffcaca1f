"""The Responses streaming events of a response, built as the SDK's own types.

`ResponseEvents` holds the little state a stream needs (the response's echoed settings, the
output items so far, which of them is still open) and builds each event; `sequence_number` is
stamped in one place (`_event`), so the numbers always increase by one. No I/O: every builder
is testable alone.

Output items are streamed one after the other, as OpenAI does: an item is added, filled, and done
before the next one is added, so `output_index` is the item's position in `Response.output`.
A `message` item is opened lazily, by the first content text (a response that is only tool calls
has none); a `function_call` item by the first piece of a parsed call. The order, which the SDK's
`responses.stream()` accumulator checks strictly:

    created, in_progress,
    per message:       output_item.added, content_part.added, output_text.delta...,
                       output_text.done, content_part.done, output_item.done
    per function call: output_item.added (empty arguments, in_progress),
                       function_call_arguments.delta..., function_call_arguments.done, output_item.done
    per client tool call (custom, local_shell, shell, apply_patch; see `client_tools`), once whole:
                       output_item.added, its type's events (custom_tool_call_input.delta / .done,
                       shell_call_command.added / .delta / .done), output_item.done
    per reasoning:     output_item.added (no content yet), content_part.added (reasoning_text),
                       reasoning_text.delta..., reasoning_text.done, content_part.done, output_item.done
    then completed / incomplete (or failed).

A response with no output at all (the model ended at once) still has one, empty, message.
A `reasoning` item is opened by the first reasoning text; it holds the reasoning as one
`reasoning_text` content part and an empty `summary` (no summarizer runs here).

Logprobs (`include: ["message.output_text.logprobs"]`) come in as `common.token_logprob` dicts,
with the text they belong to: the `output_text` part keeps every one (token, bytes, logprob,
top_logprobs), the delta and done events carry them without `bytes`, as the SDK types define.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from openai.types.responses import (
    Response,
    ResponseCompletedEvent,
    ResponseContentPartAddedEvent,
    ResponseContentPartDoneEvent,
    ResponseCreatedEvent,
    ResponseFailedEvent,
    ResponseFunctionCallArgumentsDeltaEvent,
    ResponseFunctionCallArgumentsDoneEvent,
    ResponseIncompleteEvent,
    ResponseInProgressEvent,
    ResponseOutputItemAddedEvent,
    ResponseOutputItemDoneEvent,
    ResponseReasoningTextDeltaEvent,
    ResponseReasoningTextDoneEvent,
    ResponseStreamEvent,
    ResponseTextDeltaEvent,
    ResponseTextDoneEvent,
    ResponseUsage,
)
from openai.types.responses.response_usage import InputTokensDetails, OutputTokensDetails

from localoai.handlers.responses.client_tools import ClientToolCall, ClientToolType
from localoai.handlers.common import new_id
from localoai.handlers.responses.hosted_tools import HostedCall
from localoai.handlers.responses.output_items import (
    FunctionCallState,
    ItemStatus,
    MessageState,
    ReasoningState,
    WholeItem,
    as_function_call,
    output_item,
)
from localoai.parsers.tool_calls import StreamDelta

TERMINAL_EVENTS = frozenset({"response.completed", "response.incomplete", "response.failed"})


def usage(input_tokens: int, output_tokens: int, reasoning_tokens: int = 0, cached_tokens: int = 0) -> ResponseUsage:
    return ResponseUsage(
        input_tokens=input_tokens,
        input_tokens_details=InputTokensDetails(cached_tokens=cached_tokens, cache_write_tokens=0),
        output_tokens=output_tokens,
        output_tokens_details=OutputTokensDetails(reasoning_tokens=reasoning_tokens),
        total_tokens=input_tokens + output_tokens,
    )


def _event_logprobs(logprobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Logprobs as the text delta / done events carry them: no `bytes`."""
    return [{"token": entry["token"], "logprob": entry["logprob"],
             "top_logprobs": [{"token": top["token"], "logprob": top["logprob"]} for top in entry["top_logprobs"]]}
            for entry in logprobs]


@dataclass
class ResponseEvents:
    """Builds the events of one response. `settings` are the `Response` fields echoed from the
    request (id, model, instructions, temperature, tools, ...), the same on every event."""

    settings: dict[str, Any]
    sequence: int = 0
    items: list[MessageState | FunctionCallState | ClientToolCall | HostedCall | WholeItem | ReasoningState] = \
        field(default_factory=list)
    """The output items so far, in `output_index` order; only the last one may still be open."""
    client_tools: dict[str, ClientToolType] = field(default_factory=dict)
    """Offered client-executed tools by the name the model calls them: their calls become their own item types."""
    call_errors: list[str] = field(default_factory=list)
    """Why a client tool's call came back as a plain `function_call` (its arguments did not fit)."""
    item_ids: list[str] = field(default_factory=list)
    """Ids for the next output items, in order (a replay reuses the stored ones); new ones when empty."""
    namespaced: dict[str, tuple[str, str]] = field(default_factory=dict)
    """Offered names of `namespace` tools' members -> (namespace, name): their calls carry both."""
    hosted: dict[str, str] = field(default_factory=dict)
    """Offered names of hosted tools the server runs -> their family: held until run (`hosted_done`)."""

    def _item_id(self, prefix: str) -> str:
        return self.item_ids.pop(0) if self.item_ids else new_id(prefix)

    def _event(self, event_type: type[Any], **fields: Any) -> Any:
        event = event_type(sequence_number=self.sequence, **fields)
        self.sequence += 1
        return event

    @property
    def _open(self) -> MessageState | FunctionCallState | ClientToolCall | HostedCall | WholeItem | ReasoningState | None:
        last = self.items[-1] if self.items else None
        return last if last is not None and last.status == "in_progress" else None

    # -- objects ---------------------------------------------------------------------------

    def response(self, status: str, output: list[Any], **fields: Any) -> Response:
        return Response(**{**self.settings, "status": status, "output": output, **fields})

    def output(self) -> list[Any]:
        """The output items as they stand; one still open is `incomplete`."""
        return [output_item(item, "incomplete" if item.status == "in_progress" else None) for item in self.items]

    @property
    def text(self) -> str:
        """All content text so far (every message item's)."""
        return "".join("".join(item.text) for item in self.items if isinstance(item, MessageState))

    @property
    def reasoning(self) -> str:
        """All reasoning text so far (every reasoning item's)."""
        return "".join("".join(item.text) for item in self.items if isinstance(item, ReasoningState))

    # -- events, in stream order -----------------------------------------------------------

    def created(self, status: str = "in_progress") -> ResponseCreatedEvent:
        """`status`: "queued" for a background response."""
        return self._event(ResponseCreatedEvent, type="response.created", response=self.response(status, []))

    def in_progress(self) -> ResponseInProgressEvent:
        return self._event(ResponseInProgressEvent, type="response.in_progress",
                           response=self.response("in_progress", []))

    def text_delta(self, delta: str, logprobs: list[dict[str, Any]] | None = None) -> list[ResponseStreamEvent]:
        """Content text (with its tokens' logprobs when they are included): opens a message item
        first when none is open (closing an open call)."""
        events: list[ResponseStreamEvent] = []
        message = self._open
        if not isinstance(message, MessageState):
            if self.items:  # a message after a call: the whitespace that separated them is not text
                delta = delta.lstrip()
            if not delta:
                return events
            events += self._close()
            events += self._open_message()
            message = self.items[-1]
            assert isinstance(message, MessageState)
        message.text.append(delta)
        message.logprobs += logprobs or []
        events.append(self._event(ResponseTextDeltaEvent, type="response.output_text.delta", item_id=message.id,
                                  output_index=len(self.items) - 1, content_index=0, delta=delta,
                                  logprobs=_event_logprobs(logprobs or [])))
        return events

    def reasoning_delta(self, delta: str) -> list[ResponseStreamEvent]:
        """Reasoning text: opens a reasoning item first when none is open (closing what was open)."""
        events: list[ResponseStreamEvent] = []
        item = self._open
        if not isinstance(item, ReasoningState):
            if not delta:
                return events
            events += self._close()
            item = ReasoningState(id=new_id("rs_"))
            self.items.append(item)
            index = len(self.items) - 1
            events += [
                self._event(ResponseOutputItemAddedEvent, type="response.output_item.added", output_index=index,
                            item=item.item(with_part=False)),
                self._event(ResponseContentPartAddedEvent, type="response.content_part.added", item_id=item.id,
                            output_index=index, content_index=0, part=item.part()),
            ]
        item.text.append(delta)
        events.append(self._event(ResponseReasoningTextDeltaEvent, type="response.reasoning_text.delta",
                                  item_id=item.id, output_index=len(self.items) - 1, content_index=0, delta=delta))
        return events

    def call_delta(self, piece: StreamDelta) -> list[ResponseStreamEvent]:
        """A piece of a parsed tool call: the first (with `id` and `name`) opens a function_call
        item, closing whatever was open; later ones are argument fragments of the open call."""
        events: list[ResponseStreamEvent] = []
        if piece.id is not None:
            events += self._close()
            kind = self.client_tools.get(piece.name or "")
            namespace, name = self.namespaced.get(piece.name or "", (None, piece.name or ""))
            if piece.name in self.hosted:  # its events go out once the server has run it
                self.items.append(HostedCall(family=self.hosted[piece.name], call_id=piece.id, name=piece.name,
                                             id=self._item_id("ws_")))
            elif kind is not None:  # its events go out when it closes, whole
                self.items.append(ClientToolCall(kind=kind, call_id=piece.id, name=name, namespace=namespace,
                                                 id=self.item_ids.pop(0) if self.item_ids else ""))
            else:
                call = FunctionCallState(id=self._item_id("fc_"), call_id=piece.id, name=name, namespace=namespace)
                self.items.append(call)
                events.append(self._event(ResponseOutputItemAddedEvent, type="response.output_item.added",
                                          output_index=len(self.items) - 1, item=call.item()))
        call = self._open
        if isinstance(call, (ClientToolCall, HostedCall)):
            call.arguments.append(piece.arguments or "")
            return events
        if not isinstance(call, FunctionCallState):
            raise ValueError("a tool-call fragment arrived before its call was opened")
        if piece.arguments:
            call.arguments.append(piece.arguments)
            events.append(self._event(ResponseFunctionCallArgumentsDeltaEvent,
                                      type="response.function_call_arguments.delta", item_id=call.id,
                                      output_index=len(self.items) - 1, delta=piece.arguments))
        return events

    def finished(self, response_usage: ResponseUsage, *, incomplete: bool) -> list[ResponseStreamEvent]:
        """The closing events: the open item done (an empty message first if there is no output
        at all), then `completed` or `incomplete`."""
        closing: list[ResponseStreamEvent] = self._open_message() if not self.items else []
        closing += self._close("incomplete" if incomplete else "completed")
        output = self.output()
        if incomplete:
            response = self.response("incomplete", output, usage=response_usage,
                                     incomplete_details={"reason": "max_output_tokens"})
            closing.append(self._event(ResponseIncompleteEvent, type="response.incomplete", response=response))
        else:
            response = self.response("completed", output, usage=response_usage, completed_at=int(time.time()))
            closing.append(self._event(ResponseCompletedEvent, type="response.completed", response=response))
        return closing

    def pending_hosted(self) -> list[HostedCall]:
        """Hosted calls the model has made that the server has not run yet."""
        return [item for item in self.items if isinstance(item, HostedCall) and item.result is None]

    def only_hosted_calls_since(self, first: int) -> bool:
        """Whether the items from `first` on call no tool but hosted ones (the server can go on)."""
        return not any(isinstance(item, (FunctionCallState, ClientToolCall)) for item in self.items[first:])

    def hosted_done(self, call: HostedCall, result: str) -> list[ResponseStreamEvent]:
        """A hosted call's events, now that the server has run it."""
        call.result = result
        return call.events(self.items.index(call), self._event)

    def whole_item(self, item: Any) -> list[ResponseStreamEvent]:
        """An output item that is streamed whole (added, then done): a replayed item of a type
        with no deltas of its own here."""
        events = self._close()
        if self.item_ids and self.item_ids[0] == getattr(item, "id", None):
            self.item_ids.pop(0)  # its id is its own, not the next item's
        self.items.append(WholeItem(item))
        index = len(self.items) - 1
        return [*events,
                self._event(ResponseOutputItemAddedEvent, type="response.output_item.added", output_index=index,
                            item=item),
                self._event(ResponseOutputItemDoneEvent, type="response.output_item.done", output_index=index,
                            item=item)]

    def ended(self, response: Response) -> list[ResponseStreamEvent]:
        """The closing events of a replayed response: the open item done with the response's
        status, then its terminal event carrying `response` as it was stored (none for a response
        that was cancelled: OpenAI has no event for that)."""
        incomplete = response.status in ("incomplete", "cancelled", "failed")
        closing = self._open_message() if response.output and not self.items else []  # one empty message
        closing += self._close("incomplete" if incomplete else "completed")
        terminal = {"completed": (ResponseCompletedEvent, "response.completed"),
                    "incomplete": (ResponseIncompleteEvent, "response.incomplete"),
                    "failed": (ResponseFailedEvent, "response.failed")}.get(response.status or "")
        if terminal is not None:
            closing.append(self._event(terminal[0], type=terminal[1], response=response))
        return closing

    def failed(self, message: str) -> ResponseFailedEvent:
        """A failure after the stream began: the output so far (an open item incomplete), and the error."""
        response = self.response("failed", self.output(), error={"code": "server_error", "message": message})
        return self._event(ResponseFailedEvent, type="response.failed", response=response)

    def snapshot(self, status: str) -> Response:
        """The response as it stands (a cancelled stream is recorded with this)."""
        return self.response(status, self.output())

    # -- opening and closing items ---------------------------------------------------------

    def _open_message(self) -> list[ResponseStreamEvent]:
        message = MessageState(id=self._item_id("msg_"))
        self.items.append(message)
        index = len(self.items) - 1
        return [
            self._event(ResponseOutputItemAddedEvent, type="response.output_item.added", output_index=index,
                        item=message.item(with_part=False)),
            self._event(ResponseContentPartAddedEvent, type="response.content_part.added", item_id=message.id,
                        output_index=index, content_index=0, part=message.part()),
        ]

    def _close(self, message_status: ItemStatus = "completed") -> list[ResponseStreamEvent]:
        """The open item's done events (none when nothing is open). A message or reasoning ends with
        the response's status; a call is complete once parsed, whatever ends the response."""
        item = self._open
        if item is None:
            return []
        index = len(self.items) - 1
        if isinstance(item, HostedCall):
            item.status = "pending"
            return []
        if isinstance(item, ClientToolCall):
            try:
                return item.closing_events(index, self._event)
            except ValueError as exc:  # not a valid item of its type: a plain function call, traced
                self.call_errors.append(str(exc))
                item = self.items[index] = as_function_call(item)
                added = self._event(ResponseOutputItemAddedEvent, type="response.output_item.added",
                                    output_index=index, item=item.item().model_copy(update={"arguments": ""}))
                delta = self._event(ResponseFunctionCallArgumentsDeltaEvent,
                                    type="response.function_call_arguments.delta", item_id=item.id,
                                    output_index=index, delta="".join(item.arguments))
                return [added, delta, *self._close()]
        if isinstance(item, FunctionCallState):
            item.status = "completed"
            return [
                # `name` is in OpenAI's reference (and stream), not in the SDK's class: an extra field
                self._event(ResponseFunctionCallArgumentsDoneEvent, type="response.function_call_arguments.done",
                            item_id=item.id, output_index=index, arguments="".join(item.arguments), name=item.name),
                self._event(ResponseOutputItemDoneEvent, type="response.output_item.done", output_index=index,
                            item=item.item()),
            ]
        item.status = message_status
        ids = {"item_id": item.id, "output_index": index, "content_index": 0}
        if isinstance(item, ReasoningState):
            return [
                self._event(ResponseReasoningTextDoneEvent, type="response.reasoning_text.done",
                            text="".join(item.text), **ids),
                self._event(ResponseContentPartDoneEvent, type="response.content_part.done", part=item.part(), **ids),
                self._event(ResponseOutputItemDoneEvent, type="response.output_item.done", output_index=index,
                            item=item.item()),
            ]
        return [
            self._event(ResponseTextDoneEvent, type="response.output_text.done", text="".join(item.text),
                        logprobs=_event_logprobs(item.logprobs), **ids),
            self._event(ResponseContentPartDoneEvent, type="response.content_part.done", part=item.part(), **ids),
            self._event(ResponseOutputItemDoneEvent, type="response.output_item.done", output_index=index,
                        item=item.item()),
        ]
