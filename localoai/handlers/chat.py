"""Chat completions: validate and render, then produce `ChatCompletionChunk`s.

The streamed and the non-streamed answers come from the same chunk iterator: a
non-streamed request is the fold of its chunks (`ChunkFold`), so the
two can never disagree.

The model's text runs through the request's output parser (`ServedModel.output_parser`), when it
has one: reasoning goes to `delta.reasoning_content` (vLLM's and DeepSeek's field; the SDK keeps
it as an extra field of the message), tool calls to `delta.tool_calls`, the rest to `content`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from openai.types import CompletionUsage
from openai.types.completion_usage import CompletionTokensDetails
from openai.types.chat import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionMessage,
    ChatCompletionMessageFunctionToolCall,
    ChatCompletionTokenLogprob,
)
from openai.types.chat.chat_completion_message_function_tool_call import Function
from openai.types.chat import chat_completion as completion_types
from openai.types.chat import chat_completion_chunk as chunk_types
from openai.types.chat.chat_completion_token_logprob import TopLogprob

from localoai.chat_template import RenderedPrompt, render_chat
from localoai.constraints.requests import constrain_chat
from localoai.engine.params import SampleDelta, SamplingParams, TokenLogprob
from localoai.episodes.ledger import EpisodeTurn
from localoai.episodes.routing import EpisodeRef
from localoai.handlers.common import Generation, new_id, sampling_params, token_budget, token_logprob
from localoai.handlers.recording import record_generation
from localoai.parsers.reasoning import OutputParser, OutputStream, ReasoningDelta
from localoai.protocol.chat import ChatCompletionRequest
from localoai.served import ServedModel


@dataclass(frozen=True)
class PreparedChat:
    """A validated request, rendered to token ids, ready to generate."""

    request: ChatCompletionRequest
    prompt: RenderedPrompt
    params: SamplingParams
    output_parser: OutputParser | None = None
    """Reasoning and tool calls (when tools are offered and not `tool_choice: none`) out of the text;
    None when the model has neither format (or no tools were offered): the text is the content."""
    episode: EpisodeTurn | None = None


class ChatCompletions:
    def __init__(self, served: ServedModel) -> None:
        self.served = served

    def prepare(self, request: ChatCompletionRequest, episode: EpisodeRef | None = None) -> PreparedChat:
        """Every check that can fail, before any generation starts."""
        served = self.served
        served.check_model(request.model)
        tools = request.tools if request.tool_choice != "none" else None
        prompt = render_chat(
            served.tokenizer,
            request.messages,
            tools=tools,
            add_generation_prompt=request.add_generation_prompt,
            continue_final_message=request.continue_final_message,
            template_kwargs=request.chat_template_kwargs,
            reasoning_effort=request.reasoning_effort,
        )
        prompt, turn = served.episodes.attach(
            episode, request.messages, prompt,
            lambda history: render_chat(served.tokenizer, history, tools=tools, add_generation_prompt=False,
                                        template_kwargs=request.chat_template_kwargs).text,
            context=[[tool.model_dump(mode="json") for tool in tools or []], request.chat_template_kwargs])
        budget = token_budget(
            served,
            len(prompt.token_ids),
            request.max_new_tokens,
            param="max_completion_tokens" if request.max_completion_tokens is not None else "max_tokens",
        )
        logprobs = (request.top_logprobs or 0) if request.logprobs else None
        offered = request.tools if request.tool_choice != "none" else None
        parser = served.output_parser(prompt.text, [tool.function.name for tool in offered] if offered else None)
        params = sampling_params(served, request, max_tokens=budget, logprobs=logprobs)
        if parser is not None and parser.needs_special_tokens:  # the parser reads the markup
            params = dataclasses.replace(params, skip_special_tokens=False)
        params = constrain_chat(served, request, parser.tool_parser if parser else None, params)
        return PreparedChat(request, prompt, params, parser, turn)

    async def create(self, prepared: PreparedChat) -> ChatCompletion:
        fold = ChunkFold()
        async for chunk in self.chunks(prepared, include_usage=True):
            fold.add(chunk)
        return fold.result()

    async def chunks(self, prepared: PreparedChat, *, include_usage: bool) -> AsyncIterator[ChatCompletionChunk]:
        """The response as OpenAI streams it: a role chunk per choice, content deltas, usage last."""
        request, served = prepared.request, self.served
        with_ids = bool(request.return_token_ids)
        header: dict[str, Any] = {
            "id": new_id("chatcmpl-"),
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": served.name,
            "system_fingerprint": served.system_fingerprint,
        }
        if request.service_tier is not None:
            header["service_tier"] = "default"
        if include_usage:
            header["usage"] = None

        def chunk(choices: list[chunk_types.Choice], **extra: Any) -> ChatCompletionChunk:
            return ChatCompletionChunk(**header, choices=choices, **extra)

        first_extra = {"prompt_token_ids": prepared.prompt.token_ids} if with_ids else {}
        opening = chunk(
            [
                chunk_types.Choice(
                    index=i, delta=chunk_types.ChoiceDelta(role="assistant", content=""), logprobs=None,
                    finish_reason=None, **({"token_ids": []} if with_ids else {}),
                )
                for i in range(prepared.params.n)
            ],
            **first_extra,
        )
        sent = ChunkFold()
        sent.add(opening)
        generation: Generation | None = None
        recorded = False
        tool_calls = [_Output(prepared.output_parser.stream()) for _ in range(prepared.params.n)] \
            if prepared.output_parser else None
        try:
            async with Generation.running(served, prepared.prompt.token_ids, prepared.params) as generation:
                yield opening  # after submitting: the prefill runs while the role chunk goes out
                async for item in generation:
                    if not isinstance(item, list):
                        continue
                    choices = [
                        choice
                        for delta in item
                        if (choice := self._choice(delta, with_ids=with_ids, logprobs=request.logprobs,
                                                   tool_calls=tool_calls[delta.index] if tool_calls else None))
                    ]
                    if choices:
                        yield sent.add(chunk(choices))
            for sample, calls in zip(generation.samples, tool_calls or []):
                sample.tool_parse_error = calls.stream.error
                sample.reasoning = "".join(calls.reasoning) or None
            prompt_tokens = len(prepared.prompt.token_ids)
            completion_tokens = sum(len(sample.token_ids) for sample in generation.samples)
            details = {"completion_tokens_details": CompletionTokensDetails(
                reasoning_tokens=sum(output.reasoning_tokens for output in tool_calls))
            } if served.reasoning_format is not None and tool_calls else {}
            usage = CompletionUsage(
                prompt_tokens=prompt_tokens,
                completion_tokens=completion_tokens,
                total_tokens=prompt_tokens + completion_tokens,
                **details,
            )
            last = sent.add(ChatCompletionChunk(**{**header, "usage": usage}, choices=[]))
            recorded = True
            # Shielded: a disconnect during the wait must not cancel the write itself.
            await asyncio.shield(asyncio.wrap_future(self._record(prepared, header, generation, sent)))
            if include_usage:
                yield last
        finally:
            if not recorded:  # failed or cancelled: recorded as it stands, without waiting
                self._record(prepared, header, generation, sent)

    def _record(
        self, prepared: PreparedChat, header: dict[str, Any], generation: Generation | None,
        sent: ChunkFold,
    ) -> Future[bool]:
        return record_generation(
            self.served,
            record_id=header["id"],
            kind="chat.completion",
            created=header["created"],
            request=prepared.request,
            prompt_text=prepared.prompt.text,
            prompt_token_ids=prepared.prompt.token_ids,
            generation=generation,
            output=sent.result(),
            metadata=prepared.request.metadata,
            visible=bool(prepared.request.store),
            episode=prepared.episode,
        )

    def _choice(
        self, delta: SampleDelta, *, with_ids: bool, logprobs: bool | None, tool_calls: _Output | None
    ) -> chunk_types.Choice | None:
        """The chunk choice for one sample's step; None when it has nothing to say."""
        content: str | None = delta.text
        reasoning = ""
        calls: list[chunk_types.ChoiceDeltaToolCall] | None = None
        finish = _finish_reason(delta)
        if tool_calls is not None:
            reasoning, content, calls = tool_calls.shape(delta.text, finished=delta.finish_reason is not None,
                                                         tokens=len(delta.token_ids))
            if finish == "stop" and tool_calls.called:
                finish = "tool_calls"
        if not (content or reasoning or calls or finish or with_ids or logprobs):
            return None
        extra: dict[str, Any] = {"token_ids": delta.token_ids} if with_ids else {}
        if delta.finish_reason is not None:
            extra["stop_reason"] = delta.stop_reason
        return chunk_types.Choice(
            index=delta.index,
            delta=chunk_types.ChoiceDelta(content=content or None, tool_calls=calls,
                                          **({"reasoning_content": reasoning} if reasoning else {}))
            if content or calls or reasoning
            else chunk_types.ChoiceDelta(),
            logprobs=chunk_types.ChoiceLogprobs(content=[self._logprob(e) for e in delta.logprobs], refusal=None)
            if logprobs
            else None,
            finish_reason=finish,
            **extra,
        )

    def _logprob(self, entry: TokenLogprob) -> ChatCompletionTokenLogprob:
        fields = token_logprob(self.served, entry)
        top = [TopLogprob(**alternative) for alternative in fields.pop("top_logprobs")]
        return ChatCompletionTokenLogprob(**fields, top_logprobs=top)


