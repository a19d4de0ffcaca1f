"""Responses: resolve the input (replaying `previous_response_id`), render it, then produce the
Responses stream events; `input_tokens` counts the same rendering.

When function tools are offered (and `tool_choice` is not "none"), the model's text runs through
the served model's tool-call parser, as on chat completions: content goes to `message` items, each
parsed call becomes a `function_call` item (`call_id` is the parser's `call_...` id), and markup
that does not parse stays in the content, its reason kept in the sample's trace
(`tool_parse_error`).

The streamed and the non-streamed answers come from the same event iterator: a non-streamed
request returns the response its terminal event carries (`final_response`), so the two can
never disagree. Every response is recorded (kind "response"), its resolved input items with it,
so that a chain of any length can be replayed from the store.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from openai.types.responses import FunctionTool, Response, ResponseStreamEvent
from openai.types.responses.input_token_count_response import InputTokenCountResponse
from openai.types.shared import Reasoning

from localoai.chat_template import RenderedPrompt, render_chat
from localoai.engine.params import SampleDelta, SamplingParams
from localoai.errors import NotFoundError, ServerError
from localoai.handlers.common import Generation, new_id, token_budget
from localoai.handlers.recording import record_generation
from localoai.handlers.response_events import ResponseEvents, final_response, usage
from localoai.handlers.response_items import chat_messages, chat_tools, stored_items
from localoai.parsers.tool_calls import StreamDelta, ToolCallStream, ToolParser
from localoai.protocol.responses import InputTokensRequest, ResponseCreateRequest, ResponseInputFields
from localoai.served import ServedModel

KIND = "response"
FAILED = "The model failed while generating this response."


@dataclass(frozen=True)
class PreparedResponse:
    """A validated request with its resolved input items, rendered to token ids, ready to generate."""

    request: ResponseCreateRequest
    items: list[dict[str, Any]]
    prompt: RenderedPrompt
    params: SamplingParams
    tool_parser: ToolParser | None = None
    """Set when function tools are offered (and not `tool_choice: none`) and the model's format is known."""


def previous_not_found(response_id: str) -> NotFoundError:
    return NotFoundError(f"Previous response with id '{response_id}' not found.", param="previous_response_id",
                         code="previous_response_not_found")


