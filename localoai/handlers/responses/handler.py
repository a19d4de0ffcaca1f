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
`POST /v1/responses/compact`: see `compaction`.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from openai.types.responses import Response, ResponseStreamEvent
from openai.types.responses.input_token_count_response import InputTokenCountResponse

from localoai.chat_template import render_chat
from localoai.constraints.requests import constrain_response
from localoai.engine.params import SamplingParams
from localoai.episodes.routing import EpisodeRef
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


class Responses:
    def __init__(self, model: LoadedModel, services: Services) -> None:
        self.model, self.services = model, services
        self.inputs = ResponseInputs(model, services)
        self.background = BackgroundResponses(self._events)
        self.compactions = Compactions(model, services, self.inputs)

    async def prepare(self, request: ResponseCreateRequest, episode: EpisodeRef | None = None) -> PreparedResponse:
        """Every check that can fail, before any generation starts."""
        model, services = self.model, self.services
        model.check_model(request.model)
        rendered = await self.inputs.render(request, room=request.max_output_tokens or 1)
        items, prompt = rendered.items, rendered.prompt
        offered = self.inputs.offered(request)
        tools = chat_tools(offered.tools)
        messages = chat_messages(request.instructions, rendered.shown, services.hosted_tools.result)
        prompt, turn = await services.off_loop(
            services.episodes.attach,
            episode, messages, prompt, lambda history: render_chat(
                model.tokenizer, history, tools=tools, add_generation_prompt=False,
                template_kwargs=request.chat_template_kwargs, policy=model.template_policy).text,
            context=[[tool.model_dump(mode="json") for tool in tools or []], request.chat_template_kwargs])
        budget = token_budget(model, len(prompt.token_ids), request.max_output_tokens, param="max_output_tokens")
        params = SamplingParams(
            max_tokens=budget,
            temperature=float(request.temperature if request.temperature is not None else 1.0),
            top_p=float(request.top_p if request.top_p is not None else 1.0),
            logprobs=(request.top_logprobs or 0) if OUTPUT_LOGPROBS in (request.include or []) else None,
        )
        names = [offered_name(tool) for tool in offered.tools]
        parser = model.output_parser(prompt.text, names or None)
        params = model.decoded_for(parser, params)  # the parser must see its markup
        params = await services.off_loop(constrain_response, model, request, offered.tools, parser, params)
        if offered.not_offered:
            logger.warning("hosted tools %s not offered to the model: no implementation is registered "
                           "(start(hosted_tools=...))", ", ".join(offered.not_offered))
        return PreparedResponse(request, items, prompt, params, offered, parser, rendered.new_items_from, turn)

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
