"""Stored responses: retrieve, delete, and the input items a response was generated from.

Only responses created with `store` true (the default) are visible here (see `handlers/stored.py`).
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from openai.types.responses import Response, ResponseStreamEvent

from localoai.errors import InvalidRequestError, NotFoundError
from localoai.handlers.responses.items import without_encrypted_reasoning
from localoai.handlers.responses.replay import item_events, opening_events, replay_builder
from localoai.handlers.stored import list_page, visible_record
from localoai.protocol.stored import ListQuery
from localoai.served import LoadedModel, Services
from localoai.store import GenerationRecord, Store

KIND = "response"
ORPHAN_ERROR = {"code": "server_error", "message": "The server stopped while this response was running."}


def close_orphans(store: Store) -> int:
    """At start: responses still `in_progress` belong to no task of this process (the server that
    ran them stopped or died first), so they are closed `failed` and pollers stop waiting. The count."""
    orphans = list(store.iterate(kind=KIND, status="in_progress"))
    for record in orphans:
        output = {**record.output, "status": "failed", "error": ORPHAN_ERROR}
        store.put(dataclasses.replace(record, status="failed", output=output, error=dict(ORPHAN_ERROR)))
    return len(orphans)


def _not_found(response_id: str) -> NotFoundError:
    return NotFoundError(f"Response with id '{response_id}' not found.", param="response_id", code="not_found")


class StoredResponses:
    def __init__(self, model: LoadedModel, services: Services) -> None:
        self.model, self.services = model, services

    async def _visible(self, response_id: str) -> GenerationRecord:
        record = await visible_record(self.services, response_id, KIND)
        if record is None:
            raise _not_found(response_id)
        return record

    async def retrieve(self, response_id: str) -> dict[str, Any]:
        return (await self._visible(response_id)).output

    async def stream(
        self, response_id: str, starting_after: int | None, finished: Callable[[str], Awaitable[None]],
    ) -> AsyncIterator[ResponseStreamEvent]:
        """The response's events, replayed from the store (see `response_replay`); only those after
        `starting_after`. A background response still running sends its opening events at once and
        the rest once `finished` says it ended."""
        record = await self._visible(response_id)  # a 404 before the stream starts
        response = Response.model_validate(record.output)
        build = replay_builder(response)

        async def events() -> AsyncIterator[ResponseStreamEvent]:
            ended = response
            for event in opening_events(build, response):
                if starting_after is None or event.sequence_number > starting_after:
                    yield event
            if record.status == "in_progress":
                await finished(response_id)
                latest = await visible_record(self.services, response_id, KIND)
                if latest is None:  # deleted meanwhile
                    return
                ended = Response.model_validate(latest.output)
                build.item_ids = [item.id for item in ended.output if item.id]
            for event in item_events(build, ended):
                if starting_after is None or event.sequence_number > starting_after:
                    yield event

        return events()

    async def delete(self, response_id: str) -> dict[str, Any]:
        await self._visible(response_id)
        await asyncio.to_thread(self.services.store.delete, response_id)
        return {"id": response_id, "object": "response", "deleted": True}

    async def cancel(self, response_id: str) -> dict[str, Any]:
        """The response after a cancel, as OpenAI answers: only background responses can be
        cancelled; one cancelled already is returned unchanged, one that ended otherwise is a 400.
        (A running one was stopped by `Responses.cancel` just before; a record still "in_progress"
        here belongs to no task, the server having stopped while it ran: it is marked cancelled.)"""
        record = await self._visible(response_id)
        output = record.output
        if not output.get("background"):
            raise InvalidRequestError("Only responses created with background=true can be cancelled.",
                                      param="response_id")
        if output.get("status") == "cancelled":
            return output
        if record.status != "in_progress":
            raise InvalidRequestError(f"Cannot cancel a response in status '{output.get('status')}'.",
                                      param="response_id")
        output = {**output, "status": "cancelled"}
        await asyncio.to_thread(self.services.store.put, dataclasses.replace(record, status="cancelled", output=output))
        return output

    async def input_items(self, response_id: str, query: ListQuery, include: list[str]) -> dict[str, Any]:
        """Every item the response was generated from: the replayed `previous_response_id` chain
        first, then the request's own input (instructions are not an item, as on OpenAI)."""
        record = await self._visible(response_id)
        items = list(record.request.get("input_items", []))
        if "reasoning.encrypted_content" not in include:
            items = [without_encrypted_reasoning(item) for item in items]
        if query.order == "desc":
            items.reverse()
        if query.after is not None:
            ids = [item["id"] for item in items]
            if query.after not in ids:
                raise NotFoundError(f"No input item found with id '{query.after}'.", param="after", code="not_found")
            items = items[ids.index(query.after) + 1 :]
        return list_page(items, query.limit)
