"""Hosted tools run by the server: `start(hosted_tools={"web_search": fn})` registers a Python
implementation of a tool OpenAI hosts, so that a model can use it the way OpenAI's models do.

The model is offered each registered family as a function of a fixed, documented shape
(`web_search`: `{"query": str}`). Its call is run server-side, off the event loop, and returned
as the hosted tool's own output item (`web_search_call`); the result text is what the model
reads next (see `handlers.responses`). Families without an implementation are not offered.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from openai.types.responses import (
    ResponseFunctionWebSearch,
    ResponseOutputItemAddedEvent,
    ResponseOutputItemDoneEvent,
    ResponseStreamEvent,
    ResponseWebSearchCallCompletedEvent,
    ResponseWebSearchCallInProgressEvent,
    ResponseWebSearchCallSearchingEvent,
)

WEB_SEARCH_FUNCTION: dict[str, Any] = {
    "name": "web_search",
    "description": "Search the web. Returns the results as text.",
    "parameters": {
        "type": "object",
        "properties": {"query": {"type": "string", "description": "What to search for."}},
        "required": ["query"],
        "additionalProperties": False,
    },
}
FUNCTIONS: dict[str, dict[str, Any]] = {"web_search": WEB_SEARCH_FUNCTION}
"""The function each family is offered to the model as, by family."""

HostedToolFunction = Callable[..., str]
"""Called with the model's arguments as keyword arguments (`query=...` for web search); returns
the text the model reads."""


RESULTS_KEPT = 4096
"""Results kept in memory by item id, so that a `web_search_call` a client sends back renders with it."""
UNAVAILABLE = "(the result of this call is no longer available)"


@dataclass(frozen=True)
class HostedTools:
    """The hosted tool implementations of one server, by family, and the recent calls' results."""

    functions: Mapping[str, HostedToolFunction] = field(default_factory=dict)
    results: OrderedDict[str, str] = field(default_factory=OrderedDict, compare=False)

    def __post_init__(self) -> None:
        for family, function in self.functions.items():
            if family not in FUNCTIONS:
                raise ValueError(f"hosted_tools: no hosted tool {family!r} can be run here; "
                                 f"implementations are taken for {sorted(FUNCTIONS)}")
            if not callable(function):
                raise TypeError(f"hosted_tools[{family!r}] must be callable")

    def definitions(self) -> dict[str, dict[str, Any]]:
        """The function definition of each family with an implementation."""
        return {family: FUNCTIONS[family] for family in self.functions}

    def run(self, call: HostedCall) -> str:
        """Run one call (blocking: call it off the event loop); an exception's text is the result.
        The result is kept by the call's item id."""
        try:
            arguments = json.loads("".join(call.arguments) or "{}")
            result = str(self.functions[call.family](**arguments))
        except Exception as exc:  # noqa: BLE001 - the model reads the failure, as a tool result
            result = f"error: {type(exc).__name__}: {exc}"
        self.results[call.id] = result
        while len(self.results) > RESULTS_KEPT:
            self.results.popitem(last=False)
        return result

    def result(self, item_id: str) -> str:
        return self.results.get(item_id, UNAVAILABLE)


@dataclass
class HostedCall:
    """The model's call of a hosted tool, as the event builder holds it: no event goes out until
    the server has run it (`events`)."""

    family: str
    call_id: str
    name: str
    id: str
    arguments: list[str] = field(default_factory=list)
    status: Literal["in_progress", "pending"] = "in_progress"
    """`pending` once its arguments are whole (it is no longer the open item), until it has run."""
    result: str | None = None

    def query(self) -> str:
        try:
            arguments = json.loads("".join(self.arguments) or "{}")
        except ValueError:
            return "".join(self.arguments)
        return str(arguments.get("query", "")) if isinstance(arguments, dict) else str(arguments)

    def item(self, status: str | None = None) -> ResponseFunctionWebSearch:
        done = self.result is not None
        return ResponseFunctionWebSearch(id=self.id, type="web_search_call",
                                         status="completed" if done else "in_progress" if status is None else "failed",
                                         action={"type": "search", "query": self.query()})

    def events(self, index: int, event: Callable[..., Any]) -> list[ResponseStreamEvent]:
        """Its events once run, `event(EventType, **fields)` stamping each with its sequence number."""
        ids = {"item_id": self.id, "output_index": index}
        added = self.item().model_copy(update={"status": "in_progress"})
        return [
            event(ResponseOutputItemAddedEvent, type="response.output_item.added", output_index=index, item=added),
            event(ResponseWebSearchCallInProgressEvent, type="response.web_search_call.in_progress", **ids),
            event(ResponseWebSearchCallSearchingEvent, type="response.web_search_call.searching", **ids),
            event(ResponseWebSearchCallCompletedEvent, type="response.web_search_call.completed", **ids),
            event(ResponseOutputItemDoneEvent, type="response.output_item.done", output_index=index,
                  item=self.item()),
        ]
