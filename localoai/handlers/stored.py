"""What the stored-object endpoints share: reading a record the HTTP API may return, and
OpenAI's list page.

The store keeps every generation, for traces; the API returns only those created with `store`
on, as OpenAI does. Store reads run in a worker thread, never on the event loop.
"""

from __future__ import annotations

import asyncio
from typing import Any

from localoai.served import Services
from localoai.store import GenerationRecord, RecordKind


async def visible_record(services: Services, record_id: str, kind: RecordKind) -> GenerationRecord | None:
    """The record `record_id` if it is of `kind` and the API may return it; None otherwise
    (each endpoint answers its own 404)."""
    record = await asyncio.to_thread(services.store.get, record_id)
    if record is None or record.kind != kind or not record.store_visible:
        return None
    return record


def list_page(data: list[dict[str, Any]], limit: int) -> dict[str, Any]:
    """OpenAI's cursor page: `data` holds up to `limit + 1` items; the extra one only says there are more."""
    shown = data[:limit]
    return {
        "object": "list",
        "data": shown,
        "first_id": shown[0]["id"] if shown else None,
        "last_id": shown[-1]["id"] if shown else None,
        "has_more": len(data) > limit,
    }
