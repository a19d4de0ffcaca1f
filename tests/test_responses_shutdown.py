"""A background response still running when its server stops is cancelled, not left
`in_progress` in the store for ever: also one whose task the stop cancels before its first step."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from localoai.handlers.responses.handler import Responses
from localoai.protocol.responses import ResponseCreateRequest
from localoai.store import SQLiteStore
from localoai.testing import running_server, wait_until


def test_stopping_the_server_cancels_running_background_responses(tiny: tuple[Any, Any], tmp_path: Path) -> None:
    model, tokenizer = tiny
    path = tmp_path / "store.sqlite3"
    with running_server(model, tokenizer, name="stopping", store=str(path)) as server:
        client = server.client(max_retries=0)
        ids = [client.responses.create(model=server.model, input="hello", background=True, temperature=0,
                                       max_output_tokens=1500).id for _ in range(2)]
        # the first is generating (recorded so as it starts); the second waits its turn
        wait_until(lambda: server.store.get(ids[0]).output["status"] == "in_progress")
    with SQLiteStore(path) as store:
        for response_id in ids:
            record = store.get(response_id)
            assert record.status == "cancelled" and record.output["status"] == "cancelled", record.status


def test_a_background_response_cancelled_before_its_first_step_is_recorded_cancelled(scripted_server: Any) -> None:
    # The server's stop (`cancel_all`) comes in the loop iteration in which the response starts: its
    # task is cancelled before it runs a line. A handler of its own on this test's loop, over the
    # server's model and services, gives that order exactly.
    served = scripted_server.served
    responses = Responses(served.loaded, served.services)

    async def start_as_the_server_stops() -> tuple[str, list[Any]]:
        prepared = await responses.prepare(ResponseCreateRequest.model_validate(
            {"model": scripted_server.model, "input": "hello", "background": True, "stream": True}))
        started = asyncio.ensure_future(responses.start_background(prepared, stream=True))
        stopping = asyncio.ensure_future(responses.background.cancel_all())
        (queued, events), _ = await asyncio.gather(started, stopping)
        assert events is not None
        return queued.id, [event async for event in events]  # the stream ends, with the task

    response_id, events = asyncio.run(asyncio.wait_for(start_as_the_server_stops(), 30))
    assert events == []  # it never ran: no event, and the reader is not left waiting
    assert response_id not in responses.background.running
    wait_until(lambda: scripted_server.store.get(response_id).status == "cancelled")
    assert scripted_server.store.get(response_id).output["status"] == "cancelled"
