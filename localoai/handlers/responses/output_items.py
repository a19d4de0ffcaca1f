"""The output items of a streamed response as they are built (message, function call, reasoning,
an item streamed whole), each turned into the SDK's item type with a status."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from openai.types.responses import (
    ResponseFunctionToolCall,
    ResponseOutputMessage,
    ResponseOutputText,
    ResponseReasoningItem,
)
from openai.types.responses.response_reasoning_item import Content as ReasoningContent

from localoai.handlers.responses.client_tools import ClientToolCall
from localoai.handlers.common import new_id
from localoai.handlers.responses.hosted_tools import HostedCall

ItemStatus = Literal["in_progress", "completed", "incomplete"]


@dataclass
class MessageState:
    id: str
    text: list[str] = field(default_factory=list)
    status: ItemStatus = "in_progress"
    logprobs: list[dict[str, Any]] = field(default_factory=list)

    def part(self) -> ResponseOutputText:
        return ResponseOutputText(type="output_text", text="".join(self.text), annotations=[],
                                  logprobs=self.logprobs)

    def item(self, status: ItemStatus | None = None, *, with_part: bool = True) -> ResponseOutputMessage:
        return ResponseOutputMessage(id=self.id, type="message", role="assistant", status=status or self.status,
                                     content=[self.part()] if with_part else [])


@dataclass
class FunctionCallState:
    id: str
    call_id: str
    name: str
    arguments: list[str] = field(default_factory=list)
    status: ItemStatus = "in_progress"
    namespace: str | None = None

    def item(self, status: ItemStatus | None = None) -> ResponseFunctionToolCall:
        namespace = {"namespace": self.namespace} if self.namespace else {}  # never a null: the spec has none
        return ResponseFunctionToolCall(id=self.id, type="function_call", call_id=self.call_id, name=self.name,
                                        arguments="".join(self.arguments), status=status or self.status, **namespace)


@dataclass
class ReasoningState:
    id: str
    text: list[str] = field(default_factory=list)
    status: ItemStatus = "in_progress"

    def part(self) -> dict[str, str]:
        """As a dict: the added and done events each define their own `PartReasoningText` class."""
        return {"type": "reasoning_text", "text": "".join(self.text)}

    def item(self, status: ItemStatus | None = None, *, with_part: bool = True) -> ResponseReasoningItem:
        content = [ReasoningContent(type="reasoning_text", text="".join(self.text))] if with_part else []
        return ResponseReasoningItem(id=self.id, type="reasoning", summary=[], content=content,
                                     status=status or self.status)


@dataclass
class WholeItem:
    """An item streamed whole; it is never open."""

    whole: Any
    status: str = "completed"

    def item(self, status: ItemStatus | None = None) -> Any:
        return self.whole


def as_function_call(call: ClientToolCall) -> FunctionCallState:
    return FunctionCallState(id=new_id("fc_"), call_id=call.call_id, name=call.name, arguments=call.arguments,
                         namespace=call.namespace)


def output_item(item: MessageState | FunctionCallState | ClientToolCall | HostedCall | WholeItem,
                 status: ItemStatus | None) -> Any:
    if isinstance(item, ClientToolCall):
        try:
            return item.item(status)
        except ValueError:
            return as_function_call(item).item(status)
    return item.item(status)
