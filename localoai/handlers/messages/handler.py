"""Anthropic's Messages API on the chat handler: translate, generate, shape into `message` blocks.

The request is translated into a chat completion request (`message_content.chat_request`) and
prepared, generated and recorded by `ChatCompletions`; its steps (reasoning, content, tool-call
deltas) are shaped here into Anthropic's content blocks by one `BlockFold`. Streamed, the fold's
events go out as they come; not streamed, the fold's blocks are the `message`. One shaping, so the
two agree. Records are of kind `message`, holding the Anthropic request and `message` object.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from anthropic.types import (
    InputJSONDelta,
    Message,
    MessageDeltaUsage,
    MessageTokensCount,
    RawContentBlockDeltaEvent,
    RawContentBlockStartEvent,
    RawContentBlockStopEvent,
    RawMessageDeltaEvent,
    RawMessageStartEvent,
    RawMessageStopEvent,
    SignatureDelta,
    TextBlock,
    TextDelta,
    ThinkingBlock,
    ThinkingDelta,
    ToolUseBlock,
    Usage,
)
from anthropic.types.raw_message_delta_event import Delta
from openai.types.chat import ChatCompletionTokenLogprob
from pydantic import BaseModel

from localoai.chat_template import render_chat
from localoai.episodes.routing import EpisodeRef
from localoai.engine.params import TokenLogprob
from localoai.handlers.chat.handler import ChatCompletions, PreparedChat
from localoai.handlers.chat.shaping import ChoiceFold, ChoiceStep
from localoai.handlers.common import new_id
from localoai.handlers.messages.content import ThinkingSigner, chat_request
from localoai.handlers.recording import RecordFields
from localoai.handlers.run import folded
from localoai.protocol.messages import CountTokensRequest, MessageCreateRequest, ThinkingAdaptive, ThinkingEnabled
from localoai.served import LoadedModel, Services

STOP_REASONS = {"length": "max_tokens", "tool_calls": "tool_use", "stop": "end_turn"}


class Ping(BaseModel):
    """Anthropic's keep-alive event (the SDK has no type for it; its stream reader skips it)."""

    type: str = "ping"


@dataclass(frozen=True)
class PreparedMessage(PreparedChat):
    message: MessageCreateRequest | None = None
    """The Anthropic request (the record keeps it; `request` is its chat translation)."""


@dataclass
class _Block:
    kind: str  # thinking, text, tool_use
    text: list[str] = field(default_factory=list)
    id: str = ""
    name: str = ""


class BlockFold(ChoiceFold):
    """Chat steps -> Anthropic content blocks, and the stream events that build them."""

    def __init__(self, header: dict[str, Any], prepared: PreparedMessage, signer: ThinkingSigner,
                 logprob: Callable[[TokenLogprob], ChatCompletionTokenLogprob]) -> None:
        super().__init__(header, None, logprob)
        self.blocks: list[_Block] = []
        self.open = False
        self.events: list[BaseModel] = []
        self.stop: tuple[str, str | None] | None = None
        self._signer = signer
        self._prompt_tokens = len(prepared.prompt.token_ids)
        request = prepared.message
        thinking = request.thinking if request is not None else None
        self._show_thinking = not (isinstance(thinking, (ThinkingEnabled, ThinkingAdaptive))
                                   and thinking.display == "omitted")

    def add(self, steps: list[ChoiceStep]) -> list[ChoiceStep]:
        super().add(steps)
        for step in steps:  # one choice: Messages has no `n`
            if step.reasoning:
                self._delta("thinking", step.reasoning)
            if step.content:
                self._delta("text", step.content)
            for call in step.calls or []:
                function = call.get("function", {})
                if "id" in call:
                    self._start(_Block("tool_use", id="toolu_" + call["id"].removeprefix("call_"),
                                       name=function.get("name", "")))
                if function.get("arguments"):
                    self._delta("tool_use", function["arguments"])
            if step.finish_reason is not None:
                self._close()
                matched = step.stop_reason if isinstance(step.stop_reason, str) else None
                reason = "stop_sequence" if step.finish_reason == "stop" and matched else \
                    STOP_REASONS[step.finish_reason]
                self.stop = (reason, matched if reason == "stop_sequence" else None)
        return steps

    def take(self) -> list[BaseModel]:
        events, self.events = self.events, []
        return events

    def _start(self, block: _Block) -> None:
        self._close()
        self.blocks.append(block)
        self.open = True
        self.events.append(RawContentBlockStartEvent(type="content_block_start", index=len(self.blocks) - 1,
                                                     content_block=self._content(block, started=True)))

    def _delta(self, kind: str, text: str) -> None:
        if not (self.open and self.blocks[-1].kind == kind):
            self._start(_Block(kind))
        self.blocks[-1].text.append(text)
        index = len(self.blocks) - 1
        if kind == "text":
            delta: Any = TextDelta(type="text_delta", text=text)
        elif kind == "tool_use":
            delta = InputJSONDelta(type="input_json_delta", partial_json=text)
        elif self._show_thinking:
            delta = ThinkingDelta(type="thinking_delta", thinking=text)
        else:
            return
        self.events.append(RawContentBlockDeltaEvent(type="content_block_delta", index=index, delta=delta))

    def _close(self) -> None:
        if not self.open:
            return
        self.open = False
        index = len(self.blocks) - 1
        if self.blocks[-1].kind == "thinking":
            signature = self._signer.sign("".join(self.blocks[-1].text))
            self.events.append(RawContentBlockDeltaEvent(type="content_block_delta", index=index,
                                                         delta=SignatureDelta(type="signature_delta",
                                                                              signature=signature)))
        self.events.append(RawContentBlockStopEvent(type="content_block_stop", index=index))

    def _content(self, block: _Block, *, started: bool = False) -> Any:
        text = "" if started else "".join(block.text)
        if block.kind == "text":
            return TextBlock(type="text", text=text, citations=None)
        if block.kind == "thinking":
            return ThinkingBlock(type="thinking", thinking=text if self._show_thinking else "",
                                 signature="" if started else self._signer.sign(text))
        arguments: Any = {}
        if text:
            try:
                arguments = json.loads(text)
            except ValueError:
                arguments = {}  # unparsable markup: the trace keeps the text and the parser's error
        return ToolUseBlock(type="tool_use", id=block.id, name=block.name, input=arguments)

    def message_usage(self, *, final: bool) -> Usage:
        output = self.usage.completion_tokens if final and self.usage is not None else 0
        return Usage(input_tokens=self._prompt_tokens, output_tokens=output,
                     cache_creation_input_tokens=0, cache_read_input_tokens=0)

    def result(self) -> Message:  # type: ignore[override]  # the fold's answer is the message
        return self.message()

    def message(self, *, final: bool = True) -> Message:
        reason, sequence = self.stop if final and self.stop else (None, None)
        if final and reason is None:
            reason = "max_tokens"  # cut short: failed or cancelled before its end
        return Message(id=self.header["id"], type="message", role="assistant", model=self.header["model"],
                       content=[self._content(block) for block in self.blocks] if final else [],
                       stop_reason=reason, stop_sequence=sequence, usage=self.message_usage(final=final))


