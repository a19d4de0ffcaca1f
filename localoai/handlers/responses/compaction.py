"""`POST /v1/responses/compact`: the model summarizes a conversation; the answer is the conversation's
user messages followed by one `compaction` item holding the summary, which later requests send as
input in place of the turns it summarizes (it renders as a user message: `items.chat_messages`).

OpenAI encrypts a compaction item's content; here it is this server's own encoding of the summary
(`protocol.response_items.compaction_content`): opaque to clients, readable by this server only.

The summarizing prompt is the conversation rendered as Responses render it, then one user message
asking for the summary (`COMPACTION_REQUEST`). The summary is a generation like any other: recorded
(kind "response.compaction", not retrievable over the API) with its token-exact trace, inside the
request's episode when it has one, so a trainer sees the policy's summaries with its other turns.
A reasoning model's reasoning is kept in the trace, not in the summary. `Responses` asks for the same
summary (`summarizing`) when a request's `context_management` threshold is reached.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Union

from openai.types.responses import CompactedResponse, ResponseInputMessageItem
from openai.types.responses.response_compaction_item import ResponseCompactionItem

from localoai.chat_template import RenderedPrompt, render_chat
from localoai.engine.params import SamplingParams
from localoai.episodes.ledger import EpisodeTurn
from localoai.episodes.routing import EpisodeRef
from localoai.errors import InvalidRequestError
from localoai.handlers.common import new_id, token_budget
from localoai.handlers.recording import RecordFields
from localoai.handlers.responses.events import usage
from localoai.handlers.responses.inputs import ResponseInputs
from localoai.handlers.responses.items import chat_messages
from localoai.handlers.run import GenerationRun
from localoai.parsers.output import OutputParser, OutputPiece, fold
from localoai.protocol.base import RequestModel
from localoai.protocol.response_items import compaction_content
from localoai.protocol.responses import CompactRequest
from localoai.served import LoadedModel, Services

KIND = "response.compaction"

COMPACTION_REQUEST = (
    "Your context is about to be compacted: the conversation above will be replaced by what you write "
    "now. Write a summary that lets you carry on without it: the task and its goal, what has been done "
    "and found, the decisions and constraints that still hold, and what remains to do. Write only the "
    "summary."
)
"""The last user message of the summarizing prompt."""


class CompactedConversation(CompactedResponse):
    """The SDK's `CompactedResponse`, whose `output` also holds the user messages the API returns (the
    SDK types it as output items, which have no user message)."""

    output: list[Union[ResponseInputMessageItem, ResponseCompactionItem]]  # type: ignore[assignment]


@dataclass(frozen=True)
class PreparedCompaction:
    request: RequestModel
    items: list[dict[str, Any]]
    """The conversation's items, a `previous_response_id` chain first."""
    prompt: RenderedPrompt
    params: SamplingParams
    output_parser: OutputParser | None
    episode: EpisodeTurn | None


class Compactions:
    """Compacts conversations for one served model (see the module)."""

    def __init__(self, model: LoadedModel, services: Services, inputs: ResponseInputs) -> None:
        self.model, self.services, self.inputs = model, services, inputs

    async def prepare(self, request: CompactRequest, episode: EpisodeRef | None = None) -> PreparedCompaction:
        """Every check that can fail, before the summary is generated."""
        self.model.check_model(request.model)
        items, _ = await self.inputs.resolve(request.input_fields())
        if not items:
            raise InvalidRequestError("There is nothing to compact: give 'input' or 'previous_response_id'.",
                                      param="input", code="missing_required_parameter")
        return await self.summarizing(request, items, episode, instructions=request.instructions,
                                      template_kwargs=request.chat_template_kwargs,
                                      max_output_tokens=request.max_output_tokens, temperature=request.temperature,
                                      top_p=request.top_p)

    async def summarizing(self, request: RequestModel, items: list[dict[str, Any]], episode: EpisodeRef | None, *,
                          instructions: str | None, template_kwargs: dict[str, Any] | None,
                          max_output_tokens: int | None, temperature: float | None,
                          top_p: float | None, cap: int | None = None) -> PreparedCompaction:
        """The summary of `items` asked for (`request`: the request to record, a compaction's or the
        response's that crossed its `context_management` threshold; `cap`: at most this many tokens
        when `max_output_tokens` is not given)."""
        model, services = self.model, self.services
        asked = [*items, {"type": "message", "role": "user",
                          "content": [{"type": "input_text", "text": COMPACTION_REQUEST}]}]
        messages = chat_messages(instructions, asked, services.hosted_tools.result)

        def render(history: Any, *, generation_prompt: bool = True) -> RenderedPrompt:
            return render_chat(model.tokenizer, history, add_generation_prompt=generation_prompt,
                               template_kwargs=template_kwargs, policy=model.template_policy)

        prompt = await services.off_loop(render, messages)
        prompt, turn = await services.off_loop(
            services.episodes.attach, episode, messages, prompt,
            lambda history: render(history, generation_prompt=False).text, context=[[], template_kwargs])
        budget = token_budget(model, len(prompt.token_ids), max_output_tokens, param="max_output_tokens")
        budget = min(budget, cap) if cap is not None and max_output_tokens is None else budget
        parser = model.output_parser(prompt.text, None)
        params = SamplingParams(max_tokens=budget, temperature=float(temperature if temperature is not None else 1.0),
                                top_p=float(top_p if top_p is not None else 1.0))
        return PreparedCompaction(request, items, prompt, model.decoded_for(parser, params), parser, turn)

    async def create(self, prepared: PreparedCompaction) -> CompactedConversation:
        model, request = self.model, prepared.request
        compaction_id, created = new_id("resp_"), int(time.time())
        fields = RecordFields(model=model.name, record_id=compaction_id, kind=KIND, created=created,
                              request=request, prompt_text=prepared.prompt.text,
                              prompt_token_ids=prepared.prompt.token_ids, input_items=prepared.items,
                              episode=prepared.episode)
        output_stream = prepared.output_parser.stream() if prepared.output_parser else None
        pieces: list[OutputPiece] = []
        async with GenerationRun(self.services, fields, lambda: None) as run:
            # Reasoning tokens are counted per step, as Responses count them.
            async with run.generate(prepared.prompt.token_ids, prepared.params, live=False,
                                    steps=model.reasoning_format is not None) as generation:
                async for step in generation:
                    for delta in step if isinstance(step, list) else []:
                        if output_stream is None:
                            continue
                        was_reasoning = output_stream.in_reasoning
                        pieces += output_stream.feed(delta.text)
                        if was_reasoning or output_stream.in_reasoning:
                            run.counts.reasoning += len(delta.token_ids)
            sample = generation.samples[0]
            text = "".join(sample.text)
            if output_stream is not None:
                parsed = fold(pieces + output_stream.finish(), output_stream.error)
                text, sample.reasoning = parsed.content, parsed.reasoning
            kept = [ResponseInputMessageItem.model_validate({key: item[key] for key in
                                                             ("id", "type", "role", "content", "status")})
                    for item in prepared.items if item["type"] == "message" and item["role"] == "user"]
            summary = ResponseCompactionItem(id=new_id("cmp_"), type="compaction",
                                             encrypted_content=compaction_content(text.strip()))
            counts = run.counts
            compacted = CompactedConversation(
                id=compaction_id, object="response.compaction", created_at=created, output=[*kept, summary],
                usage=usage(counts.prompt, counts.output, counts.reasoning, counts.cached))
            await run.finish(compacted)
        return compacted
