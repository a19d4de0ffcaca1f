"""Render OpenAI chat messages through the tokenizer's own chat template.

Messages are converted to the plain-dict shape Hugging Face templates expect (text
parts joined, `developer` as `system`, tool-call arguments as objects) and rendered with
`apply_chat_template`, which supplies `bos_token`/`eos_token` and the template's special
tokens. The prompt ids are the template text tokenized without extra special tokens,
exactly as `apply_chat_template(..., tokenize=True)` produces them.

Reasoning goes both ways through the template. An earlier assistant turn's reasoning is passed as
`reasoning_content` (what Qwen3's template reads) and as `thinking` (gpt-oss's), and the template
decides whether to show it. A requested reasoning effort becomes the template's own switch
(`effort_template_kwargs`): gpt-oss templates take `reasoning_effort` ("low" / "medium" / "high")
as it is; templates with Qwen3's `enable_thinking` get `enable_thinking=False` for "none" and
"minimal" and `True` for any other effort; a template with neither has no way to honour an
effort, so asking for one is a 400 naming the field.

A client cannot replace the template: `chat_template` in `chat_template_kwargs` is refused unless
the server was started with `allow_client_chat_template=True` (a template is code: it can run for
as long and take as much memory as it likes). A rendered prompt longer in characters than the
context could hold in tokens is refused before it is tokenized (`TemplatePolicy.max_prompt_chars`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from localoai.errors import InvalidRequestError, UnsupportedFieldError
from localoai.protocol.chat import FunctionTool, Message, TextPart


@dataclass(frozen=True)
class TemplatePolicy:
    """What a server lets a request do to rendering (`LoadedModel.template_policy`)."""

    allow_client_chat_template: bool = False
    max_prompt_chars: int | None = None
    """Above this many characters a prompt cannot fit the context whatever its tokens: refused untokenized."""


DEFAULT_POLICY = TemplatePolicy()


def check_prompt_chars(text: str, policy: TemplatePolicy, *, param: str) -> None:
    if policy.max_prompt_chars is not None and len(text) > policy.max_prompt_chars:
        raise InvalidRequestError(
            f"Invalid value for '{param}': the prompt is {len(text)} characters long, more than this model's "
            f"context could hold whatever its tokens ({policy.max_prompt_chars} characters).",
            param=param, code="context_length_exceeded")


@dataclass(frozen=True)
class RenderedPrompt:
    text: str
    token_ids: list[int]


def _text(content: str | Sequence[Any] | None) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    return "\n".join(part.text if isinstance(part, TextPart) else part.refusal for part in content)


def _arguments(arguments: str) -> Any:
    try:
        return json.loads(arguments)
    except ValueError:
        return arguments


def template_messages(messages: Sequence[Message]) -> list[dict[str, Any]]:
    """OpenAI message models -> the dicts chat templates are written for."""
    rendered: list[dict[str, Any]] = []
    for message in messages:
        role = "system" if message.role == "developer" else message.role
        entry: dict[str, Any] = {"role": role, "content": _text(getattr(message, "content", None))}
        if message.role == "assistant":
            if message.tool_calls:
                entry["tool_calls"] = [
                    {
                        "id": call.id,
                        "type": "function",
                        "function": {"name": call.function.name, "arguments": _arguments(call.function.arguments)},
                    }
                    for call in message.tool_calls
                ]
            if message.reasoning_content is not None:
                entry["reasoning_content"] = message.reasoning_content
                entry["thinking"] = message.reasoning_content
        if message.role == "tool":
            entry["tool_call_id"] = message.tool_call_id
        if getattr(message, "name", None):
            entry["name"] = message.name
        rendered.append(entry)
    return rendered


def render_chat(
    tokenizer: Any,
    messages: Sequence[Message],
    *,
    tools: Sequence[FunctionTool] | None = None,
    add_generation_prompt: bool = True,
    continue_final_message: bool = False,
    template_kwargs: dict[str, Any] | None = None,
    reasoning_effort: str | None = None,
    effort_param: str = "reasoning_effort",
    policy: TemplatePolicy = DEFAULT_POLICY,
) -> RenderedPrompt:
    """`reasoning_effort` (named `effort_param` in errors) is mapped onto the template's thinking
    switch, see `effort_template_kwargs`. Blocking: run it off the event loop (`Services.off_loop`)."""
    if getattr(tokenizer, "chat_template", None) is None:
        raise InvalidRequestError(
            "This model's tokenizer has no chat template; use /v1/completions or pass a tokenizer with one.",
            param="messages",
        )
    from jinja2 import TemplateError

    if "chat_template" in (template_kwargs or {}) and not policy.allow_client_chat_template:
        raise UnsupportedFieldError(
            "Unsupported value for 'chat_template_kwargs.chat_template': this server renders with its model's own "
            "chat template (start it with allow_client_chat_template=True to let clients replace it).",
            param="chat_template_kwargs.chat_template")
    kwargs = effort_template_kwargs(tokenizer.chat_template, reasoning_effort, template_kwargs, param=effort_param)
    try:
        text = tokenizer.apply_chat_template(
            template_messages(messages),
            tools=[tool.model_dump(exclude_none=True) for tool in tools] if tools else None,
            add_generation_prompt=add_generation_prompt,
            continue_final_message=continue_final_message,
            tokenize=False,
            **kwargs,
        )
    except TemplateError as exc:
        # The template's own `raise_exception` messages are written for the caller.
        raise InvalidRequestError(f"The chat template rejected the messages: {exc}", param="messages") from None
    except (TypeError, ValueError, ArithmeticError, LookupError, AttributeError, RecursionError) as exc:
        raise InvalidRequestError(f"Could not render the messages with the chat template: {exc}",
                                  param="messages") from None
    _check_nothing_dropped(messages, text)
    check_prompt_chars(text, policy, param="messages")
    token_ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return RenderedPrompt(text=text, token_ids=list(token_ids))


def _check_nothing_dropped(messages: Sequence[Message], text: str) -> None:
    """A template that has no place for a message (Phi-3.5 has no `tool` role) drops it silently;
    the model would then answer a conversation the caller did not send. User and tool content is
    never legitimately rewritten by a template, so its absence from the prompt is a refusal."""
    for index, message in enumerate(messages):
        if message.role in ("user", "tool"):
            content = _text(message.content).strip()
            # gpt-oss's template writes tool results as JSON strings (`| tojson`): escaped, still there.
            if content and content not in text and json.dumps(content, ensure_ascii=False)[1:-1] not in text:
                raise InvalidRequestError(
                    f"This model's chat template does not render messages[{index}] (role '{message.role}'): "
                    "its content would be silently dropped from the prompt.",
                    param=f"messages[{index}]",
                    code="unsupported_by_chat_template",
                )


GPT_OSS_EFFORTS = ("low", "medium", "high")
THINKING_OFF_EFFORTS = ("none", "minimal")


def effort_template_kwargs(
    chat_template: str, effort: str | None, template_kwargs: dict[str, Any] | None, *, param: str
) -> dict[str, Any]:
    """The template kwargs with a reasoning effort mapped onto the template's thinking switch. An
    explicit `chat_template_kwargs` value that contradicts the effort is a 400, not a silent winner."""
    kwargs = dict(template_kwargs or {})
    if effort is None:
        return kwargs
    if "reasoning_effort" in chat_template:
        if effort not in GPT_OSS_EFFORTS:
            raise InvalidRequestError(
                f"Invalid value for '{param}': this model's chat template takes a reasoning effort of "
                f"{', '.join(GPT_OSS_EFFORTS)} (got {effort!r}).", param=param, code="invalid_value")
        key, value = "reasoning_effort", effort
    elif "enable_thinking" in chat_template:
        key, value = "enable_thinking", effort not in THINKING_OFF_EFFORTS
    else:
        raise UnsupportedFieldError(
            f"Unsupported value for '{param}': this model's chat template has no reasoning switch "
            "(neither 'enable_thinking' nor 'reasoning_effort'), so a reasoning effort cannot be honoured.",
            param=param)
    if key in kwargs and kwargs[key] != value:
        raise InvalidRequestError(
            f"Invalid value for '{param}': {effort!r} sets the chat template's '{key}' to {value!r}, but "
            f"chat_template_kwargs sets it to {kwargs[key]!r}.", param=param, code="invalid_value")
    kwargs[key] = value
    return kwargs
