"""Responses: resolve the input (replaying `previous_response_id`), render it, then produce the
Responses stream events; `input_tokens` counts the same rendering.

When function tools are offered (and `tool_choice` is not "none"), the model's text runs through
the served model's tool-call parser, as on chat completions: content goes to `message` items, each
parsed call becomes a `function_call` item (`call_id` is the parser's `call_...` id; a call of a
tool the client executes, `custom` / `local_shell` / `shell` / `apply_patch`, becomes that tool's
own item type, see `client_tools`), and markup
that does not parse stays in the content, its reason kept in the sample's trace
(`tool_parse_error`). The same output parser (`ServedModel.output_parser`) takes the model's
reasoning out of the text into `reasoning` items (`reasoning.effort` is mapped onto the chat
template's thinking switch by `render_chat`).

The streamed and the non-streamed answers come from the same event iterator: a non-streamed
request returns the response its terminal event carries (`final_response`), so the two can
never disagree. Every response is recorded (kind "response"), its resolved input items with it,
so that a chain of any length can be replayed from the store.

`background: true` runs the same event iterator in an asyncio task on the server loop (kept in
`Responses.background` by response id until it ends): the create call answers at once with the
`queued` response, recorded "in_progress" so that `GET /v1/responses/{id}` can poll it; the
task records it again as it starts and when it ends. `cancel` cancels the task, which leaves the
`Generation` block (the engine stops at its next decode step) and records the response
`cancelled`. A streamed background response sends the task's events; a client that goes away
stops reading them, not the task.

With `include: ["message.output_text.logprobs"]` the engine reports `top_logprobs` alternatives
and each text delta carries its tokens' logprobs (`common.token_logprob`, as chat shows them).
Tokens without text (a partial character) lend theirs to the next text, and so do tokens whose
text the output parser holds back; with a parser, a step's logprobs go with the content text of
that step only (reasoning and tool-call markup have none).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from concurrent.futures import Future
import dataclasses
from dataclasses import dataclass
from typing import Any

from openai.types.responses import Response, ResponseStreamEvent, Tool
from openai.types.responses.input_token_count_response import InputTokenCountResponse
from openai.types.shared import Reasoning
from pydantic import TypeAdapter

from localoai.chat_template import RenderedPrompt, render_chat
from localoai.constraints.requests import constrain_response
from localoai.engine.params import SampleDelta, SamplingParams
from localoai.episodes.ledger import EpisodeTurn
from localoai.episodes.routing import EpisodeRef
from localoai.errors import InvalidRequestError, NotFoundError, ServerError
from localoai.handlers.responses.client_tools import client_tool_types
from localoai.handlers.common import Generation, new_id, token_budget, token_logprob
from localoai.handlers.recording import record_generation, written
from localoai.handlers.stored import visible_record
from localoai.handlers.responses.events import ResponseEvents, final_response, usage
from localoai.handlers.responses.items import chat_messages, chat_tools, check_call_outputs, stored_items
from localoai.parsers.reasoning import OutputParser, OutputPiece, OutputStream, ReasoningDelta
from localoai.protocol.client_tools import offered_name
from localoai.protocol.hosted_tools import HostedTool
from localoai.protocol.offered_tools import OfferedTools, offered_tools
from localoai.protocol.responses import (
    OUTPUT_LOGPROBS,
    InputTokensRequest,
    ResponseCreateRequest,
    ResponseInputFields,
)
from localoai.served import ServedModel
from localoai.store.conversations import ConversationNotFound
from localoai.store.records import RecordStatus

logger = logging.getLogger(__name__)

KIND = "response"
MAX_HOSTED_ROUNDS = 8
"""Rounds of hosted tool calls (`start(hosted_tools=...)`) one response may run before it ends."""
_TOOL: TypeAdapter[Tool] = TypeAdapter(Tool)
FAILED = "The model failed while generating this response."


@dataclass(frozen=True)
class PreparedResponse:
    """A validated request with its resolved input items, rendered to token ids, ready to generate."""

    request: ResponseCreateRequest
    items: list[dict[str, Any]]
    prompt: RenderedPrompt
    params: SamplingParams
    offered: OfferedTools
    output_parser: OutputParser | None = None
    """Reasoning and tool calls (when function tools are offered and not `tool_choice: none`) out of
    the text; None when the model has neither format (or no tools were offered)."""
    new_items_from: int = 0
    """Where this request's own items start in `items` (before: the replayed chain or conversation)."""
    episode: EpisodeTurn | None = None
    continued: list[dict[str, Any]] | None = None
    """After a round of hosted tool calls: `items` then the earlier rounds' output, which `prompt` renders."""


