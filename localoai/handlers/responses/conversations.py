"""The Conversations API: conversations and their items, kept in `services.conversations`.

Items get ids and their listed shape from `response_items.stored_items` (the same shapes
`input_items` lists), so a conversation's items can be rendered by `response_items.chat_messages`
as they are. Requests are validated before anything is written; every store call runs in a
worker thread, never on the event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from localoai.errors import InvalidRequestError, NotFoundError
from localoai.handlers.responses.items import stored_items, without_encrypted_reasoning
from localoai.handlers.stored import list_page
from localoai.protocol.conversations import ConversationCreateRequest, ItemsCreateRequest
from localoai.protocol.stored import ListQuery
from localoai.served import LoadedModel, Services
from localoai.store import CursorNotFound
from localoai.store.conversations import ConversationNotFound, ConversationStore, DuplicateItemId


def conversation_not_found(conversation_id: str) -> NotFoundError:
    return NotFoundError(f"Conversation with id '{conversation_id}' not found.", param="conversation_id",
                         code="not_found")


def _item_not_found(item_id: str, *, param: str = "item_id") -> NotFoundError:
    return NotFoundError(f"Item with id '{item_id}' not found.", param=param, code="not_found")


def _duplicate(exc: DuplicateItemId) -> InvalidRequestError:
    return InvalidRequestError(f"Invalid value for 'items[{exc.index}].id': an item with id '{exc.item_id}' is "
                               "already in this conversation.", param=f"items[{exc.index}].id", code="invalid_value")


def _shown(items: Sequence[dict[str, Any]], include: Sequence[str]) -> list[dict[str, Any]]:
    if "reasoning.encrypted_content" in include:
        return list(items)
    return [without_encrypted_reasoning(item) for item in items]


class Conversations:
    def __init__(self, model: LoadedModel, services: Services) -> None:
        self.model, self.services = model, services

    @property
    def store(self) -> ConversationStore:
        return self.services.conversations

    async def create(self, body: ConversationCreateRequest) -> dict[str, Any]:
        items = stored_items(body.items or [])
        try:
            return await asyncio.to_thread(self.store.create, body.metadata, items)
        except DuplicateItemId as exc:
            raise _duplicate(exc) from None

    async def retrieve(self, conversation_id: str) -> dict[str, Any]:
        conversation = await asyncio.to_thread(self.store.get, conversation_id)
        if conversation is None:
            raise conversation_not_found(conversation_id)
        return conversation

    async def update(self, conversation_id: str, metadata: dict[str, str] | None) -> dict[str, Any]:
        try:
            return await asyncio.to_thread(self.store.update_metadata, conversation_id, metadata)
        except ConversationNotFound:
            raise conversation_not_found(conversation_id) from None

    async def delete(self, conversation_id: str) -> dict[str, Any]:
        if not await asyncio.to_thread(self.store.delete, conversation_id):
            raise conversation_not_found(conversation_id)
        return {"id": conversation_id, "object": "conversation.deleted", "deleted": True}

    async def add_items(self, conversation_id: str, body: ItemsCreateRequest, include: Sequence[str]) -> dict[str, Any]:
        items = stored_items(body.items)
        try:
            added = await asyncio.to_thread(self.store.add_items, conversation_id, items)
        except ConversationNotFound:
            raise conversation_not_found(conversation_id) from None
        except DuplicateItemId as exc:
            raise _duplicate(exc) from None
        shown = _shown(added, include)
        return list_page(shown, len(shown))

    async def list_items(self, conversation_id: str, query: ListQuery, include: Sequence[str]) -> dict[str, Any]:
        try:
            items = await asyncio.to_thread(self.store.list_items, conversation_id, after=query.after,
                                            limit=query.limit + 1, order=query.order)
        except ConversationNotFound:
            raise conversation_not_found(conversation_id) from None
        except CursorNotFound:
            raise _item_not_found(query.after or "", param="after") from None
        return list_page(_shown(items, include), query.limit)

    async def retrieve_item(self, conversation_id: str, item_id: str, include: Sequence[str]) -> dict[str, Any]:
        try:
            item = await asyncio.to_thread(self.store.get_item, conversation_id, item_id)
        except ConversationNotFound:
            raise conversation_not_found(conversation_id) from None
        if item is None:
            raise _item_not_found(item_id)
        return _shown([item], include)[0]

    async def delete_item(self, conversation_id: str, item_id: str) -> dict[str, Any]:
        try:
            conversation = await asyncio.to_thread(self.store.delete_item, conversation_id, item_id)
        except ConversationNotFound:
            raise conversation_not_found(conversation_id) from None
        if conversation is None:
            raise _item_not_found(item_id)
        return conversation
