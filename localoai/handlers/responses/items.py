"""Responses input items: each gets an id and the shape OpenAI lists it in (`ResponseItem`), and the
list renders through the chat template as chat messages.

The stored item list (`stored_items`) is the one form every later step reads: the prompt is
rendered from it, `input_items` lists it, and a later `previous_response_id` replays it.

Rendering (`chat_messages`): `instructions` and every `system`/`developer` message are merged into
ONE leading system message (chat templates expect at most one, first); `function_call` items
become assistant `tool_calls` (attached to the assistant message just before them, if any) and
`function_call_output` items `tool` messages, and so do the calls and outputs of tools the client
executes (`custom_tool_call`, `shell_call`, ...; see `client_tools`). A `reasoning` item's `content` (the reasoning text
this server returns) becomes the `reasoning_content` of the assistant message that follows it
(the message, or the assistant turn its function calls open), and `chat_template.template_messages`
hands it to the template the way it reads it (Qwen3's `reasoning_content`, gpt-oss's `thinking`);
the template decides whether an earlier turn's reasoning is shown (Qwen3 keeps it only after the
last user turn). A reasoning item with no assistant turn after it, or with only a `summary` or
`encrypted_content` (OpenAI's own), has nothing the template can render. A `compaction` item (made
by `POST /v1/responses/compact`, see `compaction`) renders as a user message holding its summary, and
of what comes before the latest one only the user, system and developer messages are rendered.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from pydantic import TypeAdapter

from localoai.handlers.responses.client_tools import CLIENT_ITEMS, chat_tool_call, stored_item, tool_result
from localoai.errors import InvalidRequestError
from localoai.handlers.common import new_id
from localoai.handlers.responses.hosted_tools import UNAVAILABLE, WEB_SEARCH_FUNCTION
from localoai.protocol.chat import FunctionTool as ChatFunctionTool
from localoai.protocol.chat import Message
from localoai.protocol.client_tools import function_definition
from localoai.protocol.hosted_tools import namespaced_name
from localoai.protocol.response_items import (
    CompactionItem,
    FunctionCallItem,
    FunctionCallOutputItem,
    InputItem,
    MessageItem,
    ReasoningItem,
    WebSearchCallItem,
    compaction_summary,
)

_MESSAGES = TypeAdapter(list[Message])

COMPACTED_HISTORY = "The earlier part of this conversation was compacted into this summary:\n\n"
"""What a `compaction` item renders as, before its summary: a user message (see `compaction`)."""


def stored_items(given: str | Sequence[InputItem]) -> list[dict[str, Any]]:
    """This request's input as OpenAI lists input items: with ids (new ones where the client sent
    none), a status, and message content always as a list of parts."""
    if isinstance(given, str):
        given = [MessageItem(role="user", content=given)]
    items: list[dict[str, Any]] = []
    for item in given:
        if isinstance(item, MessageItem):
            items.append({
                "id": item.id or new_id("msg_"),
                "type": "message",
                "role": item.role,
                "content": _parts(item),
                "status": item.status or "completed",
            })
        elif isinstance(item, FunctionCallItem):
            items.append({
                "id": item.id or new_id("fc_"),
                "type": "function_call",
                "call_id": item.call_id,
                "name": item.name,
                "arguments": item.arguments,
                "status": item.status or "completed",
                **({"namespace": item.namespace} if item.namespace else {}),
            })
        elif isinstance(item, FunctionCallOutputItem):
            output = item.output if isinstance(item.output, str) else [
                part.model_dump(mode="json", exclude_none=True) for part in item.output
            ]
            items.append({
                "id": item.id or new_id("fco_"),
                "type": "function_call_output",
                "call_id": item.call_id,
                "output": output,
                "status": item.status or "completed",
            })
        elif isinstance(item, WebSearchCallItem):
            items.append(item.model_dump(mode="json", exclude_none=True))
        elif isinstance(item, ReasoningItem):
            items.append({**item.model_dump(mode="json", exclude_none=True), "id": item.id or new_id("rs_")})
        elif isinstance(item, CompactionItem):
            items.append({**item.model_dump(mode="json", exclude_none=True), "id": item.id or new_id("cmp_")})
        elif isinstance(item, CLIENT_ITEMS):
            items.append(stored_item(item))
        else:  # the protocol's allow-list and this function must name the same types
            raise TypeError(f"unhandled input item {type(item).__name__}")
    return items


def _parts(item: MessageItem) -> list[dict[str, Any]]:
    """Content as parts; an `output_text` part always with its `annotations` and `logprobs` (the spec
    requires both; empty when the client sent none)."""
    if isinstance(item.content, str):
        if item.role == "assistant":
            return [{"type": "output_text", "text": item.content, "annotations": [], "logprobs": []}]
        return [{"type": "input_text", "text": item.content}]
    parts = [part.model_dump(mode="json", exclude_none=True) for part in item.content]
    for part in parts:
        if part["type"] == "output_text":
            part.setdefault("logprobs", [])
    return parts


def _text(content: str | list[dict[str, Any]]) -> str:
    """Parts joined as chat completions join text parts."""
    if isinstance(content, str):
        return content
    return "\n".join(part.get("text", part.get("refusal", "")) for part in content)


def chat_messages(instructions: str | None, items: Sequence[dict[str, Any]],
                  hosted_result: Callable[[str], str] = lambda item_id: UNAVAILABLE) -> list[Message]:
    """Stored items (and this request's `instructions`) as the chat messages the template renders.
    A hosted `web_search_call` renders as a `web_search` call and its result (`hosted_result(item id)`:
    the server keeps recent results, see `HostedTools`)."""
    items = since_compaction(items)
    system: list[str] = [instructions] if instructions else []
    messages: list[dict[str, Any]] = []
    reasoning: list[str] = []  # reasoning items waiting for the assistant turn they belong to

    def assistant(message: dict[str, Any]) -> dict[str, Any]:
        if reasoning:
            message["reasoning_content"] = "\n".join(reasoning)
            reasoning.clear()
        return message

    def add_call(call: dict[str, Any]) -> None:
        """A call joins the assistant message just before it, if any (one turn, several calls), unless
        reasoning came between them (then it opens the next turn, which the reasoning belongs to)."""
        if messages and messages[-1]["role"] == "assistant" and not reasoning:
            messages[-1].setdefault("tool_calls", []).append(call)
        else:
            messages.append(assistant({"role": "assistant", "content": None, "tool_calls": [call]}))

    for item in items:
        kind = item["type"]
        if kind == "message":
            if item["role"] in ("system", "developer"):
                system.append(_text(item["content"]))
            elif item["role"] == "assistant":
                messages.append(assistant({"role": "assistant", "content": _text(item["content"])}))
            else:
                messages.append({"role": item["role"], "content": _text(item["content"])})
        elif kind == "function_call":
            name = namespaced_name(item["namespace"], item["name"]) if item.get("namespace") else item["name"]
            add_call({"id": item["call_id"], "type": "function",
                      "function": {"name": name, "arguments": item["arguments"]}})
        elif (call := chat_tool_call(item)) is not None:
            add_call(call)
        elif kind == "web_search_call":
            query = (item.get("action") or {}).get("query", "")
            add_call({"id": item["id"], "type": "function", "function": {
                "name": WEB_SEARCH_FUNCTION["name"], "arguments": json.dumps({"query": query}, ensure_ascii=False)}})
            messages.append({"role": "tool", "tool_call_id": item["id"], "content": hosted_result(item["id"])})
        elif kind == "function_call_output":
            messages.append({"role": "tool", "tool_call_id": item["call_id"], "content": _text(item["output"])})
        elif (result := tool_result(item)) is not None:
            messages.append({"role": "tool", "tool_call_id": result[0], "content": result[1]})
        elif kind == "reasoning":
            text = "".join(part.get("text", "") for part in item.get("content") or [])
            if text:
                reasoning.append(text)
        elif kind == "compaction":
            summary = compaction_summary(item["encrypted_content"]) or ""  # checked when the item came in
            messages.append({"role": "user", "content": COMPACTED_HISTORY + summary})
    if system:
        messages.insert(0, {"role": "system", "content": "\n\n".join(system)})
    return _MESSAGES.validate_python(messages)


def since_compaction(items: Sequence[dict[str, Any]]) -> Sequence[dict[str, Any]]:
    """What a conversation holding `compaction` items renders: before the latest one, only the user,
    system and developer messages (what `POST /v1/responses/compact` keeps); its summary stands for the
    rest, so a chain that went on after a compaction is not rendered whole again."""
    latest = max((index for index, item in enumerate(items) if item["type"] == "compaction"), default=None)
    if latest is None:
        return items
    return [item for item in items[:latest] if item["type"] == "message" and item["role"] != "assistant"] \
        + list(items[latest:])


def check_call_outputs(items: Sequence[dict[str, Any]], first_new: int) -> None:
    """A 400, as OpenAI's, for a `function_call_output` among the request's items (from `first_new`
    on) whose `call_id` answers no call before it: the template would render a stray tool message."""
    calls: set[str] = set()
    for index, item in enumerate(items):
        if item["type"] == "function_call":
            calls.add(item["call_id"])
        elif (call := chat_tool_call(item)) is not None:
            calls.add(call["id"])
        elif item["type"] == "function_call_output" and index >= first_new and item["call_id"] not in calls:
            raise InvalidRequestError(
                f"No tool call found for function call output with call_id {item['call_id']}.",
                param="input")


def chat_tools(tools: Sequence[Any] | None) -> list[ChatFunctionTool] | None:
    """Responses' flat function tools in the chat shape the template is written for; the tools the
    client executes as the functions they are offered as (see `client_tools`)."""
    if not tools:
        return None
    return [
        ChatFunctionTool.model_validate({
            "type": "function",
            "function": function_definition(tool)
            or tool.model_dump(include={"name", "description", "parameters"}, exclude_none=True),
        })
        for tool in tools
    ]


def without_encrypted_reasoning(item: dict[str, Any]) -> dict[str, Any]:
    """A reasoning item as listed when `reasoning.encrypted_content` was not included (as OpenAI)."""
    if item.get("type") != "reasoning" or "encrypted_content" not in item:
        return item
    return {key: value for key, value in item.items() if key != "encrypted_content"}