@dataclass
class _Run:
    """One response as it is generated: its event builder and, once submitted, its generation."""

    prepared: PreparedResponse
    build: ResponseEvents
    generation: Generation | None = None
    live: bool = True
    """False when nobody reads an event before the last (see `Generation`)."""
    cancelled_write: Future[bool] | None = None
    """The write of the `cancelled` record, when the run was cancelled."""

    @property
    def id(self) -> str:
        return str(self.build.settings["id"])


@dataclass
class _Background:
    run: _Run
    task: asyncio.Task[None]


def previous_not_found(response_id: str) -> NotFoundError:
    return NotFoundError(f"Previous response with id '{response_id}' not found.", param="previous_response_id",
                         code="previous_response_not_found")


class Responses:
    def __init__(self, served: ServedModel) -> None:
        self.served = served
        self.background: dict[str, _Background] = {}
        """Background responses still running, by response id; each removes itself when it ends."""

    async def prepare(self, request: ResponseCreateRequest, episode: EpisodeRef | None = None) -> PreparedResponse:
        """Every check that can fail, before any generation starts."""
        self.served.check_model(request.model)
        items, prompt, new_from = await self._render(request)
        offered = self._offered(request)
        tools = chat_tools(offered.tools)
        messages = chat_messages(request.instructions, items, self.served.hosted_tools.result)
        prompt, turn = await self.served.off_loop(
            self.served.episodes.attach,
            episode, messages, prompt, lambda history: render_chat(
                self.served.tokenizer, history, tools=tools, add_generation_prompt=False,
                template_kwargs=request.chat_template_kwargs, policy=self.served.template_policy).text,
            context=[[tool.model_dump(mode="json") for tool in tools or []], request.chat_template_kwargs])
        budget = token_budget(self.served, len(prompt.token_ids), request.max_output_tokens,
                              param="max_output_tokens")
        params = SamplingParams(
            max_tokens=budget,
            temperature=float(request.temperature if request.temperature is not None else 1.0),
            top_p=float(request.top_p if request.top_p is not None else 1.0),
            logprobs=(request.top_logprobs or 0) if OUTPUT_LOGPROBS in (request.include or []) else None,
        )
        names = [offered_name(tool) for tool in offered.tools]
        parser = self.served.output_parser(prompt.text, names or None)
        params = self.served.decoded_for(parser, params)  # the parser must see its markup
        params = constrain_response(self.served, request, offered.tools, parser, params)
        if offered.not_offered:
            logger.warning("hosted tools %s not offered to the model: no implementation is registered "
                           "(start(hosted_tools=...))", ", ".join(offered.not_offered))
        return PreparedResponse(request, items, prompt, params, offered, parser, new_from, turn)

    def _offered(self, request: ResponseInputFields) -> OfferedTools:
        return offered_tools(request, self.served.hosted_tools.definitions())

    async def count_input_tokens(self, request: InputTokensRequest) -> InputTokenCountResponse:
        self.served.check_model(request.model)
        _, prompt, _ = await self._render(request)
        return InputTokenCountResponse(object="response.input_tokens", input_tokens=len(prompt.token_ids))

    async def _render(self, request: ResponseInputFields) -> tuple[list[dict[str, Any]], RenderedPrompt, int]:
        """The full item list (what came before, then this request's items), its rendering, and
        where this request's items start."""
        if request.conversation_id is not None:
            earlier = await self._conversation(request.conversation_id)
        else:
            earlier = await self._replay(request.previous_response_id) if request.previous_response_id else []
        new = stored_items(request.input)
        if request.conversation_id is not None:
            taken = {item.get("id") for item in earlier}
            for index, item in enumerate(new):
                if item.get("id") in taken:  # refused now: appending after generation must not fail
                    raise InvalidRequestError(f"The conversation already has an item with id '{item['id']}'.",
                                              param=f"input[{index}].id")
        items = earlier + new
        check_call_outputs(items, len(earlier))
        prompt = await self.served.off_loop(
            render_chat,
            self.served.tokenizer,
            chat_messages(request.instructions, items, self.served.hosted_tools.result),  # never carried over
            tools=chat_tools(self._offered(request).tools),
            template_kwargs=request.chat_template_kwargs,
            reasoning_effort=request.reasoning.effort if request.reasoning is not None else None,
            effort_param="reasoning.effort",
            policy=self.served.template_policy,
        )
        return items, prompt, len(earlier)

    async def _conversation(self, conversation_id: str) -> list[dict[str, Any]]:
        try:
            return await asyncio.to_thread(self.served.conversations.items, conversation_id)
        except ConversationNotFound:
            raise NotFoundError(f"Conversation with id '{conversation_id}' not found.", param="conversation",
                                code="not_found") from None

    async def _append_to_conversation(self, run: _Run, response: Response) -> None:
        """A finished response's own input items and its output join its conversation."""
        prepared = run.prepared
        conversation_id = prepared.request.conversation_id
        if conversation_id is None:
            return
        output = [item.model_dump(mode="json", exclude_none=True) for item in response.output]
        try:
            await asyncio.to_thread(self.served.conversations.add_items, conversation_id,
                                    prepared.items[prepared.new_items_from :] + output)
        except Exception:  # noqa: BLE001 - the response stands; the log says why the conversation did not grow
            logger.exception("could not append response %s to conversation %s", run.id, conversation_id)

    async def _replay(self, response_id: str) -> list[dict[str, Any]]:
        """A stored response's full input (its own chain included) followed by its output."""
        record = await visible_record(self.served, response_id, KIND)
        if record is None:
            raise previous_not_found(response_id)
        if record.status == "in_progress":
            raise InvalidRequestError(f"Previous response with id '{response_id}' is still in progress.",
                                      param="previous_response_id")
        return [*record.request.get("input_items", []), *record.output.get("output", [])]

    async def create(self, prepared: PreparedResponse) -> Response:
        events = [event async for event in self._stream(self._run(prepared, live=False))]
        if events[-1].type == "response.failed":
            raise ServerError(FAILED)
        return final_response(events)

    def events(self, prepared: PreparedResponse) -> AsyncIterator[ResponseStreamEvent]:
        """The response as OpenAI streams it; a failure after the first event is `response.failed`."""
        return self._stream(self._run(prepared))

    def _run(self, prepared: PreparedResponse, *, live: bool = True) -> _Run:
        offered = prepared.offered
        client_tools = client_tool_types(offered.tools) if prepared.output_parser else {}
        build = ResponseEvents(settings=self._settings(prepared), client_tools=client_tools,
                               namespaced=offered.namespaced, hosted=offered.hosted)
        return _Run(prepared, build, live=live)

    # -- background ------------------------------------------------------------------------

    async def start_background(
        self, prepared: PreparedResponse, *, stream: bool = False,
    ) -> tuple[Response, AsyncIterator[ResponseStreamEvent] | None]:
        """Start a background response: the `queued` response (recorded before this returns, so
        it can be polled), and with `stream` the events of the task as it runs."""
        run = self._run(prepared)
        queued = run.build.response("queued", [])
        write = self._record(run, queued, status="in_progress")  # written before any of the task's
        sink: asyncio.Queue[ResponseStreamEvent | None] | None = asyncio.Queue() if stream else None
        task = asyncio.create_task(self._background(run, sink), name=f"response {run.id}")
        self.background[run.id] = _Background(run, task)  # registered before a cancel can see the record
        await written(write)
        return queued, (_drained(sink) if sink is not None else None)

    async def _background(self, run: _Run, sink: asyncio.Queue[ResponseStreamEvent | None] | None) -> None:
        try:
            async for event in self._stream(run):
                if event.type == "response.in_progress":  # pollers see it start
                    self._record(run, event.response, status="in_progress")  # type: ignore[union-attr]
                if sink is not None:
                    sink.put_nowait(event)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - a task's failure has no caller to go to; it is recorded
            logger.exception("background response %s failed", run.id)
        finally:
            self.background.pop(run.id, None)
            if sink is not None:
                sink.put_nowait(None)

    async def cancel(self, response_id: str) -> None:
        """Stop a background response running here (no-op otherwise): its task is cancelled, the
        engine stops at its next decode step, and the `cancelled` record is written before this
        returns. What the client gets back is the stored response (see `StoredResponses.cancel`)."""
        running = self.background.get(response_id)
        if running is None or running.task.done():
            return
        running.task.cancel()
        await asyncio.wait({running.task})
        if running.run.cancelled_write is not None:
            await written(running.run.cancelled_write, required=False)

    async def cancel_all(self) -> None:
        """Cancel every background response still running: the server is stopping, and a record
        left `in_progress` would never end. Each is recorded `cancelled` before this returns."""
        for response_id in list(self.background):
            await self.cancel(response_id)

    async def finished(self, response_id: str) -> None:
        """Wait until a background response running here has ended and its record is written (at
        once when none runs). Cancelling the waiter leaves the response running."""
        running = self.background.get(response_id)
        if running is None:
            return
        await asyncio.wait({running.task})
        if running.run.cancelled_write is not None:
            await written(running.run.cancelled_write, required=False)

    # -- the event stream ------------------------------------------------------------------

    async def _stream(self, run: _Run) -> AsyncIterator[ResponseStreamEvent]:
        served, build = self.served, run.build
        with_logprobs = run.prepared.params.logprobs is not None
        pending: list[dict[str, Any]] = []  # logprobs of tokens whose text has not been sent yet
        counts = [0, 0, 0, 0]  # prompt, output, reasoning and cached prompt tokens, over every round
        recorded = False
        try:
            yield build.created("queued" if build.settings["background"] else "in_progress")
            yield build.in_progress()
            for hosted_round in range(MAX_HOSTED_ROUNDS + 1):
                prepared, first_item = run.prepared, len(build.items)
                calls = prepared.output_parser.stream() if prepared.output_parser else None
                try:
                    async with Generation.running(served, prepared.prompt.token_ids, prepared.params,
                                                  live=run.live) as generation:
                        run.generation = generation
                        async for item in generation:
                            if isinstance(item, list):
                                for delta in item:
                                    if with_logprobs:
                                        pending += [token_logprob(served, entry) for entry in delta.logprobs]
                                    was_reasoning = calls is not None and calls.in_reasoning
                                    events = _shaped(build, calls, delta, pending)
                                    if was_reasoning or (calls is not None and calls.in_reasoning):
                                        counts[2] += len(delta.token_ids)
                                    for event in events:
                                        yield event
                except ServerError:  # the engine failed; its cause is in the record and the log
                    recorded = True
                    failed = build.failed(FAILED)
                    await written(self._record(run, failed.response))
                    yield failed
                    return
                sample = generation.samples[0]
                if calls is not None:
                    for event in _parsed(build, calls.finish()):  # nothing left if the last delta ended it
                        yield event
                    sample.tool_parse_error = "; ".join(filter(None, [calls.error, *build.call_errors])) or None
                    sample.reasoning = build.reasoning or None
                counts[0] += len(prepared.prompt.token_ids)
                counts[1] += len(sample.token_ids)
                counts[3] += generation.cached_tokens
                hosted = build.pending_hosted()
                if not hosted:
                    break
                # The model called a hosted tool the server runs: this round is recorded on its own,
                # the calls run (off the loop), and the model goes on from their results.
                await written(self._record(run, build.snapshot("completed"), record_id=f"{run.id}_{hosted_round}"))
                for call in hosted:
                    result = await asyncio.to_thread(served.hosted_tools.run, call)
                    for event in build.hosted_done(call, result):
                        yield event
                if sample.finish_reason != "stop" or hosted_round == MAX_HOSTED_ROUNDS \
                        or not build.only_hosted_calls_since(first_item):
                    break  # out of tokens or rounds, or the client has calls of its own to run
                run.prepared = await self._continued(prepared, build.output()[first_item:], counts[1])
            closing = build.finished(usage(*counts), incomplete=sample.finish_reason != "stop")
            recorded = True
            await written(self._record(run, closing[-1].response))
            await self._append_to_conversation(run, closing[-1].response)  # type: ignore[union-attr]
            for event in closing:
                yield event
        finally:
            if not recorded:  # cancelled: recorded as it stands, without waiting
                run.cancelled_write = self._record(run, build.snapshot("cancelled"))

    async def _continued(self, prepared: PreparedResponse, round_items: list[Any], used: int) -> PreparedResponse:
        """The next round of a response whose model called hosted tools: the same request rendered
        with this round's output (the calls and their results) after its items."""
        request = prepared.request
        output = [item.model_dump(mode="json", exclude_none=True) for item in round_items]
        items = [*prepared.items, *output] if not prepared.continued else [*prepared.continued, *output]
        prompt = await self.served.off_loop(
            render_chat, self.served.tokenizer, chat_messages(request.instructions, items, self.served.hosted_tools.result),
            tools=chat_tools(prepared.offered.tools), template_kwargs=request.chat_template_kwargs,
            reasoning_effort=request.reasoning.effort if request.reasoning is not None else None,
            effort_param="reasoning.effort", policy=self.served.template_policy)
        remaining = request.max_output_tokens - used if request.max_output_tokens is not None else None
        budget = token_budget(self.served, len(prompt.token_ids), max(remaining or 0, 1) if remaining is not None
                              else None, param="max_output_tokens")
        names = [offered_name(tool) for tool in prepared.offered.tools]
        parser = self.served.output_parser(prompt.text, names or None)
        return dataclasses.replace(prepared, prompt=prompt, output_parser=parser, continued=items,
                                   params=dataclasses.replace(prepared.params, max_tokens=budget))

    def _settings(self, prepared: PreparedResponse) -> dict[str, Any]:
        """The `Response` fields echoed from the request, with OpenAI's defaults."""
        request = prepared.request
        return {
            "id": new_id("resp_"),
            "object": "response",
            "created_at": int(time.time()),
            "model": self.served.name,
            "background": request.background is True,
            "error": None,
            "incomplete_details": None,
            "instructions": request.instructions,
            "max_output_tokens": request.max_output_tokens,
            "max_tool_calls": request.max_tool_calls,
            "metadata": request.metadata or {},
            "parallel_tool_calls": request.parallel_tool_calls is not False,
            "previous_response_id": request.previous_response_id,
            "conversation": {"id": request.conversation_id} if request.conversation_id else None,
            "prompt_cache_key": request.prompt_cache_key,
            "reasoning": Reasoning(
                effort=request.reasoning.effort if request.reasoning is not None else None,
                summary=(request.reasoning.summary or request.reasoning.generate_summary)
                if request.reasoning is not None else None,
            ),
            "safety_identifier": request.safety_identifier,
            "service_tier": "default",
            "store": request.store is not False,
            "temperature": float(prepared.params.temperature),
            "text": {"format": _format(request),
                     "verbosity": request.text.verbosity if request.text and request.text.verbosity else "medium"},
            "tool_choice": _dumped(request.tool_choice) or "auto",
            # what the model was offered: a hosted tool with no implementation here is left out
            "tools": [_TOOL.validate_python(tool.model_dump(by_alias=True, exclude_none=tool.type != "function"))
                      for tool in request.tools or [] if _echoed(tool, prepared.offered)],
            "top_logprobs": request.top_logprobs or 0,
            "top_p": float(prepared.params.top_p),
            "truncation": request.truncation or "disabled",
            # `usage` comes with the terminal event; `user` only when given (neither is nullable in the reference)
            **({"user": request.user} if request.user is not None else {}),
        }

    def _record(self, run: _Run, response: Response, *, status: RecordStatus | None = None,
                record_id: str | None = None) -> Future[bool]:
        """`record_id`: a round before the last of a response that ran hosted tools (not in the API,
        not in the episode)."""
        request = run.prepared.request
        return record_generation(
            self.served,
            record_id=record_id or run.id,
            kind=KIND,
            created=run.build.settings["created_at"],
            request=request,
            prompt_text=run.prepared.prompt.text,
            prompt_token_ids=run.prepared.prompt.token_ids,
            generation=run.generation,
            output=response,
            metadata=request.metadata,
            visible=request.store is not False and record_id is None,
            previous_response_id=request.previous_response_id,
            input_items=run.prepared.items,
            tools_not_offered=run.prepared.offered.not_offered,
            status=status,
            episode=run.prepared.episode if record_id is None else None,
        )


