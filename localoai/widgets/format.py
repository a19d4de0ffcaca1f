"""What the inspector shows of a record's conversation, computed from plain record data: no widgets, no store,
no browser (its tokens are `localoai.widgets.tokens`').

Everything here takes `GenerationRecord`s (or their JSON parts) and returns plain values, so the
rules (which turns a conversation has, how a tool call is printed, what colour a logprob gets,
where re-sent history diverged from the sampled tokens) are unit-tested without a kernel.
Fields that other parts of localoai may or may not write yet (`reasoning_content`, `reasoning`
output items, a trace's `policy_versions`, `group_id`) are read when present and skipped when not.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from localoai.store.records import GenerationRecord

ENDPOINTS: dict[str, str] = {
    "chat.completion": "chat",
    "response": "responses",
    "response.compaction": "compact",
    "text_completion": "completions",
    "embedding": "embeddings",
    "generate": "generate",
    "message": "messages",
}
"""Record kind -> the short endpoint name the list shows."""

STATUS_MARKS: dict[str, str] = {
    "completed": "✓",
    "failed": "✗",
    "incomplete": "…",
    "cancelled": "⊘",
    "in_progress": "▶",
}


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: str
    """Pretty-printed JSON when the arguments parse, else the raw string as the model wrote it."""
    call_id: str | None = None


@dataclass
class Turn:
    """One step of a conversation as the model saw or produced it."""

    role: str  # system, user, assistant, tool, prompt (a text completion's prompt)
    text: str = ""
    reasoning: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    tool_call_id: str | None = None
    generated: bool = False
    """True for the turn this record's model call produced (not re-sent history)."""


@dataclass(frozen=True)
class Summary:
    """One row of the list: what is needed to find a record, without its tokens."""

    id: str
    kind: str
    status: str
    model: str
    created_at: float
    policy_version: int
    episode_id: str | None
    tools: tuple[str, ...]
    preview: str
    group_id: str | None = None


# -- tool calls and reasoning --------------------------------------------------------------


def pretty_arguments(arguments: Any) -> str:
    """Tool-call arguments as indented JSON; a string that is not JSON is shown as written."""
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except ValueError:
            return arguments
    return json.dumps(arguments, indent=2, ensure_ascii=False, sort_keys=False)


def chat_tool_calls(message: Mapping[str, Any]) -> list[ToolCall]:
    calls = []
    for call in message.get("tool_calls") or []:
        function = call.get("function") or {}
        calls.append(ToolCall(str(function.get("name", "")), pretty_arguments(function.get("arguments", "")),
                              call.get("id")))
    return calls


def content_text(content: Any) -> str:
    """The text of a message's `content`: a string, or the text of its parts (chat and Responses shapes)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    parts = []
    for part in content:
        if isinstance(part, str):
            parts.append(part)
        elif isinstance(part, Mapping):
            text = part.get("text", part.get("refusal"))
            parts.append(str(text) if text is not None else f"[{part.get('type', 'part')}]")
    return "".join(parts)


def reasoning_text(item: Mapping[str, Any]) -> str:
    """A Responses `reasoning` item's text: its content parts, else its summary parts."""
    for key in ("content", "summary"):
        text = content_text(item.get(key))
        if text:
            return text
    return ""


# -- conversations -------------------------------------------------------------------------


def conversation(record: GenerationRecord) -> list[Turn]:
    """The record's conversation turn by turn: the history it was sent, then what it generated."""
    if record.kind == "chat.completion":
        return _chat_turns(record)
    if record.kind == "response":
        return _response_turns(record)
    if record.kind == "message":
        return _message_turns(record)
    turns = [Turn("prompt", record.prompt_text or content_text(record.request.get("prompt")))]
    turns += [Turn("assistant", sample.get("text", ""), generated=True) for sample in record.completions]
    return turns


def _chat_turns(record: GenerationRecord) -> list[Turn]:
    turns = [_chat_message_turn(message) for message in record.request.get("messages") or []]
    choices = (record.output or {}).get("choices") or []
    for choice in choices[:1] or [{}]:  # the first choice; `n > 1` samples are in the token view
        message = choice.get("message")
        if message is None:  # a failed generation keeps no message: fall back to the trace's text
            text = record.completions[0].get("text", "") if record.completions else ""
            if text or record.status != "failed":
                turns.append(Turn("assistant", text, generated=True))
            continue
        turn = _chat_message_turn(message)
        turn.generated = True
        turns.append(turn)
    return turns


def _chat_message_turn(message: Mapping[str, Any]) -> Turn:
    return Turn(
        role=str(message.get("role", "?")),
        text=content_text(message.get("content")),
        reasoning=str(message.get("reasoning_content") or message.get("reasoning") or ""),
        tool_calls=chat_tool_calls(message),
        tool_call_id=message.get("tool_call_id"),
    )


