"""Responses' input: the request's items after what came before (a `previous_response_id` chain
replayed from the store, or a conversation's items), rendered with the offered tools; the same
rendering for `input_tokens` and for the next round after hosted tool calls (`continued`)."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from dataclasses import dataclass
from typing import Any

from openai.types.responses import Response
from openai.types.responses.response_compaction_item import ResponseCompactionItem

from localoai.chat_template import RenderedPrompt, render_chat
from localoai.engine.params import SamplingParams
from localoai.episodes.ledger import EpisodeTurn
from localoai.errors import InvalidRequestError, NotFoundError
from localoai.handlers.common import token_budget
from localoai.handlers.responses.items import chat_messages, chat_tools, check_call_outputs, stored_items
from localoai.handlers.stored import visible_record
from localoai.parsers.output import OutputParser
from localoai.protocol.client_tools import offered_name
from localoai.protocol.offered_tools import OfferedTools, offered_tools
from localoai.protocol.responses import ResponseCreateRequest, ResponseInputFields
from localoai.served import LoadedModel, Services
from localoai.store.conversations import ConversationNotFound

logger = logging.getLogger(__name__)

KIND = "response"


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
    """After a round of hosted tool calls or a compaction: `items` then the earlier output (the rounds',
    the compaction item), which `prompt` renders."""
    compaction: ResponseCompactionItem | None = None
    """The compaction item made before the answer (`context_management`), the output's first item."""


@dataclass(frozen=True)
class RenderedInput:
    items: list[dict[str, Any]]
    """What came before (a `previous_response_id` chain or a conversation), then this request's items."""
    prompt: RenderedPrompt
    new_items_from: int
    """Where this request's own items start in `items`."""
    shown: list[dict[str, Any]]
    """The items `prompt` renders: `items`, less the oldest turns when `truncation: "auto"` dropped them."""


def turn_starts(items: list[dict[str, Any]]) -> list[int]:
    """Where `truncation: "auto"` may start the conversation (OpenAI's "dropping items from the beginning
    of the conversation"): at its start, or at a user message with anything but system and developer
    messages before it; a turn goes whole, so no tool result outlives its call."""
    starts, seen = [0], False
    for index, item in enumerate(items):
        if item["type"] == "message" and item["role"] == "user" and seen and index > starts[-1]:
            starts.append(index)
        seen = seen or not _instruction(item)
    return starts


def from_turn(items: list[dict[str, Any]], start: int) -> list[dict[str, Any]]:
    """`items` from `start` on, with the system and developer messages before it (the instructions)."""
    return [item for item in items[:start] if _instruction(item)] + items[start:]


def _instruction(item: dict[str, Any]) -> bool:
    """A system or developer message: merged into the leading system message, never truncated away."""
    return item["type"] == "message" and item["role"] in ("system", "developer")


def previous_not_found(response_id: str) -> NotFoundError:
    return NotFoundError(f"Previous response with id '{response_id}' not found.", param="previous_response_id",
                         code="previous_response_not_found")


