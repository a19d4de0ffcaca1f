"""Chat's shaping: the model's text through the output parser (`Output`), one choice's part of a
step (`ChoiceStep`), and the fold of the steps into the `ChatCompletion` (`ChoiceFold`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from openai.types import CompletionUsage
from openai.types.chat import ChatCompletion, ChatCompletionMessage, ChatCompletionMessageFunctionToolCall
from openai.types.chat import ChatCompletionTokenLogprob
from openai.types.chat import chat_completion as completion_types
from openai.types.chat.chat_completion_message_function_tool_call import Function

from localoai.engine.params import SampleDelta, TokenLogprob
from localoai.parsers.output import OutputStream, ReasoningDelta


class Output:
    """One sample's output stream: text in, OpenAI's reasoning, content and tool-call deltas out."""

    def __init__(self, stream: OutputStream) -> None:
        self.stream = stream
        self.called = False
        self.reasoning: list[str] = []
        self.reasoning_tokens = 0

    def shape(
        self, text: str, *, finished: bool, tokens: int
    ) -> tuple[str, str, list[dict[str, Any]] | None]:
        """(reasoning, content, tool-call deltas as `ChoiceDeltaToolCall` fields) of one step of `tokens` tokens."""
        was_reasoning = self.stream.in_reasoning
        pieces = self.stream.feed(text) if text else []
        if finished:
            pieces += self.stream.finish()
        if was_reasoning or self.stream.in_reasoning:
            self.reasoning_tokens += tokens
        reasoning = "".join(piece.text for piece in pieces if isinstance(piece, ReasoningDelta))
        self.reasoning.append(reasoning)
        parsed = [piece for piece in pieces if not isinstance(piece, ReasoningDelta)]
        content = "".join(part.content for part in parsed if part.content)
        # One entry per call per chunk; fields a delta does not carry are left out, not null:
        # the SDK's accumulator would overwrite the call's id, type and name with a null.
        merged: dict[int, dict[str, Any]] = {}
        for part in parsed:
            if part.index is None:
                continue
            call = merged.setdefault(part.index, {"index": part.index, "function": {}})
            if part.id is not None:
                call.update(id=part.id, type="function")
            if part.name is not None:
                call["function"]["name"] = part.name
            if part.arguments is not None:
                call["function"]["arguments"] = call["function"].get("arguments", "") + part.arguments
        calls = list(merged.values())
        self.called = self.called or bool(calls)
        return reasoning, content, calls or None


def finish_reason(delta: SampleDelta) -> Any:
    # "abort" is the engine's; OpenAI's enum has no such value, and an aborted sample ends by length.
    return None if delta.finish_reason is None else ("length" if delta.finish_reason == "abort" else delta.finish_reason)


@dataclass
class ChoiceStep:
    """One choice's part of one step, shaped (reasoning, content, tool-call deltas) but not yet an
    OpenAI object: streamed, it becomes a chunk's choice; folded, a part of the message."""

    index: int
    content: str = ""
    reasoning: str = ""
    calls: list[dict[str, Any]] | None = None
    """`ChoiceDeltaToolCall` fields, one entry per call."""
    logprobs: list[TokenLogprob] | None = None
    """None when the request did not ask for logprobs."""
    token_ids: list[int] | None = None
    """None unless `return_token_ids`."""
    finish_reason: Any = None
    ended: bool = False
    stop_reason: str | int | None = None
    role: bool = False
    """The opening part: the role, empty content."""