class Responses:
    def __init__(self, served: ServedModel) -> None:
        self.served = served

    async def prepare(self, request: ResponseCreateRequest) -> PreparedResponse:
        """Every check that can fail, before any generation starts."""
        self.served.check_model(request.model)
        items, prompt = await self._render(request)
        budget = token_budget(self.served, len(prompt.token_ids), request.max_output_tokens,
                              param="max_output_tokens")
        params = SamplingParams(
            max_tokens=budget,
            temperature=float(request.temperature if request.temperature is not None else 1.0),
            top_p=float(request.top_p if request.top_p is not None else 1.0),
        )
        offered = request.tools if request.tool_choice != "none" else None
        parser = self.served.tool_parser([tool.name for tool in offered]) if offered else None
        return PreparedResponse(request, items, prompt, params, parser)

    async def count_input_tokens(self, request: InputTokensRequest) -> InputTokenCountResponse:
        self.served.check_model(request.model)
        _, prompt = await self._render(request)
        return InputTokenCountResponse(object="response.input_tokens", input_tokens=len(prompt.token_ids))

    async def _render(self, request: ResponseInputFields) -> tuple[list[dict[str, Any]], RenderedPrompt]:
        earlier = await self._replay(request.previous_response_id) if request.previous_response_id else []
        items = earlier + stored_items(request.input)
        prompt = render_chat(
            self.served.tokenizer,
            chat_messages(request.instructions, items),  # instructions are never carried over
            tools=chat_tools(request.tools) if request.tool_choice != "none" else None,
            template_kwargs=request.chat_template_kwargs,
        )
        return items, prompt

    async def _replay(self, response_id: str) -> list[dict[str, Any]]:
        """A stored response's full input (its own chain included) followed by its output."""
        record = await asyncio.to_thread(self.served.store.get, response_id)
        if record is None or record.kind != KIND or not record.store_visible:
            raise previous_not_found(response_id)
        return [*record.request.get("input_items", []), *record.output.get("output", [])]

    async def create(self, prepared: PreparedResponse) -> Response:
        events = [event async for event in self.events(prepared)]
        if events[-1].type == "response.failed":
            raise ServerError(FAILED)
        return final_response(events)

    async def events(self, prepared: PreparedResponse) -> AsyncIterator[ResponseStreamEvent]:
        """The response as OpenAI streams it; a failure after the first event is `response.failed`."""
        served = self.served
        build = ResponseEvents(settings=self._settings(prepared))
        calls = prepared.tool_parser.stream() if prepared.tool_parser else None
        generation: Generation | None = None
        recorded = False
        try:
            yield build.created()
            yield build.in_progress()
            try:
                async with Generation.running(served, prepared.prompt.token_ids, prepared.params) as generation:
                    async for item in generation:
                        if isinstance(item, list):
                            for delta in item:
                                for event in _shaped(build, calls, delta):
                                    yield event
            except ServerError:  # the engine failed; its cause is in the record and the log
                recorded = True
                failed = build.failed(FAILED)
                await asyncio.wrap_future(self._record(prepared, build, generation, failed.response))
                yield failed
                return
            sample = generation.samples[0]
            if calls is not None:
                for event in _parsed(build, calls.finish()):  # nothing left if the last delta ended it
                    yield event
                sample.tool_parse_error = calls.error
            closing = build.finished(
                usage(len(prepared.prompt.token_ids), len(sample.token_ids)),
                incomplete=sample.finish_reason != "stop",  # "length" (or the engine's "abort")
            )
            recorded = True
            await asyncio.wrap_future(self._record(prepared, build, generation, closing[-1].response))
            for event in closing:
                yield event
        finally:
            if not recorded:  # cancelled: recorded as it stands, without waiting
                self._record(prepared, build, generation, build.snapshot("cancelled"))

    def _settings(self, prepared: PreparedResponse) -> dict[str, Any]:
        """The `Response` fields echoed from the request, with OpenAI's defaults."""
        request = prepared.request
        return {
            "id": new_id("resp_"),
            "object": "response",
            "created_at": int(time.time()),
            "model": self.served.name,
            "background": False,
            "error": None,
            "incomplete_details": None,
            "instructions": request.instructions,
            "max_output_tokens": request.max_output_tokens,
            "max_tool_calls": request.max_tool_calls,
            "metadata": request.metadata or {},
            "parallel_tool_calls": request.parallel_tool_calls is not False,
            "previous_response_id": request.previous_response_id,
            "prompt_cache_key": request.prompt_cache_key,
            "reasoning": Reasoning(effort=None, summary=None),
            "safety_identifier": request.safety_identifier,
            "service_tier": "default",
            "store": request.store is not False,
            "temperature": float(prepared.params.temperature),
            "text": {"format": {"type": "text"}, "verbosity": "medium"},
            "tool_choice": request.tool_choice or "auto",
            "tools": [FunctionTool.model_validate(tool.model_dump()) for tool in request.tools or []],
            "top_logprobs": 0,
            "top_p": float(prepared.params.top_p),
            "truncation": request.truncation or "disabled",
            "usage": None,
            "user": request.user,
        }

    def _record(
        self, prepared: PreparedResponse, build: ResponseEvents, generation: Generation | None, response: Response,
    ) -> Future[bool]:
        request = prepared.request
        return record_generation(
            self.served,
            record_id=build.settings["id"],
            kind=KIND,
            created=build.settings["created_at"],
            request=request,
            prompt_text=prepared.prompt.text,
            prompt_token_ids=prepared.prompt.token_ids,
            generation=generation,
            output=response,
            metadata=request.metadata,
            visible=request.store is not False,
            previous_response_id=request.previous_response_id,
            input_items=prepared.items,
        )


def _shaped(build: ResponseEvents, calls: ToolCallStream | None, delta: SampleDelta) -> list[ResponseStreamEvent]:
    """The events for one step of the sample: its text as content, or through the tool-call parser."""
    if calls is None:
        return build.text_delta(delta.text) if delta.text else []
    parsed = calls.feed(delta.text) if delta.text else []
    if delta.finish_reason is not None:
        parsed += calls.finish()
    return _parsed(build, parsed)


def _parsed(build: ResponseEvents, parsed: list[StreamDelta]) -> list[ResponseStreamEvent]:
    events: list[ResponseStreamEvent] = []
    for piece in parsed:
        if piece.index is not None:
            events += build.call_delta(piece)
        elif piece.content:
            events += build.text_delta(piece.content)
    return events
