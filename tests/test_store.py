"""The generation store on its own (no server): records, filters, pagination, bounds, threads, kills,
and the recorder that writes to it off the event loop."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from localoai.store import (
    CursorNotFound,
    GenerationRecord,
    Recorder,
    RecordFilter,
    RecordFilterArgs,
    SQLiteStore,
    Store,
    newest_run,
    open_store,
)
from localoai.store.recorder import MAX_BATCH

ROOT = Path(__file__).resolve().parents[1]


def make_record(i: int, **fields: Any) -> GenerationRecord:
    prompt = [(i * 7 + k) % 50_000 for k in range(20)]
    completion = [(i * 13 + k) % 50_000 for k in range(10)]
    defaults: dict[str, Any] = {
        "id": f"chatcmpl-{i:05d}",
        "kind": "chat.completion",
        "model": "tiny",
        "created_at": 1_700_000_000.0 + i,
        "request": {"model": "tiny", "messages": [{"role": "user", "content": f"question {i}"}]},
        "prompt_text": f"<|user|>question {i}<|assistant|>",
        "prompt_token_ids": prompt,
        "completions": [
            {
                "completion_token_ids": completion,
                "logprobs": [-0.1 * (k + 1) / 3 for k in range(len(completion))],
                "text": f"answer {i}",
                "finish_reason": "stop",
            }
        ],
        "output": {"id": f"chatcmpl-{i:05d}", "object": "chat.completion"},
        "sampling": {"temperature": 1.0, "max_tokens": 10},
        "timings": {"queued": 0.001, "first_token": 0.01, "total": 0.05},
    }
    defaults.update(fields)
    return GenerationRecord(**defaults)


@pytest.fixture(params=["file", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SQLiteStore]:
    spec = tmp_path / "store.sqlite3" if request.param == "file" else ":memory:"
    with SQLiteStore(spec, max_entries=None, max_bytes=None) as opened:
        yield opened


def ids(records: list[GenerationRecord]) -> list[str]:
    return [record.id for record in records]


# -- records ---------------------------------------------------------------------------------


def test_record_round_trip(store: SQLiteStore) -> None:
    record = make_record(
        1,
        status="incomplete",
        policy_version=3,
        prompt_text="héllo \U0001f600 \ud800",  # a lone surrogate must not break the write
        completions=[
            {"completion_token_ids": [5, 6], "logprobs": [-1 / 3, -1e-300], "text": "x", "finish_reason": "length"},
            {"completion_token_ids": [7], "logprobs": [-math.inf], "text": "", "finish_reason": None, "index": 1},
        ],
        error={"message": "boom", "type": "server_error"},
        metadata={"run": "a", "step": "12"},
        episode_id="ep-1",
        store_visible=True,
        previous_response_id="resp_0",
    )
    assert GenerationRecord.from_json(record.to_json()) == record
    store.put(record)
    loaded = store.get(record.id)
    assert loaded == record
    assert loaded is not None and loaded.completions[0]["logprobs"][0] == -1 / 3  # bit-exact
    assert store.get("missing") is None


def test_record_validation_and_forward_compatibility() -> None:
    with pytest.raises(ValueError, match="kind"):
        make_record(0, kind="image_generation")
    with pytest.raises(ValueError, match="status"):
        make_record(0, status="done")
    with pytest.raises(ValueError, match="logprobs"):
        sample = {"completion_token_ids": [1, 2], "logprobs": [-1.0], "text": "", "finish_reason": None}
        make_record(0, completions=[sample])
    data = json.loads(make_record(0).to_json()) | {"field_from_the_future": 1}
    assert GenerationRecord.from_dict(data) == make_record(0)


def test_put_replaces_and_keeps_its_place(store: SQLiteStore) -> None:
    for i in range(3):
        store.put(make_record(i, status="in_progress", metadata={"phase": "start"}))
    store.put(make_record(0, status="completed", metadata={"phase": "end"}))
    assert ids(store.list()) == ["chatcmpl-00002", "chatcmpl-00001", "chatcmpl-00000"]
    assert store.count() == 3
    assert store.count(status="completed") == 1
    assert store.count(metadata={"phase": "start"}) == 2  # the replaced record's old metadata is gone
    assert ids(store.list(metadata={"phase": "end"})) == ["chatcmpl-00000"]
    assert store.stats()["bytes"] == sum(len(r.to_json()) for r in store.iterate())



def test_put_many_writes_all_in_order_or_none(store: SQLiteStore) -> None:
    store.put_many([make_record(0), make_record(1, status="in_progress"), make_record(1, metadata={"run": "b"})])
    assert ids(store.list(order="asc")) == ["chatcmpl-00000", "chatcmpl-00001"]
    assert store.get("chatcmpl-00001") == make_record(1, metadata={"run": "b"})  # the later one replaced it
    unwritable = make_record(3, policy_version=2**70)  # SQLite refuses the integer mid-transaction
    with pytest.raises(OverflowError):
        store.put_many([make_record(2), unwritable])
    assert store.count() == 2 and store.get("chatcmpl-00002") is None  # rolled back with it
    assert store.stats()["failed_writes"] == 1

# -- listing -------------------------------------------------------------------------------------


def test_list_filters_and_order(store: SQLiteStore) -> None:
    for i in range(12):
        store.put(
            make_record(
                i,
                kind=("chat.completion", "text_completion", "response")[i % 3],
                model="a" if i < 6 else "b",
                status="failed" if i % 4 == 0 else "completed",
                episode_id=f"ep-{i // 4}",
            )
        )
    assert ids(store.list(limit=3)) == ["chatcmpl-00011", "chatcmpl-00010", "chatcmpl-00009"]
    assert ids(store.list(limit=3, order="asc")) == ["chatcmpl-00000", "chatcmpl-00001", "chatcmpl-00002"]
    assert ids(store.list(kind="response")) == ["chatcmpl-00011", "chatcmpl-00008", "chatcmpl-00005", "chatcmpl-00002"]
    assert ids(store.list(model="a", status="failed", order="asc")) == ["chatcmpl-00000", "chatcmpl-00004"]
    assert ids(store.list(episode_id="ep-2", kind="text_completion")) == ["chatcmpl-00010"]
    assert store.count(model="b") == 6 and store.count(status="failed") == 3 and store.count(kind="nothing") == 0
    assert store.list(limit=0) == []
    assert [r.id for r in store.iterate(episode_id="ep-1")] == [f"chatcmpl-{i:05d}" for i in range(4, 8)]
    assert [r.id for r in store.iterate(model="a", order="desc")][:2] == ["chatcmpl-00005", "chatcmpl-00004"]
    with pytest.raises(ValueError):
        store.list(order="newest")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        store.list(limit=-1)


@pytest.mark.parametrize("order", ["desc", "asc"])
@pytest.mark.parametrize("limit", [1, 7, 20, 50, 100])
def test_pagination_has_no_duplicates_or_gaps(store: SQLiteStore, order: str, limit: int) -> None:
    for i in range(50):
        store.put(make_record(i))
    expected = [f"chatcmpl-{i:05d}" for i in range(50)]
    if order == "desc":
        expected.reverse()
    assert ids(store.list(limit=100, order=order)) == expected  # type: ignore[arg-type]

    forward: list[str] = []
    after = None
    while True:  # as an OpenAI client pages: after = the last id of the page
        page = ids(store.list(after=after, limit=limit, order=order))  # type: ignore[arg-type]
        assert len(page) <= limit
        forward += page
        if len(page) < limit:
            break
        after = page[-1]
    assert forward == expected

    before = expected[-1]
    backward = [before]
    while True:  # and back: before = the first id of the page
        page = ids(store.list(before=before, limit=limit, order=order))  # type: ignore[arg-type]
        backward = page + backward
        if len(page) < limit:
            break
        before = page[0]
    assert backward == expected

    # Both cursors: the items strictly between them, the first `limit` from `after`'s side.
    between = store.list(after=expected[10], before=expected[30], limit=limit, order=order)  # type: ignore[arg-type]
    assert ids(between) == expected[11:30][:limit]


def test_unknown_cursor(store: SQLiteStore) -> None:
    store.put(make_record(0))
    with pytest.raises(CursorNotFound) as info:
        store.list(after="chatcmpl-gone")
    assert info.value.param == "after" and info.value.record_id == "chatcmpl-gone"
    with pytest.raises(CursorNotFound):
        store.iterate(before="chatcmpl-gone")  # raised at the call, not at the first next()


def test_metadata_filter(store: SQLiteStore) -> None:
    for i in range(20):
        odd = "v" if i == 7 else "w"
        store.put(make_record(i, metadata={"run": f"r{i % 2}", "step": str(i // 5), 'odd.key "x"': odd}))
    store.put(make_record(99))  # no metadata at all
    assert store.count(metadata={"run": "r1"}) == 10
    assert ids(store.list(metadata={"run": "r0", "step": "1"}, order="asc")) == ["chatcmpl-00006", "chatcmpl-00008"]
    assert ids(store.list(metadata={'odd.key "x"': "v"})) == ["chatcmpl-00007"]
    assert store.count(metadata={"run": "r0", "step": "9"}) == 0
    assert store.count(metadata={"missing": "r0"}) == 0
    assert store.count(metadata={}) == 21
    step_3 = [r.id for r in store.iterate(metadata={"step": "3"}, model="tiny")]
    assert step_3 == [f"chatcmpl-{i:05d}" for i in range(15, 20)]


def test_record_filter() -> None:
    assert set(RecordFilterArgs.__annotations__) == {f.name for f in dataclasses.fields(RecordFilter)}
    given = {"run": 1}
    where = RecordFilter(kind="response", visible=True, metadata=given)  # type: ignore[arg-type]
    given["run"] = 2  # the filter keeps its own copy, as strings
    assert where.metadata == {"run": "1"}
    assert RecordFilter(metadata={}) == RecordFilter() and RecordFilter().metadata is None
    assert hash(where) == hash(RecordFilter(kind="response", visible=True, metadata={"run": "1"}))
    with pytest.raises(dataclasses.FrozenInstanceError):
        where.kind = "chat.completion"  # type: ignore[misc]
    with pytest.raises(TypeError, match="visible"):
        RecordFilter(visible="false")  # type: ignore[arg-type]
    with SQLiteStore(":memory:") as store:
        store.put(make_record(0, kind="response", store_visible=True, metadata={"run": "1"}))
        assert store.count(**vars(where)) == 1  # a filter built once passes on as keywords
        with pytest.raises(TypeError, match="visble"):
            store.list(visble=True)  # type: ignore[call-arg]
        with pytest.raises(TypeError, match="visible"):
            store.count(visible=1)  # type: ignore[arg-type]


def test_visible_filter(store: SQLiteStore, tmp_path: Path) -> None:
    for i in range(30):
        kind = "chat.completion" if i % 2 else "response"
        store.put(make_record(i, kind=kind, store_visible=i % 3 == 0, metadata={"run": f"r{i % 5}"}))
    visible = [f"chatcmpl-{i:05d}" for i in range(30) if i % 3 == 0]
    hidden = [f"chatcmpl-{i:05d}" for i in range(30) if i % 3 != 0]
    assert ids(store.list(visible=True, limit=100, order="asc")) == visible
    assert ids(store.list(visible=False, limit=100, order="asc")) == hidden
    assert ids(store.list(visible=None, limit=100, order="asc")) == sorted(visible + hidden)
    assert store.count(visible=True) == 10 and store.count(visible=False) == 20 and store.count() == 30
    assert [r.id for r in store.iterate(visible=True, order="desc")] == visible[::-1]
    assert all(r.store_visible for r in store.iterate(visible=True))
    # Combined with the other filters, as GET /v1/chat/completions lists.
    chat_visible = ids(store.list(kind="chat.completion", visible=True, limit=100, order="asc"))
    assert chat_visible == ["chatcmpl-00003", "chatcmpl-00009", "chatcmpl-00015", "chatcmpl-00021", "chatcmpl-00027"]
    assert store.count(kind="chat.completion", visible=True) == 5
    assert ids(store.list(kind="response", visible=True, metadata={"run": "r0"})) == ["chatcmpl-00000"]
    hidden_chat = ids(store.list(kind="chat.completion", visible=False, metadata={"run": "r0"}))
    assert hidden_chat == ["chatcmpl-00025", "chatcmpl-00005"]

    out = tmp_path / "visible.jsonl"
    assert store.export_jsonl(out, visible=True) == 10
    assert [GenerationRecord.from_json(line).id for line in out.read_text().splitlines()] == visible
    assert store.export_jsonl(out, visible=False, kind="response", order="desc") == 10

    # Replacing a record moves it between the two sets, in place.
    store.put(make_record(1, kind="chat.completion", store_visible=True, metadata={"run": "r1"}))
    assert ids(store.list(visible=True, limit=2, order="asc")) == ["chatcmpl-00000", "chatcmpl-00001"]
    assert store.count(visible=True) == 11 and store.count(visible=False) == 19


@pytest.mark.parametrize("order", ["desc", "asc"])
@pytest.mark.parametrize("limit", [1, 3, 7, 40])
def test_pagination_with_visible_filter(store: SQLiteStore, order: str, limit: int) -> None:
    for i in range(40):  # hidden records between the visible ones, and a run of hidden at each end
        store.put(make_record(i, store_visible=i % 4 == 1 and 2 < i < 37))
    expected = [f"chatcmpl-{i:05d}" for i in range(40) if i % 4 == 1 and 2 < i < 37]
    if order == "desc":
        expected.reverse()
    forward: list[str] = []
    after = None
    while True:
        page = ids(store.list(visible=True, kind="chat.completion", after=after, limit=limit, order=order))  # type: ignore[arg-type]
        forward += page
        if len(page) < limit:
            break
        after = page[-1]
    assert forward == expected
    before = expected[-1]
    backward = [before]
    while True:
        page = ids(store.list(visible=True, before=before, limit=limit, order=order))  # type: ignore[arg-type]
        backward = page + backward
        if len(page) < limit:
            break
        before = page[0]
    assert backward == expected
    # A cursor may be a record the filter excludes: the page starts from its place.
    hidden = "chatcmpl-00020"
    after_hidden = ids(store.list(visible=True, after=hidden, limit=100, order=order))  # type: ignore[arg-type]
    assert after_hidden == [i for i in expected if (i > hidden if order == "asc" else i < hidden)]
    assert [r.id for r in store.iterate(visible=True, after=expected[0], order=order)] == expected[1:]  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("where", "index"),
    [
        (RecordFilter(visible=True), "generations_visible"),
        (RecordFilter(visible=False), "generations_visible"),
        (RecordFilter(visible=True, kind="chat.completion"), "generations_visible_kind"),
    ],
)
def test_visible_listings_walk_an_index_in_order(where: RecordFilter, index: str) -> None:
    """A page reads ~`limit` rows, never sorts every match (which would read every record's JSON)."""
    from localoai.store.generations import filters as _filters

    with SQLiteStore(":memory:") as store:
        clauses, params = _filters(where)
        sql = f"SELECT record FROM generations WHERE {' AND '.join(clauses)} ORDER BY seq DESC LIMIT 20"
        plan = " ".join(row[-1] for row in store._db._connection().execute(f"EXPLAIN QUERY PLAN {sql}", params))
    assert f"INDEX {index} (" in plan and "TEMP B-TREE" not in plan, plan


def test_delete(store: SQLiteStore) -> None:
    for i in range(5):
        store.put(make_record(i, metadata={"k": "v"}))
    assert store.delete("chatcmpl-00002") is True
    assert store.delete("chatcmpl-00002") is False
    assert store.get("chatcmpl-00002") is None
    assert store.count() == 4 and store.count(metadata={"k": "v"}) == 4
    assert ids(store.list(order="asc")) == ["chatcmpl-00000", "chatcmpl-00001", "chatcmpl-00003", "chatcmpl-00004"]
    assert store.stats()["bytes"] == sum(len(make_record(i, metadata={"k": "v"}).to_json()) for i in (0, 1, 3, 4))
    assert store.evicted == 0  # a delete is not an eviction


def test_iterate_streams_in_batches_while_writing(store: SQLiteStore) -> None:
    for i in range(600):  # more than two batches
        store.put(make_record(i))
    seen = []
    for record in store.iterate():
        seen.append(record.id)
        if len(seen) == 10:
            store.put(make_record(600))  # writing mid-iteration neither deadlocks nor fails
    assert seen == [f"chatcmpl-{i:05d}" for i in range(601)]
    assert len(list(store.iterate(order="desc", after="chatcmpl-00300"))) == 300


# -- bounds ----------------------------------------------------------------------------------------


def test_eviction_by_entries(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "bounded.sqlite3"
    with caplog.at_level(logging.DEBUG, logger="localoai.store"), SQLiteStore(path, max_entries=10) as store:
        for i in range(25):
            store.put(make_record(i))
        assert store.count() == 10
        assert ids(store.list(order="asc", limit=100)) == [f"chatcmpl-{i:05d}" for i in range(15, 25)]
        assert store.evicted == 15 and store.stats()["evicted"] == 15
        assert store.stats()["bytes"] == sum(len(make_record(i).to_json()) for i in range(15, 25))
    warnings = [r for r in caplog.records if r.name == "localoai.store" and r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "evicting" in warnings[0].getMessage()
    # The count lives in the file; lower limits on reopening apply at once.
    with SQLiteStore(path, max_entries=4) as store:
        assert store.count() == 4 and store.evicted == 21
        assert ids(store.list(limit=1)) == ["chatcmpl-00024"]


def test_eviction_by_bytes() -> None:
    size = len(make_record(0).to_json())
    with SQLiteStore(":memory:", max_entries=None, max_bytes=int(size * 5.5)) as store:
        for i in range(20):
            store.put(make_record(i))
            stats = store.stats()
            assert stats["bytes"] <= size * 5.5
        assert stats == {**stats, "entries": 5, "evicted": 15}
        assert store.get("chatcmpl-00014") is None and store.get("chatcmpl-00015") is not None
        # A record larger than the whole budget evicts everything else but is kept itself.
        big = make_record(100, prompt_text="x" * size * 10)
        store.put(big)
        assert ids(store.list()) == [big.id] and store.evicted == 20
        # Growing an old record past the budget evicts the others, never the record written.
        store.put(make_record(101))
        store.put(make_record(102))
        store.put(make_record(101, prompt_text="y" * size * 6))
        assert store.get("chatcmpl-00101") is not None and store.count() == 1


def test_limits_are_checked() -> None:
    with pytest.raises(ValueError):
        SQLiteStore(":memory:", max_entries=0)
    with pytest.raises(ValueError):
        SQLiteStore(":memory:", max_bytes=-1)


# -- schema ------------------------------------------------------------------------------------------


def test_schema_version(tmp_path: Path) -> None:
    path = tmp_path / "new.sqlite3"
    SQLiteStore(path).close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 2
        columns = {row[1] for row in conn.execute("PRAGMA table_info(generations)")}
        indexes = {row[1] for row in conn.execute("PRAGMA index_list(generations)")}
    conn.close()
    assert "visible" in columns and {"generations_visible", "generations_visible_kind"} <= indexes
    with SQLiteStore(path) as store:  # reopening a current file is fine
        assert store.count() == 0


@pytest.mark.parametrize("version", [1, 3])
def test_other_schema_versions_are_refused(tmp_path: Path, version: int) -> None:
    path = tmp_path / f"v{version}.sqlite3"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE generations (seq INTEGER PRIMARY KEY, id TEXT)")  # as version 1 had, roughly
    conn.execute(f"PRAGMA user_version = {version}")
    conn.commit()
    conn.close()
    with pytest.raises(RuntimeError, match=f"schema version {version}; this localoai reads only version 2"):
        SQLiteStore(path)
    with sqlite3.connect(path) as conn:  # untouched
        assert conn.execute("PRAGMA user_version").fetchone()[0] == version
    conn.close()


# -- export ----------------------------------------------------------------------------------------


def test_export_jsonl(store: SQLiteStore, tmp_path: Path) -> None:
    for i in range(300):
        store.put(make_record(i, status="completed" if i % 3 else "failed", metadata={"run": "x"}))
    out = tmp_path / "exports" / "all.jsonl"
    assert store.export_jsonl(out) == 300
    lines = out.read_text(encoding="utf-8").splitlines()
    assert [GenerationRecord.from_json(line) for line in lines] == list(store.iterate())
    assert store.export_jsonl(out, status="failed", metadata={"run": "x"}, order="desc") == 100
    first = GenerationRecord.from_json(out.read_text(encoding="utf-8").splitlines()[0])
    assert first.id == "chatcmpl-00297" and first.status == "failed"
    assert store.export_jsonl(out, model="nobody") == 0 and out.read_text() == ""
    assert [p.name for p in out.parent.iterdir()] == ["all.jsonl"]  # no temporary file left


# -- threads and processes ---------------------------------------------------------------------------


def _write_concurrently(stores: list[SQLiteStore], threads: int, per_thread: int) -> None:
    errors: list[BaseException] = []
    start = threading.Barrier(threads)

    def writer(t: int) -> None:
        try:
            start.wait()
            target = stores[t % len(stores)]
            for k in range(per_thread):
                target.put(make_record(t * 1000 + k, metadata={"thread": str(t)}))
                if k % 10 == 0:
                    target.list(limit=5)
                    target.get(f"chatcmpl-{t * 1000:05d}")
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    workers = [threading.Thread(target=writer, args=(t,)) for t in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert errors == []


def test_32_concurrent_writers(store: SQLiteStore) -> None:
    _write_concurrently([store], threads=32, per_thread=50)
    assert store.count() == 1600
    assert len({r.id for r in store.iterate()}) == 1600
    assert all(store.count(metadata={"thread": str(t)}) == 50 for t in range(32))


def test_32_concurrent_writers_bounded(tmp_path: Path) -> None:
    with SQLiteStore(tmp_path / "s.sqlite3", max_entries=500) as store:
        _write_concurrently([store], threads=32, per_thread=50)
        assert store.count() == 500 and store.evicted == 1100
        assert len(list(store.iterate())) == 500


def test_two_connections_to_one_file(tmp_path: Path) -> None:
    """Two stores on one file (as two processes would be) wait on each other's write lock."""
    path = tmp_path / "shared.sqlite3"
    with SQLiteStore(path, max_entries=None) as one, SQLiteStore(path, max_entries=None) as two:
        _write_concurrently([one, two], threads=16, per_thread=30)
        assert one.count() == two.count() == 480


def test_a_killed_process_loses_no_completed_write(tmp_path: Path) -> None:
    path = tmp_path / "killed.sqlite3"
    script = (
        "import sys, time\n"
        "from localoai.store import SQLiteStore\n"
        f"sys.path.insert(0, {str(ROOT / 'tests')!r})\n"
        "from test_store import make_record\n"
        f"store = SQLiteStore({str(path)!r})\n"
        "for i in range(100):\n"
        "    store.put(make_record(i, metadata={'i': str(i)}))\n"
        "print('done', flush=True)\n"
        "time.sleep(60)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, env=env, text=True)
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "done"
        child.send_signal(signal.SIGKILL)
        assert child.wait(timeout=10) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert Path(f"{path}-wal").exists()  # the records are in the WAL, not yet checkpointed
    with SQLiteStore(path) as store:
        assert store.count() == 100
        assert store.stats()["entries"] == 100
        for i in range(100):
            assert store.get(f"chatcmpl-{i:05d}") == make_record(i, metadata={"i": str(i)})


# -- open_store ----------------------------------------------------------------------------------------


def test_open_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    default = open_store(None)
    assert isinstance(default, SQLiteStore) and isinstance(default, Store)
    # A new file per call (per server start): runs never read each other's records by default.
    assert default.path is not None and default.path.parent == Path("localoai-store") and default.path.exists()
    assert default.path.name.startswith("run-") and newest_run() == default.path
    assert open_store(default) is default
    default.close()
    default.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        default.get("x")

    memory = open_store(":memory:", max_entries=3)
    assert isinstance(memory, SQLiteStore) and memory.path is None and memory.max_entries == 3
    other = open_store(":memory:")
    memory.put(make_record(1))
    assert other.count() == 0  # every in-memory store is its own database
    nested = open_store(tmp_path / "a" / "b" / "c.sqlite3")
    assert (tmp_path / "a" / "b" / "c.sqlite3").exists()
    with pytest.raises(TypeError):
        open_store(memory, max_entries=1)
    with pytest.raises(TypeError):
        open_store(42)  # type: ignore[arg-type]
    for opened in (memory, other, nested):
        opened.close()


# -- recorder ----------------------------------------------------------------------------------------


class FlakyStore(SQLiteStore):
    """Fails the first `fails` writes, as a transient error (a full disk freed, a lock timeout) would.
    (`put` is `put_many` of one record: every write passes here.)"""

    def __init__(self, *args: Any, fails: int = 1, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fails = fails
        self.attempts: list[list[str]] = []

    def put_many(self, records: Sequence[GenerationRecord]) -> None:
        self.attempts.append([record.id for record in records])
        if self.fails > 0:
            self.fails -= 1
            raise sqlite3.OperationalError("disk I/O error")
        super().put_many(records)


class GatedStore(SQLiteStore):
    """Each write waits for `gate`: a store stuck behind another process's write lock."""

    def __init__(self, *args: Any, open_gate: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.gate = threading.Event()
        if open_gate:
            self.gate.set()
        self.writing = threading.Event()
        """Set once a write waits at the gate."""
        self.writes: list[int] = []
        """How many records each write that succeeded had."""

    def put_many(self, records: Sequence[GenerationRecord]) -> None:
        self.writing.set()
        assert self.gate.wait(10)
        super().put_many(records)
        self.writes.append(len(records))


class PoisonStore(GatedStore):
    """Always fails a write with a record whose metadata says so; writes every other record (the
    gate is open unless `open_gate=False`)."""

    def __init__(self, *args: Any, open_gate: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, open_gate=open_gate, **kwargs)

    def put_many(self, records: Sequence[GenerationRecord]) -> None:
        poisoned = [record.id for record in records if record.metadata.get("poison")]
        if poisoned:
            raise ValueError(f"cannot store {', '.join(poisoned)}")
        super().put_many(records)


@pytest.fixture
def recorders() -> Iterator[list[Recorder]]:
    """Recorders a test makes, closed afterwards even when it fails."""
    made: list[Recorder] = []
    yield made
    for recorder in made:
        recorder.close(timeout=5)


def recorder_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name == "localoai-recorder"]


def test_recorder_writes_from_many_threads(store: SQLiteStore, recorders: list[Recorder]) -> None:
    recorder = Recorder(store)
    recorders.append(recorder)
    assert isinstance(recorder.store, Store)
    thread = recorder._thread
    assert thread.name == "localoai-recorder" and thread.daemon and thread.is_alive()
    start = threading.Barrier(8)

    def produce(t: int) -> None:
        start.wait()
        for k in range(125):
            recorder.record(make_record(t * 1000 + k, metadata={"thread": str(t)}))

    producers = [threading.Thread(target=produce, args=(t,)) for t in range(8)]
    for producer in producers:
        producer.start()
    for producer in producers:
        producer.join()
    assert recorder.flush() is True
    assert store.count() == 1000 and recorder.pending == 0 and recorder.failed == 0
    assert all(store.count(metadata={"thread": str(t)}) == 125 for t in range(8))
    assert store.get("chatcmpl-07124") == make_record(7124, metadata={"thread": "7"})
    assert recorder.flush() is True  # nothing queued: at once


def test_recorder_keeps_the_order_of_records(store: SQLiteStore, recorders: list[Recorder]) -> None:
    recorder = Recorder(store)
    recorders.append(recorder)
    recorder.record(make_record(1, status="in_progress"))
    recorder.record(make_record(2))
    recorder.record(make_record(1, status="completed", store_visible=True))  # replaces, keeps its place
    assert recorder.flush()
    assert ids(store.list(order="asc")) == ["chatcmpl-00001", "chatcmpl-00002"]
    assert ids(store.list(status="completed", visible=True)) == ["chatcmpl-00001"]


def test_recorder_close(caplog: pytest.LogCaptureFixture) -> None:
    with SQLiteStore(":memory:") as store:
        recorder = Recorder(store)
        thread = recorder._thread
        for i in range(50):
            recorder.record(make_record(i))
        assert recorder.close() is True  # flushes first
        assert store.count() == 50 and not thread.is_alive()
        assert recorder.close() is True and recorder.close(timeout=0) is True  # idempotent
        assert recorder.flush() is True
        with caplog.at_level(logging.DEBUG, logger="localoai.store"):
            recorder.record(make_record(50))  # written here, on this thread
        assert store.get("chatcmpl-00050") == make_record(50)
        assert any("closed" in r.getMessage() and r.levelno == logging.DEBUG for r in caplog.records)
        assert recorder.failed == 0


def test_recorder_never_blocks_and_flush_times_out(tmp_path: Path, recorders: list[Recorder]) -> None:
    with GatedStore(tmp_path / "gated.sqlite3") as store:
        recorder = Recorder(store)
        recorders.append(recorder)
        start = time.perf_counter()
        for i in range(100):
            recorder.record(make_record(i))
        assert time.perf_counter() - start < 1.0  # the store is stuck, the caller is not
        assert recorder.flush(timeout=0.05) is False
        assert recorder.pending > 0 and store.count() == 0
        store.gate.set()
        assert recorder.flush(timeout=10) is True
        assert store.count() == 100 and recorder.pending == 0
        recorder.close()


def test_recorder_close_times_out_and_keeps_writing(
    tmp_path: Path, recorders: list[Recorder], caplog: pytest.LogCaptureFixture
) -> None:
    with GatedStore(tmp_path / "gated.sqlite3") as store:
        recorder = Recorder(store)
        recorders.append(recorder)
        for i in range(10):
            recorder.record(make_record(i))
        with caplog.at_level(logging.WARNING, logger="localoai.store"):
            assert recorder.close(timeout=0.05) is False
        assert any("still queued" in r.getMessage() for r in caplog.records)
        store.gate.set()
        assert recorder.close(timeout=10) is True
        assert store.count() == 10


def test_recorder_retries_a_failed_write(
    tmp_path: Path, recorders: list[Recorder], caplog: pytest.LogCaptureFixture
) -> None:
    with FlakyStore(tmp_path / "flaky.sqlite3", fails=1) as store:
        recorder = Recorder(store)
        recorders.append(recorder)
        with caplog.at_level(logging.WARNING, logger="localoai.store"):
            recorder.record(make_record(1))
            assert recorder.flush()
            recorder.record(make_record(2))
            assert recorder.flush()
        assert store.attempts == [["chatcmpl-00001"], ["chatcmpl-00001"], ["chatcmpl-00002"]]
        assert ids(store.list(order="asc")) == ["chatcmpl-00001", "chatcmpl-00002"]
        assert recorder.failed == 0
        assert [r.levelno for r in caplog.records if r.name == "localoai.store"] == [logging.WARNING]


def test_recorder_counts_a_record_it_cannot_write(
    tmp_path: Path, recorders: list[Recorder], caplog: pytest.LogCaptureFixture
) -> None:
    with PoisonStore(tmp_path / "poison.sqlite3") as poisoned:
        recorder = Recorder(poisoned)
        recorders.append(recorder)
        with caplog.at_level(logging.WARNING, logger="localoai.store"):
            recorder.record(make_record(1, metadata={"poison": "yes"}))
            recorder.record(make_record(2))  # after the failure: the thread is still writing
            assert recorder.flush()
        assert recorder.failed == 1
        assert recorder._thread.is_alive() and recorder_threads()
        assert ids(poisoned.list()) == ["chatcmpl-00002"]
        errors = [r for r in caplog.records if r.levelno == logging.ERROR]
        assert len(errors) == 1 and "chatcmpl-00001" in errors[0].getMessage()
        assert errors[0].exc_info is not None and errors[0].exc_info[0] is ValueError
        recorder.close()
        # After close, the same rules apply to the synchronous writes: counted, never raised.
        recorder.record(make_record(3, metadata={"poison": "yes"}))
        recorder.record(make_record(4))
        assert recorder.failed == 2 and poisoned.count() == 2


def test_recorder_writes_what_queued_meanwhile_in_one_transaction(tmp_path: Path, recorders: list[Recorder]) -> None:
    with GatedStore(tmp_path / "gated.sqlite3") as store:
        recorder = Recorder(store)
        recorders.append(recorder)
        first = recorder.record(make_record(0))
        assert store.writing.wait(5)  # the first write holds the thread; the burst queues behind it
        burst = [recorder.record(make_record(i)) for i in range(1, 101)]
        store.gate.set()
        assert first.result(timeout=10) is True and all(written.result(timeout=10) is True for written in burst)
        assert store.writes == [1, MAX_BATCH, 100 - MAX_BATCH]
        assert ids(store.list(order="asc", limit=200)) == [f"chatcmpl-{i:05d}" for i in range(101)]


@settings(max_examples=40, deadline=None, database=None)
@given(st.lists(st.tuples(st.integers(0, 6), st.booleans(), st.sampled_from(["in_progress", "completed"])),
                min_size=1, max_size=80))
def test_a_refused_record_costs_no_other_record_of_its_batch(writes: list[tuple[int, bool, str]]) -> None:
    """Records queued behind a held write go in batches; a batch with a record the store refuses is
    written record by record: the store ends as if each record had been put alone, in order."""
    with PoisonStore(":memory:", open_gate=False) as store:
        recorder = Recorder(store)
        try:
            recorder.record(make_record(99))
            assert store.writing.wait(5)
            futures = [recorder.record(make_record(i, status=status, metadata={"poison": "yes"} if poison else {}))
                       for i, poison, status in writes]
            store.gate.set()
            assert [future.result(timeout=10) for future in futures] == [not poison for _, poison, _ in writes]
            assert recorder.failed == sum(poison for _, poison, _ in writes)
        finally:
            recorder.close()
        expected: dict[str, str] = {make_record(99).id: "completed"}  # in the order of each id's first write
        for i, poison, status in writes:
            if not poison:
                expected[make_record(i).id] = status
        stored = store.list(order="asc", limit=100)
        assert [(record.id, record.status) for record in stored] == list(expected.items())


def test_recorder_survives_a_waiter_that_went_away() -> None:
    """A client that disconnects while its handler awaits the write cancels the future; the record is
    still written and the writer thread lives on."""
    from localoai.store import GenerationRecord, Recorder, SQLiteStore

    store = SQLiteStore(":memory:")
    recorder = Recorder(store)
    gate = threading.Event()
    original_put_many = store.put_many

    def slow_put_many(records: Sequence[GenerationRecord]) -> None:
        gate.wait(5)
        original_put_many(records)

    store.put_many = slow_put_many  # type: ignore[method-assign]
    first = recorder.record(GenerationRecord(id="held", kind="chat.completion", model="m"))
    abandoned = recorder.record(GenerationRecord(id="abandoned", kind="chat.completion", model="m"))
    assert abandoned.cancel()  # the waiter went away before its turn came
    gate.set()
    assert first.result(timeout=5) is True
    assert recorder.flush(timeout=5)
    later = recorder.record(GenerationRecord(id="later", kind="chat.completion", model="m"))
    assert later.result(timeout=5) is True
    assert store.get("abandoned") is not None and store.get("later") is not None
    assert recorder.failed == 0
    recorder.close()


def test_search_pages_both_ways_and_the_change_marker_follows_writes(store: SQLiteStore) -> None:
    """The inspector's query API (`RecordSearch`): a page of what matches, in either order, with the total."""
    from localoai.store import EpisodeStore, ListQuery, RecordSearch, RecordStore

    assert all(isinstance(store, part) for part in (RecordStore, EpisodeStore, RecordSearch, Store))
    marker = store.change_marker()
    for i in range(10):
        store.put(make_record(i, status="failed" if i % 3 == 0 else "completed", policy_version=i // 5))
    assert store.change_marker() != marker
    rows, total = store.search(ListQuery(status="failed"), offset=1, limit=2)
    assert total == 4 and [r.id for r in rows] == ["chatcmpl-00006", "chatcmpl-00003"]
    rows, total = store.search(ListQuery(policy_version=1, text="ANSWER"), limit=3, order="asc")
    assert total == 5 and [r.id for r in rows] == ["chatcmpl-00005", "chatcmpl-00006", "chatcmpl-00007"]
    assert store.search(ListQuery(), offset=8, limit=5)[1] == 10 and len(store.search(ListQuery(), offset=8)[0]) == 2
    with pytest.raises(ValueError, match="order"):
        store.search(ListQuery(), order="newest")  # type: ignore[arg-type]
