"""Hosted tools (OpenAI runs them: web search, image generation, ...) and `namespace` tools, as
coding agents (Codex) send them in `tools`.

A local model has no hosted tool of its own. A hosted tool is accepted (a default Codex config
offers `web_search`) and then, on the server, either run by the Python function registered for its
family (`start(hosted_tools={"web_search": fn})`, see `handlers.responses.hosted_tools`) or NOT offered to
the model, which the response's `tools` echo, the record and the log show. `mcp` (a remote MCP
server the client names) and `programmatic_tool_calling` stay refused: the server connects to no
MCP server (Codex runs MCP itself and sends its tools as functions or namespaces).

A `namespace` tool groups function / custom tools (Codex's MCP and dynamic tools): the model is
offered each member as a function named `{namespace}__{name}` (Codex's own flat MCP naming), and
its calls are returned under the member's `name` with the item's `namespace`, as OpenAI returns them.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import ConfigDict, Field, StrictBool

from localoai.protocol.base import RequestModel
from localoai.protocol.client_tools import CustomTool, ToolName

HOSTED_TOOLS = (
    "web_search", "web_search_preview", "web_search_preview_2025_03_11", "web_search_2025_08_26", "file_search",
    "code_interpreter", "computer_use_preview", "computer", "computer_use", "image_generation", "tool_search",
)
HostedToolType = Literal[
    "web_search", "web_search_preview", "web_search_preview_2025_03_11", "web_search_2025_08_26", "file_search",
    "code_interpreter", "computer_use_preview", "computer", "computer_use", "image_generation", "tool_search",
]
REFUSED_HOSTED_TOOLS = {
    "mcp": "the server connects to no MCP server; run the MCP client yourself and offer its tools as functions "
           "(Codex does: they arrive as `namespace` tools)",
    "programmatic_tool_calling": "programs calling tools run on OpenAI's side",
}
FAMILIES = {"web_search_preview": "web_search", "web_search_preview_2025_03_11": "web_search",
            "web_search_2025_08_26": "web_search", "computer_use_preview": "computer", "computer_use": "computer"}
"""Dated and preview variants of a tool, by the family an implementation is registered under."""


def hosted_family(kind: str) -> str:
    """`web_search_preview` -> `web_search`: the name `hosted_tools` implementations are keyed by."""
    return FAMILIES.get(kind, kind)


class HostedTool(RequestModel):
    """A hosted tool as sent: its options (filters, sizes, `external_web_access`, ...) are kept for the
    echo and handed to a registered implementation; they are the implementation's to honour."""

    model_config = ConfigDict(extra="allow", strict=True, frozen=True)
    type: HostedToolType


class NamespaceFunction(RequestModel):
    type: Literal["function"]
    name: ToolName
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: StrictBool | None = None
    defer_loading: StrictBool | None = None


class NamespaceTool(RequestModel):
    type: Literal["namespace"]
    name: ToolName
    description: str | None = None
    tools: Annotated[list[Annotated[Union[NamespaceFunction, CustomTool], Field(discriminator="type")]],
                     Field(min_length=1)]


class WebSearchAction(RequestModel):
    model_config = ConfigDict(extra="allow", strict=True, frozen=True)  # `sources` and what OpenAI adds
    type: Literal["search", "open_page", "find", "find_in_page"]
    query: str | None = None


class WebSearchCallItem(RequestModel):
    """A hosted web search from an earlier turn (Codex sends it back): rendered as the `web_search`
    call and the result the server kept for it (see `handlers.responses.hosted_tools`)."""

    type: Literal["web_search_call"]
    id: str
    status: Literal["in_progress", "searching", "completed", "failed", "incomplete"] | None = None
    action: WebSearchAction | None = None


NAMESPACE_SEPARATOR = "__"


def namespaced_name(namespace: str, name: str) -> str:
    """The flat name a namespace's member is offered to the model under."""
    return f"{namespace}{NAMESPACE_SEPARATOR}{name}"
