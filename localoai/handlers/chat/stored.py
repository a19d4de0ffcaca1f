"""Stored chat completions: list, retrieve, update metadata, delete, and their messages.

Only completions created with `store: true` are visible here (see `handlers/stored.py`).
"""

from __future__ import annotations

import asyncio
from typing import Any

from localoai.errors import NotFoundError
from localoai.handlers.stored import list_page, visible_record
from localoai.protocol.stored import ListQuery
from localoai.served import LoadedModel, Services
from localoai.store import CursorNotFound, GenerationRecord

KIND = "chat.completion"


def _not_found(completion_id: str) -> NotFoundError:
    return NotFoundError(f"No chat completion found with id '{completion_id}'.", param="completion_id",
                         code="not_found")


def _as_object(record: GenerationRecord) -> dict[str, Any]:
    return {**record.output, "metadata": record.metadata}


class StoredChatCompletions:
    def __init__(self, model: LoadedModel, services: Services) -> None:
        self.model, self.services = model, services

    async def _visible(self, completion_id: str) -> GenerationRecord:
        record = await visible_record(self.services, completion_id, KIND)
        if record is None:
            raise _not_found(completion_id)
        return record

    async def list(self, query: ListQuery) -> dict[str, Any]:
        def read() -> list[GenerationRecord]:
            return self.services.store.list(kind=KIND, visible=True, model=query.model, metadata=query.metadata,
                                          after=query.after, limit=query.limit + 1, order=query.order)

        try:
            records = await asyncio.to_thread(read)
        except CursorNotFound:
            raise _not_found(query.after or "") from None
        return list_page([_as_object(record) for record in records], query.limit)

    async def retrieve(self, completion_id: str) -> dict[str, Any]:
        return _as_object(await self._visible(completion_id))

    async def update(self, completion_id: str, metadata: dict[str, str] | None) -> dict[str, Any]:
        record = await self._visible(completion_id)
        record.metadata = dict(metadata or {})
        await asyncio.to_thread(self.services.store.put, record)
        return _as_object(record)

    async def delete(self, completion_id: str) -> dict[str, Any]:
        await self._visible(completion_id)
        await asyncio.to_thread(self.services.store.delete, completion_id)
        return {"id": completion_id, "object": "chat.completion.deleted", "deleted": True}

    async def messages(self, completion_id: str, query: ListQuery) -> dict[str, Any]:
        record = await self._visible(completion_id)
        messages = [_store_message(completion_id, i, m) for i, m in enumerate(record.request.get("messages", []))]
        if query.order == "desc":
            messages.reverse()
        if query.after is not None:
            ids = [message["id"] for message in messages]
            if query.after not in ids:
                raise NotFoundError(f"No message found with id '{query.after}'.", param="after", code="not_found")
            messages = messages[ids.index(query.after) + 1 :]
        return list_page(messages, query.limit)


def _store_message(completion_id: str, index: int, message: dict[str, Any]) -> dict[str, Any]:
    """A request message as OpenAI returns it from storage: with an id, text parts also joined."""
    stored = {"id": f"{completion_id}-{index}", **message}
    content = message.get("content")
    if isinstance(content, list):
        stored["content_parts"] = content
        stored["content"] = "\n".join(part.get("text", "") for part in content if part.get("type") == "text")
    return stored
