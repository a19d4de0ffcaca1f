"""Responses: resolve the input (`inputs`), render it, then produce the Responses stream events
(`stream`); `input_tokens` counts the same rendering.

When function tools are offered (and `tool_choice` is not "none"), the model's text runs through
the served model's tool-call parser, as on chat completions: content goes to `message` items, each
parsed call becomes a `function_call` item (`call_id` is the parser's `call_...` id; a call of a
tool the client executes, `custom` / `local_shell` / `shell` / `apply_patch`, becomes that tool's
own item type, see `client_tools`), and markup that does not parse stays in the content, its
reason kept in the sample's trace (`tool_parse_error`). The same output parser
(`LoadedModel.output_parser`) takes the model's reasoning out of the text into `reasoning` items
(`reasoning.effort` is mapped onto the chat template's thinking switch by `render_chat`).

The streamed and the non-streamed answers come from the same event stream: a non-streamed request
drains it through `ResponseFold` (the response its terminal event carries), so the two can never
disagree. Every response is recorded (kind "response"), its resolved input items with it, so that
a chain of any length can be replayed from the store. `background: true`: see `background`;
`POST /v1/responses/compact`: see `compaction`. With `context_management`, an input whose rendering
reaches the threshold is summarized first, in `prepare` (a compaction, recorded as such); the answer
goes on from the summary, whose `compaction` item is the output's first item.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import AsyncIterator
from typing import Any

from openai.types.responses import Response, ResponseStreamEvent
from openai.types.responses.input_token_count_response import InputTokenCountResponse
from openai.types.responses.response_compaction_item import ResponseCompactionItem

from localoai.chat_template import render_chat
from localoai.constraints.requests import constrain_response
from localoai.engine.params import SamplingParams
from localoai.episodes.routing import EpisodeRef
from localoai.errors import UnsupportedFieldError
from localoai.handlers.common import token_budget
from localoai.handlers.responses.background import BackgroundResponses
from localoai.handlers.responses.client_tools import client_tool_types
from localoai.handlers.responses.compaction import Compactions
from localoai.handlers.responses.events import ResponseEvents
from localoai.handlers.responses.inputs import PreparedResponse, ResponseInputs
from localoai.handlers.responses.items import chat_messages, chat_tools
from localoai.handlers.responses.settings import settings
from localoai.handlers.responses.stream import ResponseStream, response_events
from localoai.handlers.run import folded
from localoai.protocol.client_tools import offered_name
from localoai.protocol.responses import OUTPUT_LOGPROBS, InputTokensRequest, ResponseCreateRequest
from localoai.served import LoadedModel, Services

logger = logging.getLogger(__name__)


SUMMARY_SHARE = 4
"""A compaction inside a response (`context_management`) writes at most 1 / SUMMARY_SHARE of the
context window, so that the answer has room after it."""


class Responses:
    def __init__(self, model: LoadedModel, services: Services) -> None:
        self.model, self.services = model, services
        self.inputs = ResponseInputs(model, services)
        self.background = BackgroundResponses(self._events)
        self.compactions = Compactions(model, services, self.inputs)

    async def prepare(self, request: ResponseCreateRequest, episode: EpisodeRef | None = None, *,
                      compaction: bool = True) -> PreparedResponse:
        """Every check that can fail, before any generation starts (the context window's last: a
        compaction that `context_management` asks for is generated first; `compaction=False`: refused
        instead, for a render)."""
        model, services = self.model, self.services
        model.check_model(request.model)
        room = request.max_output_tokens or 1
        rendered = await self.inputs.render(request, room=room)
        offered = self.inputs.offered(request)
        tools = chat_tools(offered.tools)
        names = [offered_name(tool) for tool in offered.tools]
        # The parser reads the end of the rendering (the generation prompt): a compaction or a splice keeps it.
        parser = model.output_parser(rendered.prompt.text, names or None)
        params = SamplingParams(
            max_tokens=1,  # the budget is set once the prompt is final (below)
            temperature=float(request.temperature if request.temperature is not None else 1.0),
            top_p=float(request.top_p if request.top_p is not None else 1.0),
            logprobs=(request.top_logprobs or 0) if OUTPUT_LOGPROBS in (request.include or []) else None,
        )
        params = model.decoded_for(parser, params)  # the parser must see its markup
        params = await services.off_loop(constrain_response, model, request, offered.tools, parser, params)
        prompt, shown, made, continued = rendered.prompt, rendered.shown, None, None
        if self._compaction_due(request, len(prompt.token_ids)):
            if not compaction:
                raise UnsupportedFieldError(
                    "Unsupported value for 'context_management': the input reached its compaction threshold, "
                    "and a summary would be generated first; a rendered request cannot hold it.",
                    param="context_management")
            made = await self._compact(request, rendered.items, episode)
            continued = [*rendered.items, made.model_dump(mode="json", exclude_none=True)]
            prompt, shown = await self.inputs.render_items(request, continued, room=room)
        messages = chat_messages(request.instructions, shown, services.hosted_tools.result)
        prompt, turn = await services.off_loop(
            services.episodes.attach,
            episode, messages, prompt, lambda history: render_chat(
                model.tokenizer, history, tools=tools, add_generation_prompt=False,
                template_kwargs=request.chat_template_kwargs, policy=model.template_policy).text,
            context=[[tool.model_dump(mode="json") for tool in tools or []], request.chat_template_kwargs])
        budget = token_budget(model, len(prompt.token_ids), request.max_output_tokens, param="max_output_tokens")
        params = dataclasses.replace(params, max_tokens=budget)
        if offered.not_offered:
            logger.warning("hosted tools %s not offered to the model: no implementation is registered "
                           "(start(hosted_tools=...))", ", ".join(offered.not_offered))
        return PreparedResponse(request, rendered.items, prompt, params, offered, parser, rendered.new_items_from,
                                turn, continued=continued, compaction=made)

    def _compaction_due(self, request: ResponseCreateRequest, prompt_tokens: int) -> bool:
        """`context_management`: the input's rendering reached `compact_threshold` tokens (by default:
        it leaves no room for `max_output_tokens`)."""
        if not request.context_management:
            return False
        threshold = request.context_management[0].compact_threshold
        if threshold is not None:
            return prompt_tokens >= threshold
        return prompt_tokens + (request.max_output_tokens or 1) > self.model.context_length

    async def _compact(self, request: ResponseCreateRequest, items: list[dict[str, Any]],
                       episode: EpisodeRef | None) -> ResponseCompactionItem:
        """The summary of `items` a compacted response goes on from (recorded on its own, as a compaction)."""
        prepared = await self.compactions.summarizing(
            request, items, episode, instructions=request.instructions, template_kwargs=request.chat_template_kwargs,
            max_output_tokens=None, temperature=request.temperature, top_p=request.top_p,
            cap=self.model.context_length // SUMMARY_SHARE)
        compacted = await self.compactions.create(prepared)
        return next(item for item in compacted.output if isinstance(item, ResponseCompactionItem))

    async def count_input_tokens(self, request: InputTokensRequest) -> InputTokenCountResponse:
        self.model.check_model(request.model)
        rendered = await self.inputs.render(request)
        return InputTokenCountResponse(object="response.input_tokens", input_tokens=len(rendered.prompt.token_ids))

    async def create(self, prepared: PreparedResponse) -> Response:
        stream = self._stream(prepared, live=False)
        return await folded(self._events(stream), stream.fold)

    def events(self, prepared: PreparedResponse) -> AsyncIterator[ResponseStreamEvent]:
        """The response as OpenAI streams it; a failure after the first event is `response.failed`."""
        return self._events(self._stream(prepared))

    async def start_background(
        self, prepared: PreparedResponse, *, stream: bool = False,
    ) -> tuple[Response, AsyncIterator[ResponseStreamEvent] | None]:
        """See `BackgroundResponses.start`."""
        return await self.background.start(self._stream(prepared), sse=stream)

    def _stream(self, prepared: PreparedResponse, *, live: bool = True) -> ResponseStream:
        offered = prepared.offered
        client_tools = client_tool_types(offered.tools) if prepared.output_parser else {}
        build = ResponseEvents(settings=settings(self.model.name, prepared), client_tools=client_tools,
                               namespaced=offered.namespaced, hosted=offered.hosted)
        return ResponseStream(prepared, build, live=live).bind(self.services)

    def _events(self, stream: ResponseStream) -> AsyncIterator[ResponseStreamEvent]:
        return response_events(self.model, self.services, self.inputs, stream)
