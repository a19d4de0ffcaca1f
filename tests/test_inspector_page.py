"""The inspector page the server serves at `/ui/` and its JSON API, over real HTTP on a live server;
runs kept apart by the default store; the plots and the previous-turn rule on real stores.
(The page in a real browser, with a busy kernel, is `test_inspector_browser.py`.)"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import httpx
import pytest

import localoai
from localoai.store import SQLiteStore
from localoai.store.episodes import StoredEpisode
from localoai.store.records import GenerationRecord
from localoai.testing import running_server, wait_until
from localoai.widgets import plots
from localoai.widgets.data import StoreReader
from localoai.widgets.views import RecordViews

MESSAGES = [{"role": "user", "content": "show me in the inspector"}]


def stored(server: Any, record_id: str) -> None:
    wait_until(lambda: server.store.get(record_id) is not None, message=f"{record_id} was not stored")


def test_page_lists_records_and_serves_their_views(server: Any) -> None:
    client = server.client(max_retries=0)
    chat = client.chat.completions.create(model=server.model, messages=MESSAGES, max_tokens=4, logprobs=True,
                                          top_logprobs=2)
    stored(server, chat.id)
    page = httpx.get(f"{server.url}/ui/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "localoai inspector" in page.text and "http" not in page.text.split("<script>")[1]  # nothing external
    assert httpx.get(f"{server.url}/ui").headers["location"] == "ui/"  # relative: right behind a proxy too

    listing = httpx.get(f"{server.url}/ui/api/records", params={"kind": "chat.completion", "limit": 200}).json()
    row = next(r for r in listing["rows"] if r["id"] == chat.id)
    assert row["model"] == server.model and row["endpoint"] == "chat" and row["status"] == "completed"
    assert listing["total"] >= 1 and listing["limit"] == 200
    none = httpx.get(f"{server.url}/ui/api/records", params={"text": "no such text anywhere"}).json()
    assert none["rows"] == [] and none["total"] == 0

    views = {view: httpx.get(f"{server.url}/ui/api/records/{chat.id}/{view}").json()
             for view in ("episode", "tokens", "group", "raw")}
    assert all(body["id"] == chat.id for body in views.values())
    assert "show me in the inspector" in views["episode"]["html"] and chat.id in views["episode"]["html"]
    assert "entropy" in views["tokens"]["html"] and "&lt;|im_start|&gt;" in views["tokens"]["html"]
    assert "no group_id" in views["group"]["html"] and "rendered prompt" in views["raw"]["html"]
    assert "<svg" in httpx.get(f"{server.url}/ui/api/plots").json()["html"]
    state = httpx.get(f"{server.url}/ui/api/state").json()
    assert state["store"] == ":memory:" and state["model"] == server.model


@pytest.mark.parametrize(("path", "status", "param"), [
    ("records?offset=-1", 400, "offset"),
    ("records?limit=abc", 400, "limit"),
    ("records?limit=100000", 400, "limit"),
    ("records?policy_version=x", 400, "policy_version"),
    ("records?colour=red", 400, "colour"),
    ("records/chatcmpl-missing/episode", 404, "record_id"),
    ("records/chatcmpl-missing/everything", 404, "view"),
])
def test_bad_requests_get_the_error_envelope(server: Any, path: str, status: int, param: str) -> None:
    response = httpx.get(f"{server.url}/ui/api/{path}")
    assert response.status_code == status
    error = response.json()["error"]
    assert error["param"] == param and error["message"] and error["type"]


def test_with_an_api_key_the_page_loads_and_its_api_needs_the_key(tiny: tuple[Any, Any]) -> None:
    model, tokenizer = tiny
    with running_server(model, tokenizer, name="keyed", api_key="sesame", reasoning_parser="none") as server:
        assert httpx.get(f"{server.url}/ui/").status_code == 200
        assert httpx.get(f"{server.url}/ui/api/records").status_code == 401
        keyed = httpx.get(f"{server.url}/ui/api/records", headers={"Authorization": "Bearer sesame"})
        assert keyed.status_code == 200 and keyed.json()["total"] == 0
        page = server.inspect()
        assert page.url == f"{server.url}/ui/" and "#key=sesame" in page.link  # a fragment: never sent to a server
        shown = page.show("chatcmpl-x", tab="tokens")
        assert "record=chatcmpl-x" in shown.link and "tab=tokens" in shown.link and page.record == "chatcmpl-x"
        assert 'class="localoai-ui"' in page._repr_html_()
        assert server.inspect(proxy="/user/me").url == f"/user/me/proxy/{server.port}/ui/"
        with pytest.raises(TypeError, match="widget=True"):
            server.inspect(live=False)


def test_a_second_run_in_the_same_directory_starts_empty(
    tiny: tuple[Any, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.chdir(tmp_path)
    model, tokenizer = tiny
    with running_server(model, tokenizer, name="first", store=None, reasoning_parser="none") as first:
        with first.episode(group="g") as episode:
            old = episode.client(max_retries=0).chat.completions.create(model="first", messages=MESSAGES, max_tokens=2)
        stored(first, old.id)
        first_store = first.store_location
        assert len(first.trajectories()) == 1
    caplog.set_level(logging.INFO, logger="localoai.server")
    with running_server(model, tokenizer, name="second", store=None, reasoning_parser="none") as second:
        location = second.store_location
        assert location != first_store and Path(location).parent == tmp_path / "localoai-store"
        assert location in repr(second) and location in second._repr_html_()
        assert any(location in message and second.url in message for message in caplog.messages)
        # Nothing of the first run by default: trajectories, export, the HTTP lists, the inspector.
        assert second.trajectories() == [] and second.store.count() == 0
        assert second.store.export_jsonl(tmp_path / "export.jsonl") == 0
        assert second.client(max_retries=0).chat.completions.list().data == []
        assert httpx.get(f"{second.url}/ui/api/records").json()["total"] == 0
        new = second.client(max_retries=0).chat.completions.create(model="second", messages=MESSAGES, max_tokens=2,
                                                                   store=True)
        stored(second, new.id)
        assert [r["id"] for r in httpx.get(f"{second.url}/ui/api/records").json()["rows"]] == [new.id]
        assert [c.id for c in second.client(max_retries=0).chat.completions.list().data] == [new.id]
    # Looking across runs is explicit: each run's file is kept, the newest opens by directory.
    assert {path.name for path in (tmp_path / "localoai-store").glob("run-*.sqlite3")} == {
        Path(first_store).name, Path(location).name}
    with SQLiteStore(first_store) as earlier:
        assert earlier.get(old.id) is not None and earlier.get(new.id) is None
    pytest.importorskip("ipywidgets")
    inspector = localoai.inspect(tmp_path / "localoai-store", live=False)
    assert [value for _, value in inspector.listing.options] == [new.id]
    assert "saved store" in inspector.heading.value and "live" not in inspector.heading.value
    assert Path(location).name in inspector.heading.value
    inspector.close()


def record(i: int, episode: str, created_at: float, prompt: list[int], sampled: list[int]) -> GenerationRecord:
    return GenerationRecord(
        id=f"chatcmpl-{i}", kind="chat.completion", model="m", created_at=created_at, episode_id=episode,
        prompt_token_ids=prompt, request={"messages": [{"role": "user", "content": "q"}]},
        completions=[{"completion_token_ids": sampled, "logprobs": [], "text": "", "finish_reason": "stop"}],
    )


def test_previous_turn_is_the_episode_record_before_in_store_order(tmp_path: Path) -> None:
    """Turns made within the same second (timestamps tie) still find their own previous turn, so
    the re-sent tokens are underlined and a divergence outlined on every turn, not only the last."""
    with SQLiteStore(tmp_path / "store.sqlite3") as store:
        store.put(record(1, "ep", 5.0, [1, 2], [3, 4]))
        store.put(record(2, "ep", 5.0, [1, 2, 3, 4, 9], [5, 6]))  # re-sends turn 1's sample exactly
        store.put(record(3, "ep", 5.0, [1, 2, 3, 4, 9, 5, 7, 9], [8]))  # turn 2's sample re-sent as 5, 7: diverged
        reader = StoreReader(store)
        assert reader.previous_turn(store.get("chatcmpl-2")).id == "chatcmpl-1"  # type: ignore[arg-type,union-attr]
        assert reader.previous_turn(store.get("chatcmpl-3")).id == "chatcmpl-2"  # type: ignore[arg-type,union-attr]
        assert reader.previous_turn(store.get("chatcmpl-1")) is None  # type: ignore[arg-type]
        views = RecordViews(reader)
        second = views.tokens(store.get("chatcmpl-2"))  # type: ignore[arg-type]
        assert "history re-sent from <code>chatcmpl-1</code>: matches" in second
        assert second.count("tok prompt trainable") == 2
        third = views.tokens(store.get("chatcmpl-3"))  # type: ignore[arg-type]
        assert "re-sent from <code>chatcmpl-2</code>" in third and "differs from the sampled tokens at prompt token 6" in third
        assert third.count("diverged") >= 1 and 'class="tok prompt trainable diverged"' not in third
        reader.close()


def test_plots_show_reward_by_version_activity_staleness_and_outcomes() -> None:
    records = [
        GenerationRecord(
            id=f"chatcmpl-{i}", kind="chat.completion", model="m", created_at=100.0 + i, policy_version=i // 4,
            episode_id=f"ep-{i}", timings={"queued": 0.1, "first_token": 0.2, "total": 1.0},
            completions=[{"completion_token_ids": [1, 2, 3], "logprobs": [], "text": "", "finish_reason":
                          "length" if i % 4 == 0 else "stop", **({"tool_parse_error": "bad"} if i == 5 else {})}],
        )
        for i in range(8)
    ]
    episodes = [StoredEpisode(f"ep-{i}", group=f"g{i // 2}", reward=float(i)) for i in range(8)]
    html = plots.dashboard(records, episodes, current=2)
    assert html.count("<svg") == 7 and "no data yet" not in html.split("Generations calling tools")[0]
    reward = plots.reward_by_version(records, episodes)
    assert "group mean (bar: min-max): 0, 0.5" in reward and "mean over groups: 1, 5" in reward
    staleness = plots.staleness(records, current=2)
    assert "1 behind: 12" in staleness and "2 behind: 12" in staleness
    finish, tools = plots.outcomes(records)
    assert "stop: 6" in finish and "length: 2" in finish and "unparsed: 1" in tools
    assert "no data yet" in plots.dashboard([], [], 0)
    json.dumps(html)  # plain text: it travels in the API's JSON


def test_views_keep_call_ids_wrap_prompts_show_the_model_and_highlight_what_show_opens(tmp_path: Path) -> None:
    from localoai.widgets import render
    from localoai.widgets.format import Turn, row_label, summarize

    html = render.turn_html(Turn("tool", "21 celsius", tool_call_id="call_AbC9xZ"))
    role, rest = html.split('class="role">', 1)[1].split("</span>", 1)
    assert role == "tool" and "call_AbC9xZ" in rest  # the id outside the upper-cased role label
    assert "white-space:pre-wrap" in render.STYLE.split(".loai .tok{", 1)[1].split("}", 1)[0]  # long lines wrap
    first = record(1, "ep", 5.0, [1, 2], [3, 4])
    assert "m" in row_label(summarize(first)).split()  # the model column of the widget's list
    pytest.importorskip("ipywidgets")
    from localoai.widgets.inspector import Inspector

    with SQLiteStore(tmp_path / "store.sqlite3") as store:
        for i in range(3):
            store.put(record(i, "ep", 5.0, [1, 2], [3, 4]))
        inspector = Inspector(store, live=False)
        inspector.show("chatcmpl-1")
        assert inspector.listing.value == "chatcmpl-1" and inspector.record is not None
        assert inspector.record.id == "chatcmpl-1" and "chatcmpl-1" in inspector.views[0].value
        inspector.close()