class _Output:
    """One sample's output stream: text in, OpenAI's reasoning, content and tool-call deltas out."""

    def __init__(self, stream: OutputStream) -> None:
        self.stream = stream
        self.called = False
        self.reasoning: list[str] = []
        self.reasoning_tokens = 0

    def shape(
        self, text: str, *, finished: bool, tokens: int
    ) -> tuple[str, str, list[chunk_types.ChoiceDeltaToolCall] | None]:
        """(reasoning, content, tool-call deltas) of one step of `tokens` tokens."""
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
        calls = [chunk_types.ChoiceDeltaToolCall(**call) for call in merged.values()]
        self.called = self.called or bool(calls)
        return reasoning, content, calls or None


def _finish_reason(delta: SampleDelta) -> Any:
    # "abort" is the engine's; OpenAI's enum has no such value, and an aborted sample ends by length.
    return None if delta.finish_reason is None else ("length" if delta.finish_reason == "abort" else delta.finish_reason)


class ChunkFold:
    """Folds a chunk stream, one chunk at a time, into the `ChatCompletion` a non-streamed request
    returns. Folding as the chunks go by, rather than keeping them to fold at the end, lets each
    chunk (a dozen objects) die young: kept to the end of a long generation, they pile up in the
    garbage collector's oldest generation and trigger its full collections, which stall every
    thread, the engine's included."""

    def __init__(self) -> None:
        self._first: ChatCompletionChunk | None = None
        self._texts: dict[int, list[str]] = {}
        self._reasoning: dict[int, list[str]] = {}
        self._logprobs: dict[int, list[ChatCompletionTokenLogprob] | None] = {}
        self._token_ids: dict[int, list[int]] = {}
        self._finish: dict[int, Any] = {}
        self._stop_reasons: dict[int, Any] = {}
        self._calls: dict[int, dict[int, dict[str, Any]]] = {}
        self._usage: CompletionUsage | None = None

    def add(self, chunk: ChatCompletionChunk) -> ChatCompletionChunk:
        """Fold one chunk in; return it."""
        self._first = self._first or chunk
        self._usage = chunk.usage or self._usage
        for choice in chunk.choices:
            self._texts.setdefault(choice.index, []).append(choice.delta.content or "")
            extra_fields = choice.delta.model_extra or {}
            self._reasoning.setdefault(choice.index, []).append(extra_fields.get("reasoning_content") or "")
            for call in choice.delta.tool_calls or []:
                merged = self._calls.setdefault(choice.index, {}).setdefault(call.index, {"arguments": []})
                merged.setdefault("id", call.id)
                if call.function is not None:
                    merged.setdefault("name", call.function.name)
                    merged["arguments"].append(call.function.arguments or "")
            self._logprobs.setdefault(choice.index, None)
            if choice.logprobs is not None:
                entries = self._logprobs[choice.index]
                if entries is None:
                    entries = self._logprobs[choice.index] = []
                entries.extend(choice.logprobs.content or [])
            extra = choice.model_extra or {}
            if "token_ids" in extra:
                self._token_ids.setdefault(choice.index, []).extend(extra["token_ids"])
            if choice.finish_reason is not None:
                self._finish[choice.index] = choice.finish_reason
                self._stop_reasons[choice.index] = extra.get("stop_reason")
        return chunk

    def result(self) -> ChatCompletion:
        """The `ChatCompletion` of the chunks folded so far (at least one)."""
        first = self._first
        assert first is not None, "no chunk to fold"
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
                    logprobs=completion_types.ChoiceLogprobs(content=list(logprobs), refusal=None)
                    if logprobs is not None
                    else None,
                    **extra,
                )
            )
        header = first.model_dump(include={"id", "created", "model", "system_fingerprint", "service_tier"},
                                  exclude_unset=True)
        top_extra = {k: v for k, v in (first.model_extra or {}).items() if k == "prompt_token_ids"}
        return ChatCompletion(**header, object="chat.completion", choices=choices, usage=self._usage, **top_extra)

