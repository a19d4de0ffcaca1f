"""Anthropic Messages content -> the chat messages the template renders (and back, for the ledger).

A Messages request is translated into a `ChatCompletionRequest`, so that rendering, tool and
reasoning parsing, constrained decoding, generation and recording are the chat handler's own:
`system` becomes the first system message, `tool_use` blocks an assistant's `tool_calls`,
`tool_result` blocks `tool` messages, `thinking` blocks the assistant's `reasoning_content`.

Thinking signatures (`ThinkingSigner`): the text itself, base64, with an HMAC under a per-server
secret. A client that received the thinking omitted (`display: "omitted"`) still sends back what
the model thought, and a thinking block this server did not issue is refused rather than rendered.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
from typing import Any

from anthropic.types import Message

from localoai.errors import InvalidRequestError, UnsupportedFieldError
from localoai.protocol.chat import (
    AssistantMessage,
    ChatCompletionRequest,
    FunctionDefinition,
    FunctionTool,
    NamedToolChoice,
    SystemMessage,
    ToolMessage,
    UserMessage,
)
from localoai.protocol.messages import (
    MessageCreateRequest,
    MessageParam,
    RedactedThinkingBlock,
    TextBlock,
    ThinkingAdaptive,
    ThinkingBlock,
    ThinkingDisabled,
    ThinkingEnabled,
    ToolChoiceAny,
    ToolChoiceNone,
    ToolChoiceTool,
    ToolResultBlock,
    ToolUseBlock,
)

SIGNATURE_PREFIX = "localoai1."


class ThinkingSigner:
    """Signs the thinking this server issues, and reads it back from a signature."""

    def __init__(self, secret: bytes | None = None) -> None:
        self._secret = secret or secrets.token_bytes(32)

    def sign(self, thinking: str) -> str:
        data = thinking.encode()
        mac = hmac.new(self._secret, data, hashlib.sha256).hexdigest()[:32]
        return f"{SIGNATURE_PREFIX}{base64.urlsafe_b64encode(data).decode()}.{mac}"

    def read(self, signature: str, *, param: str) -> str:
        """The thinking a signature carries; a 400 when this server did not issue it."""
        try:
            body, mac = signature.removeprefix(SIGNATURE_PREFIX).rsplit(".", 1)
            data = base64.urlsafe_b64decode(body.encode())
        except (ValueError, binascii.Error):
            data, mac = b"", ""
        expected = hmac.new(self._secret, data, hashlib.sha256).hexdigest()[:32]
        if not signature.startswith(SIGNATURE_PREFIX) or not hmac.compare_digest(mac, expected):
            raise InvalidRequestError(
                f"Invalid `signature` in `thinking` block ({param}): this server did not issue it (thinking from "
                "another server or an earlier run of this one cannot be verified).", param=param)
        return data.decode()


def _text(blocks: str | list[TextBlock] | None) -> str:
    if blocks is None or isinstance(blocks, str):
        return blocks or ""
    return "\n".join(block.text for block in blocks if block.text)


def chat_messages(request: MessageCreateRequest, signer: ThinkingSigner) -> list[Any]:
    """The conversation as chat messages: system first, each block where the template reads it."""
    messages: list[Any] = []
    system = _text(request.system)
    if system:
        messages.append(SystemMessage(role="system", content=system))
    for index, message in enumerate(request.messages):
        messages.extend(_translate(message, f"messages[{index}]", signer))
    if not any(message.role in ("user", "assistant") for message in messages):
        raise InvalidRequestError("messages: at least one message is required", param="messages")
    return messages


def _translate(message: MessageParam, param: str, signer: ThinkingSigner) -> list[Any]:
    blocks = [TextBlock(type="text", text=message.content)] if isinstance(message.content, str) else message.content
    if message.role == "system":
        return [SystemMessage(role="system", content=_text([b for b in blocks if isinstance(b, TextBlock)]))]
    if message.role == "assistant":
        text, reasoning, calls = [], [], []
        for number, block in enumerate(blocks):
            where = f"{param}.content[{number}]"
            if isinstance(block, TextBlock):
                text.append(block.text)
            elif isinstance(block, ThinkingBlock):
                reasoning.append(signer.read(block.signature, param=f"{where}.signature"))
            elif isinstance(block, ToolUseBlock):
                calls.append({"id": block.id, "type": "function",
                              "function": {"name": block.name, "arguments": json.dumps(block.input)}})
            elif isinstance(block, RedactedThinkingBlock):
                raise UnsupportedFieldError(
                    f"Unsupported value for '{where}': redacted_thinking blocks are encrypted by Anthropic's servers "
                    "and cannot be read here (this server never issues them).", param=where)
            else:
                raise InvalidRequestError(f"'{where}': a {block.type} block cannot be in an assistant message",
                                          param=where)
        return [AssistantMessage.model_validate({
            "role": "assistant", "content": "".join(text) or None, "tool_calls": calls or None,
            "reasoning_content": "".join(reasoning) or None})]
    out: list[Any] = []
    text = []
    for number, block in enumerate(blocks):
        where = f"{param}.content[{number}]"
        if isinstance(block, ToolResultBlock):
            content = _text(block.content)
            out.append(ToolMessage(role="tool", tool_call_id=block.tool_use_id,
                                   content=f"Error: {content}" if block.is_error else content))
        elif isinstance(block, TextBlock):
            if block.text:  # empty text blocks say nothing
                text.append(block.text)
        else:
            raise InvalidRequestError(f"'{where}': a {block.type} block cannot be in a user message", param=where)
    if text:
        out.append(UserMessage(role="user", content="\n".join(text)))
    return out


def _reasoning_effort(request: MessageCreateRequest, template: str, reasoning_format: str | None) -> str | None:
    """`thinking` onto the template's thinking switch: on for enabled/adaptive, off for disabled, the
    template's default when absent. Without a switch, adaptive and disabled leave it to the model
    (as does enabled for a model that always reasons); enabled on a model that cannot think is refused."""
    thinking = request.thinking
    effort = request.output_config.effort if request.output_config is not None else None
    switch = "enable_thinking" in template or "reasoning_effort" in template
    on = {"xhigh": "high", "max": "high"}.get(effort or "", effort or "medium")
    if isinstance(thinking, ThinkingEnabled) and not switch and reasoning_format is None:
        raise UnsupportedFieldError("Unsupported value for 'thinking': this model neither reasons nor has a thinking "
                                    "switch in its chat template.", param="thinking")
    if isinstance(thinking, (ThinkingEnabled, ThinkingAdaptive)) and switch:
        return on
    if isinstance(thinking, ThinkingDisabled) and "enable_thinking" in template:
        return "none"
    return None


def chat_request(request: MessageCreateRequest, served_name: str, template: str, reasoning_format: str | None,
                 signer: ThinkingSigner) -> ChatCompletionRequest:
    """The chat completion request that generates this message (validated here, so built unchecked).
    `max_tokens` is left to the caller (clamped to the context window)."""
    choice = request.tool_choice
    tools = [FunctionTool(type="function", function=FunctionDefinition.model_construct(
        name=tool.name, description=tool.description, parameters=tool.input_schema,
        strict=tool.strict)) for tool in request.tools or [] if not tool.defer_loading]
    if isinstance(choice, ToolChoiceNone):
        tool_choice: Any = "none"
    elif isinstance(choice, ToolChoiceAny):
        tool_choice = "required"
    elif isinstance(choice, ToolChoiceTool):
        tool_choice = NamedToolChoice.model_validate({"type": "function", "function": {"name": choice.name}})
    else:
        tool_choice = "auto" if tools else None
    parallel = None if choice is None or isinstance(choice, ToolChoiceNone) else \
        (False if choice.disable_parallel_tool_use else None)
    return ChatCompletionRequest.model_construct(
        model=served_name,
        messages=chat_messages(request, signer),
        tools=tools or None,
        tool_choice=tool_choice,
        parallel_tool_calls=parallel,
        temperature=request.temperature,
        top_p=request.top_p,
        top_k=request.top_k,
        stop=list(request.stop_sequences) if request.stop_sequences else None,
        reasoning_effort=_reasoning_effort(request, template, reasoning_format),
        store=False,
    )


def answer_message(message: Message) -> AssistantMessage:
    """A `message` this server generated as the assistant turn a later request re-sends (for the
    episode ledger): the thinking is read from its signature, which is how the client sends it back."""
    blocks = [block.model_dump(mode="json", exclude_none=True) for block in message.content]
    param = MessageParam.model_validate({"role": "assistant", "content": blocks})
    return _translate(param, "content", _Unverified())[0]


class _Unverified(ThinkingSigner):
    def read(self, signature: str, *, param: str) -> str:
        try:
            body = signature.removeprefix(SIGNATURE_PREFIX).rsplit(".", 1)[0]
            return base64.urlsafe_b64decode(body.encode()).decode()
        except (ValueError, binascii.Error):
            return ""