def _format(request: ResponseCreateRequest) -> dict[str, Any]:
    fmt = request.text.format if request.text is not None else None
    return fmt.model_dump(mode="json", by_alias=True, exclude_none=True) if fmt is not None else {"type": "text"}


def _echoed(tool: Any, offered: OfferedTools) -> bool:
    return not (isinstance(tool, HostedTool) and tool.type in offered.not_offered)


def _dumped(value: Any) -> Any:
    return value.model_dump(mode="json") if hasattr(value, "model_dump") else value


async def _drained(sink: asyncio.Queue[ResponseStreamEvent | None]) -> AsyncIterator[ResponseStreamEvent]:
    """A background task's events as it sends them, until it ends."""
    while (event := await sink.get()) is not None:
        yield event


def _shaped(
    build: ResponseEvents, calls: OutputStream | None, delta: SampleDelta, pending: list[dict[str, Any]],
) -> list[ResponseStreamEvent]:
    """The events for one step of the sample: its text as content, or through the output parser.
    `pending` (the logprobs not sent yet) is emptied once text carries them."""
    if calls is None:
        if not delta.text:
            return []
        events = build.text_delta(delta.text, pending[:])
        pending.clear()
        return events
    parsed = calls.feed(delta.text) if delta.text else []
    if delta.finish_reason is not None:
        parsed += calls.finish()
    if not parsed:  # text held back by the parser: its tokens' logprobs wait for the text they belong to
        return []
    events = _parsed(build, parsed, pending[:])
    pending.clear()
    return events


def _parsed(
    build: ResponseEvents, parsed: list[OutputPiece], logprobs: list[dict[str, Any]] | None = None,
) -> list[ResponseStreamEvent]:
    """Events for parsed pieces; `logprobs` go with the first content piece."""
    events: list[ResponseStreamEvent] = []
    for piece in parsed:
        if isinstance(piece, ReasoningDelta):
            events += build.reasoning_delta(piece.text)
        elif piece.index is not None:
            events += build.call_delta(piece)
        elif piece.content:
            events += build.text_delta(piece.content, logprobs)
            logprobs = None
    return events