class ResponseInputs:
    """Resolves and renders a Responses request's input for one served model."""

    def __init__(self, model: LoadedModel, services: Services) -> None:
        self.model, self.services = model, services

    def offered(self, request: ResponseInputFields) -> OfferedTools:
        return offered_tools(request, self.services.hosted_tools.definitions())

    async def render(self, request: ResponseInputFields, *, room: int = 1) -> RenderedInput:
        """The full item list (what came before, then this request's items), rendered (`room`: the
        output tokens it must leave, for `truncation: "auto"`)."""
        items, first_new = await self.resolve(request)
        prompt, shown = await self._rendered(request, items, self.offered(request), room=room)
        return RenderedInput(items, prompt, first_new, shown)

    async def render_items(self, request: ResponseInputFields, items: list[dict[str, Any]], *,
                           room: int = 1) -> tuple[RenderedPrompt, list[dict[str, Any]]]:
        """`items` rendered for `request` (and the items the rendering holds, as `render` says)."""
        return await self._rendered(request, items, self.offered(request), room=room)

    async def resolve(self, request: ResponseInputFields) -> tuple[list[dict[str, Any]], int]:
        """The full item list (what came before, then this request's items), checked, and where this
        request's items start."""
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
        return items, len(earlier)

    async def _rendered(self, request: ResponseInputFields, items: list[dict[str, Any]], offered: OfferedTools,
                        *, room: int = 1) -> tuple[RenderedPrompt, list[dict[str, Any]]]:
        """`items` rendered, and the items the rendering holds: all of them, unless `truncation` is
        "auto" and they leave fewer than `room` tokens of the context window, when the oldest turns
        go first (see `turn_starts`)."""
        model, services = self.model, self.services

        def render(shown: list[dict[str, Any]]) -> RenderedPrompt:
            return render_chat(
                model.tokenizer,
                chat_messages(request.instructions, shown, services.hosted_tools.result),  # never carried over
                tools=chat_tools(offered.tools),
                template_kwargs=request.chat_template_kwargs,
                reasoning_effort=request.reasoning.effort if request.reasoning is not None else None,
                effort_param="reasoning.effort",
                policy=model.template_policy,
            )

        async def fits(shown: list[dict[str, Any]]) -> RenderedPrompt | None:
            try:
                prompt = await services.off_loop(render, shown)
            except InvalidRequestError as error:  # too many characters to be worth tokenizing
                if error.code != "context_length_exceeded":
                    raise
                return None
            return prompt if len(prompt.token_ids) + room <= model.context_length else None

        if request.truncation != "auto":
            return await services.off_loop(render, items), items
        if (prompt := await fits(items)) is not None:
            return prompt, items
        # The fewest turns dropped (a binary search over where the conversation starts) that fit; when the
        # last turn alone does not, it is rendered (and refused) as it would be without truncation.
        starts = turn_starts(items)
        low, high, best = 1, len(starts) - 1, None
        while low <= high:
            middle = (low + high) // 2
            shown = from_turn(items, starts[middle])
            if (prompt := await fits(shown)) is not None:
                best, high = (prompt, shown), middle - 1
            else:
                low = middle + 1
        if best is None:
            shown = from_turn(items, starts[-1])
            return await services.off_loop(render, shown), shown
        return best

    async def continued(self, prepared: PreparedResponse, round_items: list[Any], used: int) -> PreparedResponse:
        """The next round of a response whose model called hosted tools: the same request rendered
        with this round's output (the calls and their results) after its items."""
        request = prepared.request
        output = [item.model_dump(mode="json", exclude_none=True) for item in round_items]
        items = [*prepared.items, *output] if not prepared.continued else [*prepared.continued, *output]
        remaining = request.max_output_tokens - used if request.max_output_tokens is not None else None
        prompt, _ = await self._rendered(request, items, prepared.offered, room=max(remaining or 0, 1))
        budget = token_budget(self.model, len(prompt.token_ids), max(remaining or 0, 1) if remaining is not None
                              else None, param="max_output_tokens")
        names = [offered_name(tool) for tool in prepared.offered.tools]
        parser = self.model.output_parser(prompt.text, names or None)
        return dataclasses.replace(prepared, prompt=prompt, output_parser=parser, continued=items,
                                   params=dataclasses.replace(prepared.params, max_tokens=budget))

    async def _conversation(self, conversation_id: str) -> list[dict[str, Any]]:
        try:
            return await asyncio.to_thread(self.services.conversations.items, conversation_id)
        except ConversationNotFound:
            raise NotFoundError(f"Conversation with id '{conversation_id}' not found.", param="conversation",
                                code="not_found") from None

    async def _replay(self, response_id: str) -> list[dict[str, Any]]:
        """A stored response's full input (its own chain included) followed by its output."""
        record = await visible_record(self.services, response_id, KIND)
        if record is None:
            raise previous_not_found(response_id)
        if record.status == "in_progress":
            raise InvalidRequestError(f"Previous response with id '{response_id}' is still in progress.",
                                      param="previous_response_id")
        return [*record.request.get("input_items", []), *record.output.get("output", [])]

    async def append_to_conversation(self, prepared: PreparedResponse, response: Response) -> None:
        """A finished response's own input items and its output join its conversation."""
        conversation_id = prepared.request.conversation_id
        if conversation_id is None:
            return
        output = [item.model_dump(mode="json", exclude_none=True) for item in response.output]
        try:
            await asyncio.to_thread(self.services.conversations.add_items, conversation_id,
                                    prepared.items[prepared.new_items_from :] + output)
        except Exception:  # noqa: BLE001 - the response stands; the log says why the conversation did not grow
            logger.exception("could not append response %s to conversation %s", response.id, conversation_id)
