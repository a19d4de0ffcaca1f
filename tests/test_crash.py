"""A completed response survives a crash of the process that served it (SIGKILL, no clean-up)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from localoai.store import SQLiteStore

ROOT = Path(__file__).resolve().parents[1]

SERVE_AND_WAIT = """
import json, sys, time
import localoai
from localoai.testing import build_tiny_model

model, tokenizer = build_tiny_model()
server = localoai.start(model, tokenizer, port=0, store=sys.argv[1], name="crash")
client = server.client(max_retries=0)
ids = []
for i in range(5):
    reply = client.chat.completions.create(model="crash", messages=[{"role": "user", "content": f"turn {i}"}],
                                           max_tokens=4, store=i % 2 == 0, extra_body={"return_token_ids": True})
    ids.append([reply.id, reply.choices[0].model_extra["token_ids"]])
stream = client.chat.completions.create(model="crash", messages=[{"role": "user", "content": "s"}], max_tokens=3,
                                        stream=True)
ids.append([next(iter(stream)).id, None])
for _ in stream:
    pass
print(json.dumps(ids), flush=True)
time.sleep(600)  # killed long before this ends
"""


def test_completed_responses_survive_sigkill(tmp_path: Path) -> None:
    store_path = tmp_path / "runs" / "store.sqlite3"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    process = subprocess.Popen([sys.executable, "-c", SERVE_AND_WAIT, str(store_path)], env=env,
                               stdout=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline() if process.stdout else ""
        completed = json.loads(line)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL

    with SQLiteStore(store_path) as store:  # a new process would do the same: open the file
        for record_id, token_ids in completed:
            record = store.get(record_id)
            assert record is not None, f"{record_id} was lost in the crash"
            assert record.status == "completed"
            if token_ids is not None:
                assert record.completions[0]["completion_token_ids"] == token_ids
        assert store.count(visible=True) == 3
        assert store.count(kind="chat.completion") == 6
