"""Hosted tools run by the server: `start(hosted_tools={"web_search": fn})` registers a Python
implementation of a tool OpenAI hosts, so that a model can use it the way OpenAI's models do.

The model is offered each registered family as a function of a fixed, documented shape
(`web_search`: `{"query": str}`). Its call is run server-side, off the event loop, and returned
as the hosted tool's own output item (`web_search_call`); the result text is what the model
reads next (see `handlers.responses`). Families without an implementation are not offered.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from openai.types.responses import ResponseFunctionWebSearch

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


@dataclass(frozen=True)
class HostedTools:
    """The hosted tool implementations of one server, by family."""

    functions: Mapping[str, HostedToolFunction] = field(default_factory=dict)

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

    def run(self, family: str, arguments: dict[str, Any]) -> str:
        """Run one call (blocking: call it off the event loop); an exception's text is the result."""
        try:
            return str(self.functions[family](**arguments))
        except Exception as exc:  # noqa: BLE001 - the model reads the failure, as a tool result
            return f"error: {type(exc).__name__}: {exc}"


def call_item(family: str, item_id: str, arguments: dict[str, Any]) -> ResponseFunctionWebSearch:
    """The output item of a hosted call, as OpenAI returns it."""
    return ResponseFunctionWebSearch(id=item_id, type="web_search_call", status="completed",
                                     action={"type": "search", "query": str(arguments.get("query", ""))})
