"""A background response still running when its server stops is cancelled, not left
`in_progress` in the store for ever."""

from __future__ import annotations

from pathlib import Path
from typing import Any

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