class Messages:
    """`POST /v1/messages` and `/v1/messages/count_tokens` for one served model."""

    def __init__(self, model: LoadedModel, services: Services) -> None:
        self.model, self.services = model, services
        self.chat = _MessageChat(model, services, self)
        self.signer = ThinkingSigner()

    def _chat_request(self, request: MessageCreateRequest) -> Any:
        model = self.model
        template = getattr(model.tokenizer, "chat_template", None) or ""
        return chat_request(request, model.name, template, model.reasoning_format, self.signer)

    def prepare(self, request: MessageCreateRequest, episode: EpisodeRef | None = None) -> PreparedMessage:
        """Every check that can fail, before any generation starts. Any model name is served by this
        server's model; `max_tokens` is bounded by what the context window leaves."""
        prepared = self.chat.prepare(self._chat_request(request), episode)
        params = dataclasses.replace(prepared.params, max_tokens=min(request.max_tokens, prepared.params.max_tokens))
        fields = {item.name: getattr(prepared, item.name) for item in dataclasses.fields(PreparedChat)}
        return PreparedMessage(**{**fields, "params": params}, message=request)

    def count_tokens(self, request: CountTokensRequest) -> MessageTokensCount:
        """The prompt's exact token count, rendered as a create would render it; nothing is generated."""
        chat = self._chat_request(request.as_create())
        tools = chat.tools if chat.tool_choice != "none" else None
        prompt = render_chat(self.model.tokenizer, chat.messages, tools=tools, reasoning_effort=chat.reasoning_effort,
                             effort_param="thinking", policy=self.model.template_policy)
        return MessageTokensCount(input_tokens=len(prompt.token_ids))

    async def create(self, prepared: PreparedMessage) -> Message:
        fold = self._fold(prepared)
        return await folded(self.chat._steps(prepared, fold, live=False), fold)

    async def events(self, prepared: PreparedMessage) -> AsyncIterator[BaseModel]:
        """Anthropic's stream: message_start, a ping, the blocks' events, message_delta, message_stop."""
        fold = self._fold(prepared)
        first = True
        async for _ in self.chat._steps(prepared, fold, live=True):
            if first:
                yield RawMessageStartEvent(type="message_start", message=fold.message(final=False))
                yield Ping(type="ping")
                first = False
            for event in fold.take():
                yield event
        final = fold.message()
        yield RawMessageDeltaEvent(
            type="message_delta", delta=Delta(stop_reason=final.stop_reason, stop_sequence=final.stop_sequence),
            usage=MessageDeltaUsage(input_tokens=final.usage.input_tokens, output_tokens=final.usage.output_tokens,
                                    cache_creation_input_tokens=0, cache_read_input_tokens=0))
        yield RawMessageStopEvent(type="message_stop")

    def _fold(self, prepared: PreparedMessage) -> BlockFold:
        header = {"id": new_id("msg_"), "created": int(time.time()), "model": self.model.name,
                  "system_fingerprint": self.model.fingerprint(self.services.policy_version)}
        return BlockFold(header, prepared, self.signer, self.chat._logprob)


class _MessageChat(ChatCompletions):
    """The chat handler, recording its generations as Anthropic messages (kind `message`)."""

    def __init__(self, model: LoadedModel, services: Services, messages: Messages) -> None:
        super().__init__(model, services)
        self._messages = messages

    def _record_fields(self, prepared: PreparedChat, fold: ChoiceFold) -> RecordFields:
        assert isinstance(prepared, PreparedMessage) and prepared.message is not None
        return RecordFields(model=self.model.name, record_id=fold.header["id"], kind="message", created=fold.header["created"],
                            request=prepared.message, prompt_text=prepared.prompt.text,
                            prompt_token_ids=prepared.prompt.token_ids, episode=prepared.episode)
