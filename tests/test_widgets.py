"""The inspector without a browser: paging and filters over a real store, the widget's state,
live updates, static export, and `server.inspect()` on a live server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("ipywidgets")

import localoai  # noqa: E402
from localoai.testing import wait_until  # noqa: E402
from localoai.store import GenerationRecord, SQLiteStore  # noqa: E402
from localoai.widgets.data import ListQuery, StoreReader  # noqa: E402
from localoai.widgets.inspector import Inspector  # noqa: E402


def record(i: int, **fields: Any) -> GenerationRecord:
    """Chat completions; every third calls a tool, every fifth failed, episodes of two."""
    tool = i % 3 == 0
    message: dict[str, Any] = {"role": "assistant", "content": None if tool else f"answer {i} ünïcode \"q\""}
    if tool:
        message["tool_calls"] = [{"id": f"call_{i}", "type": "function",
                                  "function": {"name": "lookup" if i % 2 else "get_weather",
                                               "arguments": json.dumps({"n": i})}}]
    values: dict[str, Any] = {
        "id": f"chatcmpl-{i:04d}",
        "kind": "chat.completion",
        "model": "m",
        "created_at": 1_000_000 + i,
        "status": "failed" if i % 5 == 4 else "completed",
        "policy_version": i // 10,
        "episode_id": f"ep-{i // 2}",
        "request": {"messages": [{"role": "user", "content": f"question {i}"}]},
        "prompt_text": f"<user>question {i}</user>",
        "prompt_token_ids": [1, 2, i],
        "completions": [{"completion_token_ids": [3, 4], "logprobs": [-0.5, -1.5],
                         "text": message["content"] or "<tool_call>", "finish_reason": "stop"}],
        "output": {"choices": [{"index": 0, "message": message}]},
        "group_id": f"g{i // 4}",
    }
    values.update(fields)
    return GenerationRecord(**values)


class PlainStore:
    """A `Store` that is not a `SQLiteStore`: the inspector must fall back to scanning it."""

    def __init__(self, inner: SQLiteStore) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteStore]:
    with SQLiteStore(tmp_path / "store.sqlite3") as opened:
        for i in range(60):
            opened.put(record(i))
        yield opened


QUERIES = [
    ListQuery(),
    ListQuery(status="failed"),
    ListQuery(kind="response"),
    ListQuery(episode_id="ep-7"),
    ListQuery(policy_version=2),
    ListQuery(tool="get_weather"),
    ListQuery(tool="lookup", status="completed"),
    ListQuery(text="QUESTION 1"),
    ListQuery(text='ünïcode "q'),
    ListQuery(text="chatcmpl-003"),
    ListQuery(group_id="g3"),
    ListQuery(text="nothing like this"),
]


def expected(query: ListQuery) -> list[str]:
    """The filter spelled out by hand over the generator above, newest first."""
    ids = []
    for i in reversed(range(60)):
        tool = ("lookup" if i % 2 else "get_weather") if i % 3 == 0 else None
        status = "failed" if i % 5 == 4 else "completed"
        answer = "" if tool else f"answer {i} ünïcode \"q\""
        text = f"question {i} <user>question {i}</user> chatcmpl-{i:04d} {answer}"
        if ((not query.status or status == query.status) and (not query.kind or query.kind == "chat.completion")
                and (not query.episode_id or query.episode_id == f"ep-{i // 2}")
                and (query.policy_version is None or query.policy_version == i // 10)
                and (not query.tool or query.tool == tool) and (not query.text or query.text.lower() in text.lower())
                and (not query.group_id or query.group_id == f"g{i // 4}")):
            ids.append(f"chatcmpl-{i:04d}")
    return ids


@pytest.mark.parametrize("query", QUERIES, ids=repr)
@pytest.mark.parametrize("plain", [False, True], ids=["sql", "scan"])
def test_filters_and_pages(store: SQLiteStore, query: ListQuery, plain: bool) -> None:
    reader = StoreReader(PlainStore(store) if plain else store)  # type: ignore[arg-type]
    want = expected(query)
    seen: list[str] = []
    offset = 0
    while True:
        page = reader.page(query, offset, limit=7)
        assert page.total == len(want)
        seen += [row.id for row in page.rows]
        if offset + 7 >= page.total:
            break
        offset += 7
    assert seen == want
    assert reader.page(query, offset=10_000, limit=7).rows == []


def test_episode_group_chain_reward_and_previous_turn(store: SQLiteStore) -> None:
    reader = StoreReader(store)
    assert [r.id for r in reader.episode("ep-3")] == ["chatcmpl-0006", "chatcmpl-0007"]
    assert sorted(reader.group("g1")) == ["ep-2", "ep-3"]
    assert reader.previous_turn(store.get("chatcmpl-0007")).id == "chatcmpl-0006"  # type: ignore[arg-type,union-attr]
    store.put(record(100, id="resp_a", kind="response", output={}, episode_id=None))
    store.put(record(101, id="resp_b", kind="response", output={}, episode_id=None, previous_response_id="resp_a"))
    assert [r.id for r in reader.chain(store.get("resp_b"))] == ["resp_a", "resp_b"]  # type: ignore[arg-type]
    assert reader.reward("ep-3") is None
    store.set_reward("ep-3", 0.5, judge="exact match")
    assert reader.reward("ep-3") == 0.5 and reader.reward("ep-2") is None and reader.reward(None) is None


def test_widget_lists_filters_pages_and_opens_views(store: SQLiteStore) -> None:
    inspector = Inspector(store, live=False, page_size=10)
    assert len(inspector.listing.options) == 10 and inspector.listing.options[0][1] == "chatcmpl-0059"
    assert "60 generations" in inspector.heading.value and "page 1 of 6" in inspector.heading.value
    assert inspector.previous_button.disabled and not inspector.next_button.disabled
    inspector.next_button.click()
    assert inspector.listing.options[0][1] == "chatcmpl-0049"
    inspector.tool_filter.value = "get_weather"
    assert inspector.offset == 0 and [v for _, v in inspector.listing.options][:2] == ["chatcmpl-0054", "chatcmpl-0048"]
    inspector.listing.value = "chatcmpl-0054"
    episode = inspector.views[0].value
    assert "get_weather" in episode and "&quot;n&quot;: 54" in episode and "2 generations in this episode" in episode
    inspector.tabs.selected_index = 1
    assert "sample 0" in inspector.views[1].value and "logprob -0.5000" in inspector.views[1].value
    inspector.tabs.selected_index = 2
    assert "group <code>g13</code>" in inspector.views[2].value
    inspector.tabs.selected_index = 3
    assert "rendered prompt" in inspector.views[3].value
    inspector.policy_filter.value = "v5"
    assert [v for _, v in inspector.listing.options] == ["chatcmpl-0054"]
    assert inspector.listing.value == "chatcmpl-0054"  # the selection survives a refresh that keeps it
    inspector.policy_filter.value = ""
    inspector.tool_filter.value = ""
    inspector.group_filter.value = "g2"
    assert [v for _, v in inspector.listing.options] == ["chatcmpl-0011", "chatcmpl-0010", "chatcmpl-0009",
                                                         "chatcmpl-0008"]
    inspector.search.value = "no such text"
    assert inspector.listing.options == () and "0 generations" in inspector.heading.value
    inspector.close()


def test_live_inspector_follows_new_records(store: SQLiteStore) -> None:
    inspector = Inspector(store, live=True, poll_interval=0.05)
    try:
        assert "live" in inspector.heading.value
        store.put(record(60))
        wait_until(lambda: inspector.listing.options[0][1] == "chatcmpl-0060", timeout=30,
                   message="the inspector did not pick up the new record")
        assert "61 generations" in inspector.heading.value
        # What the front end reports: displayed once, then every view removed (the cell ran again).
        inspector._view_count = 1
        inspector._view_count = 0
        inspector._poller.join(30)  # type: ignore[union-attr]
        assert not inspector._poller.is_alive()  # type: ignore[union-attr]
        inspector._view_count = 1  # shown again: it follows the store again
        assert inspector._poller.is_alive()  # type: ignore[union-attr]
    finally:
        inspector.close()
    assert inspector._poller is None


def test_static_export_shows_the_list_and_the_open_view(store: SQLiteStore, tmp_path: Path) -> None:
    from ipywidgets.embed import embed_minimal_html

    inspector = Inspector(store, live=False)
    inspector.show("chatcmpl-0058")
    page = tmp_path / "inspector.html"
    embed_minimal_html(page, views=[inspector], title="inspector")
    html = page.read_text()
    assert "chatcmpl-0058" in html and "answer 58" in html
    bundle = inspector._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert "chatcmpl-0059" in bundle["text/html"] and "answer 58" in bundle["text/html"]
    inspector.close()


def test_inspect_a_saved_store_by_path(store: SQLiteStore, tmp_path: Path) -> None:
    inspector = localoai.inspect(tmp_path / "store.sqlite3", live=False)
    assert len(inspector.listing.options) == 25
    inspector.close()
    inspector.reader.store.close()
    with pytest.raises(FileNotFoundError):
        localoai.inspect(tmp_path / "missing.sqlite3")


def test_server_inspect_shows_its_requests_with_token_texts(server: Any) -> None:
    client = server.client(max_retries=0)
    reply = client.chat.completions.create(model=server.model, messages=[{"role": "user", "content": "inspect me"}],
                                           max_tokens=4, logprobs=True, top_logprobs=2)
    inspector = server.inspect(widget=True, live=False)
    assert reply.id in [value for _, value in inspector.listing.options]
    inspector.show(reply.id)
    assert "inspect me" in inspector.views[0].value
    inspector.tabs.selected_index = 1
    tokens = inspector.views[1].value
    assert "entropy" in tokens and "top: " in tokens and "&lt;|im_start|&gt;" in tokens  # prompt decoded to text
    inspector.close()