def _response_turns(record: GenerationRecord) -> list[Turn]:
    request = record.request
    turns: list[Turn] = []
    if request.get("instructions"):
        turns.append(Turn("system", str(request["instructions"])))
    items = request.get("input_items")
    if items is None:
        given = request.get("input")
        items = [{"type": "message", "role": "user", "content": given}] if isinstance(given, str) else given or []
    turns += _response_item_turns(items, generated=False)
    turns += _response_item_turns((record.output or {}).get("output") or [], generated=True)
    return turns


def _response_item_turns(items: Iterable[Mapping[str, Any]], *, generated: bool) -> list[Turn]:
    """Responses items as turns; consecutive assistant items (reasoning, text, calls) become one turn."""
    turns: list[Turn] = []

    def assistant() -> Turn:
        if not turns or turns[-1].role != "assistant" or turns[-1].generated != generated:
            turns.append(Turn("assistant", generated=generated))
        return turns[-1]

    for item in items:
        kind = item.get("type", "message")
        if kind == "message":
            role = str(item.get("role", "user"))
            text = content_text(item.get("content"))
            if role == "assistant":
                turn = assistant()
                turn.text += text
            else:
                turns.append(Turn(role, text))
        elif kind == "function_call":
            call = ToolCall(str(item.get("name", "")), pretty_arguments(item.get("arguments", "")), item.get("call_id"))
            assistant().tool_calls.append(call)
        elif kind == "function_call_output":
            turns.append(Turn("tool", content_text(item.get("output")), tool_call_id=item.get("call_id")))
        elif kind == "reasoning":
            assistant().reasoning += reasoning_text(item)
        else:
            turns.append(Turn(str(item.get("role", kind)), json.dumps(item, ensure_ascii=False)))
    return turns


def _message_turns(record: GenerationRecord) -> list[Turn]:
    """An Anthropic Messages record: `system`, then each message's blocks, then the generated `message`."""
    system = record.request.get("system")
    turns = [Turn("system", content_text(system))] if system else []
    generated = {"role": "assistant", **(record.output or {}), "generated": True}
    messages = [*(record.request.get("messages") or []), generated]
    for message in messages:
        content = message.get("content") or []
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
        turn = Turn(str(message.get("role", "?")), generated=bool(message.get("generated")))
        for block in blocks:
            kind = block.get("type")
            if kind == "tool_result":
                turns.append(Turn("tool", content_text(block.get("content")), tool_call_id=block.get("tool_use_id")))
            elif kind == "tool_use":
                turn.tool_calls.append(ToolCall(str(block.get("name", "")), pretty_arguments(block.get("input", {})),
                                                block.get("id")))
            elif kind == "thinking":
                turn.reasoning += str(block.get("thinking", ""))
            else:
                turn.text += str(block.get("text", f"[{kind}]"))
        if turn.text or turn.reasoning or turn.tool_calls or turn.generated:
            turns.append(turn)
    return turns


def tool_names(record: GenerationRecord) -> tuple[str, ...]:
    """The tools the model called in this generation, in order, without repeats."""
    names: list[str] = []
    for turn in conversation(record):
        if turn.generated:
            names += [call.name for call in turn.tool_calls if call.name not in names]
    return tuple(names)


def group_id(record: GenerationRecord) -> str | None:
    return record.group_id


def preview(record: GenerationRecord, width: int = 80) -> str:
    """A one-line gist for the list: the last user or tool input, then what the model answered."""
    turns = conversation(record)
    asked = next((t.text for t in reversed(turns) if not t.generated and t.role in ("user", "tool", "prompt")), "")
    answered = next((t for t in turns if t.generated), None)
    said = ""
    if answered is not None:
        said = answered.text or " ".join(f"{c.name}(…)" for c in answered.tool_calls)
    if record.status == "failed" and record.error:
        said = f"error: {record.error.get('message', '')}"
    line = f"{asked} → {said}" if asked else said
    return shorten(line, width)


def shorten(text: str, width: int) -> str:
    line = " ".join(text.split())
    return line if len(line) <= width else line[: width - 1] + "…"


def summarize(record: GenerationRecord) -> Summary:
    return Summary(
        id=record.id,
        kind=record.kind,
        status=record.status,
        model=record.model,
        created_at=float(record.created_at),
        policy_version=int(record.policy_version),
        episode_id=record.episode_id,
        tools=tool_names(record),
        preview=preview(record),
        group_id=group_id(record),
    )


def row_label(row: Summary) -> str:
    """The list's text for one record (a `Select` option label: plain text)."""
    import time

    when = time.strftime("%H:%M:%S", time.localtime(row.created_at))
    tools = ",".join(row.tools)
    parts = [STATUS_MARKS.get(row.status, "?"), when, ENDPOINTS.get(row.kind, row.kind), shorten(row.model, 20),
             f"v{row.policy_version}"]
    if row.episode_id:
        parts.append(f"ep {shorten(row.episode_id, 14)}")
    if tools:
        parts.append(f"[{tools}]")
    parts.append(row.preview)
    return "  ".join(parts)