class ChoiceFold:
    """Folds choice steps, as they go by, into the `ChatCompletion` a non-streamed request returns
    (and the record of a streamed one). Folding as they go, rather than keeping every step to fold
    at the end, lets each step die young: kept to the end of a long generation, they pile up in the
    garbage collector's oldest generation and trigger its full collections, which stall every
    thread, the engine's included."""

    def __init__(self, header: dict[str, Any], prompt_token_ids: list[int] | None,
                 logprob: Callable[[TokenLogprob], ChatCompletionTokenLogprob]) -> None:
        self.header = header
        self.usage: CompletionUsage | None = None
        self.prompt_logprobs: list[dict[str, Any] | None] | None = None
        """vLLM's `prompt_logprobs` (top level), when asked for."""
        self._prompt_token_ids = prompt_token_ids
        """Shown at the top level (`return_token_ids`); None when not asked for."""
        self._logprob = logprob
        self._texts: dict[int, list[str]] = {}
        self._reasoning: dict[int, list[str]] = {}
        self._logprobs: dict[int, list[TokenLogprob] | None] = {}
        self._token_ids: dict[int, list[int]] = {}
        self._finish: dict[int, Any] = {}
        self._stop_reasons: dict[int, Any] = {}
        self._calls: dict[int, dict[int, dict[str, Any]]] = {}
        self._result: ChatCompletion | None = None

    def add(self, steps: list[ChoiceStep]) -> list[ChoiceStep]:
        """Fold one step's parts in; return them."""
        self._result = None
        for step in steps:
            index = step.index
            self._texts.setdefault(index, []).append(step.content)
            self._reasoning.setdefault(index, []).append(step.reasoning)
            for call in step.calls or []:
                merged = self._calls.setdefault(index, {}).setdefault(call["index"], {"arguments": []})
                merged.setdefault("id", call.get("id"))
                function = call.get("function", {})
                merged.setdefault("name", function.get("name"))
                merged["arguments"].append(function.get("arguments") or "")
            self._logprobs.setdefault(index, None)
            if step.logprobs is not None:
                entries = self._logprobs[index]
                if entries is None:
                    entries = self._logprobs[index] = []
                entries.extend(step.logprobs)
            if step.token_ids is not None:
                self._token_ids.setdefault(index, []).extend(step.token_ids)
            if step.finish_reason is not None:
                self._finish[index] = step.finish_reason
                self._stop_reasons[index] = step.stop_reason
        return steps

    def result(self) -> ChatCompletion:
        """The `ChatCompletion` of the steps folded so far (at least the opening); built once for the
        record and the answer alike."""
        if self._result is None:
            self._result = self._build(self._logprob)
        return self._result

    def _build(self, logprob: Callable[[TokenLogprob], ChatCompletionTokenLogprob]) -> ChatCompletion:
        choices = []
        for index in sorted(self._texts):
            extra: dict[str, Any] = {"stop_reason": self._stop_reasons.get(index)}
            if index in self._token_ids:
                extra["token_ids"] = list(self._token_ids[index])
            tool_calls = [
                ChatCompletionMessageFunctionToolCall(
                    id=call["id"], type="function",
                    function=Function(name=call["name"], arguments="".join(call["arguments"])),
                )
                for _, call in sorted(self._calls.get(index, {}).items())
            ]
            content = "".join(self._texts[index])
            thought = "".join(self._reasoning[index])
            message = ChatCompletionMessage(role="assistant", content=content or (None if tool_calls else ""),
                                            refusal=None, **({"reasoning_content": thought} if thought else {}))
            if tool_calls:
                message.tool_calls = tool_calls
            logprobs = self._logprobs[index]
            choices.append(
                completion_types.Choice(
                    index=index,
                    message=message,
                    finish_reason=self._finish.get(index, "length"),
                    logprobs=completion_types.ChoiceLogprobs(content=[logprob(e) for e in logprobs], refusal=None)
                    if logprobs is not None
                    else None,
                    **extra,
                )
            )
        header = {key: self.header[key] for key in ("id", "created", "model", "system_fingerprint", "service_tier")
                  if key in self.header}
        top_extra: dict[str, Any] = {"prompt_token_ids": self._prompt_token_ids} \
            if self._prompt_token_ids is not None else {}
        if self.prompt_logprobs is not None:
            top_extra["prompt_logprobs"] = self.prompt_logprobs
        return ChatCompletion(**header, object="chat.completion", choices=choices, usage=self.usage, **top_extra)
