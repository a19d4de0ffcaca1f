"""Episodes and GRPO groups: how requests join an episode (URL prefix, header, metadata), what the
store lists, and rewards that survive a reopen. Real server, real tiny model, the `openai` SDK."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from localoai.store import SQLiteStore


@pytest.fixture(scope="module")
def server(scripted_server: Any) -> Any:
    """This module's protocol tests run on the scripted engine (tests/conftest.py), not random weights."""
    return scripted_server


MESSAGES = [{"role": "user", "content": "hello"}]


def records(server: Any, episode_id: str) -> list[Any]:
    server.served.recorder.flush()
    return list(server.store.iterate(episode_id=episode_id))


def test_every_v1_endpoint_serves_under_the_episode_prefix(server: Any) -> None:
    with server.episode(group="prefix-group", task="routing") as ep:
        assert ep.base_url == f"{server.url}/episodes/{ep.id}/v1"
        client = ep.client(max_retries=0)
        assert [model.id for model in client.models.list()] == [server.model]
        chat = client.chat.completions.create(model=server.model, messages=MESSAGES, max_tokens=3)
        completion = client.completions.create(model=server.model, prompt="hello", max_tokens=3)
        response = client.responses.create(model=server.model, input="hello", max_output_tokens=3)
        assert client.responses.retrieve(response.id).id == response.id
        stored = records(server, ep.id)
    assert {record.id for record in stored} == {chat.id, completion.id, response.id}
    assert {(record.episode_id, record.group_id) for record in stored} == {(ep.id, "prefix-group")}
    episode = server.store.episode(ep.id)
    assert episode is not None and episode.group == "prefix-group" and episode.metadata == {"task": "routing"}


def test_async_client_and_streaming_are_traced(server: Any) -> None:
    import asyncio

    ep = server.episode()

    async def run() -> str:
        client = ep.async_client(max_retries=0)
        stream = await client.chat.completions.create(model=server.model, messages=MESSAGES, max_tokens=4,
                                                      stream=True)
        return [chunk async for chunk in stream][0].id

    chunk_id = asyncio.run(run())
    assert [record.id for record in records(server, ep.id)] == [chunk_id]


def test_header_and_metadata_attach_a_request(server: Any, client: openai.OpenAI) -> None:
    by_header = client.chat.completions.create(
        model=server.model, messages=MESSAGES, max_tokens=2,
        extra_headers={"X-Episode-Id": "made-up-1", "X-Episode-Group": "made-up-group"})
    by_metadata = client.chat.completions.create(
        model=server.model, messages=MESSAGES, max_tokens=2, store=True,
        metadata={"episode_id": "made-up-2", "episode_group": "made-up-group"})
    by_response = client.responses.create(model=server.model, input="hi", max_output_tokens=2,
                                          metadata={"episode_id": "made-up-2"})
    assert [record.id for record in records(server, "made-up-1")] == [by_header.id]
    assert [record.id for record in records(server, "made-up-2")] == [by_metadata.id, by_response.id]
    # Episodes a client made up are listed too, with their group.
    assert {episode.id for episode in server.store.episodes("made-up-group")} == {"made-up-1", "made-up-2"}
    assert "made-up-group" in server.store.groups()


def test_a_request_outside_episodes_has_none(server: Any, client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(model=server.model, messages=MESSAGES, max_tokens=2)
    server.served.recorder.flush()
    record = server.store.get(reply.id)
    assert record.episode_id is None and record.group_id is None and record.ledger is None


def test_conflicting_or_malformed_episode_ids_are_refused(server: Any, client: openai.OpenAI) -> None:
    ep = server.episode()
    with pytest.raises(openai.BadRequestError) as conflict:
        ep.client(max_retries=0).chat.completions.create(
            model=server.model, messages=MESSAGES, max_tokens=2, metadata={"episode_id": "another"})
    assert conflict.value.body["param"] == "metadata"
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=server.model, messages=MESSAGES, max_tokens=2,
                                       extra_headers={"X-Episode-Id": "has spaces"})
    assert records(server, ep.id) == []
    # A prefix whose id is not an episode id is no route at all.
    reply = httpx.get(f"{server.url}/episodes/a%20b/v1/models")
    assert reply.status_code == 404 and reply.json()["error"]["code"] == "unknown_url"
    with pytest.raises(ValueError):
        server.episode(id="no spaces please")


def test_groups_list_their_episodes_together(server: Any) -> None:
    with server.group(n=3, prompt="p7") as group:
        assert len(group) == 3 and {ep.group for ep in group} == {group.id}
        extra = server.episode(group=group, sample="extra")
        assert extra.group == group.id and len(group) == 4
        for number, ep in enumerate(group):
            ep.client(max_retries=0).chat.completions.create(model=server.model, messages=MESSAGES, max_tokens=2,
                                                             seed=number)
            ep.reward = float(number)
        listed = group.episodes()
    assert [episode.id for episode in listed] == [ep.id for ep in group]
    assert [episode.reward for episode in listed] == [0.0, 1.0, 2.0, 3.0]
    assert listed[-1].metadata == {"prompt": "p7", "sample": "extra"}
    trajectories = group.trajectories()
    assert [t.episode_id for t in trajectories] == [ep.id for ep in group]
    assert all(t.group == group.id and len(t.turns) == 1 for t in trajectories)


def test_rewards_survive_a_reopen(tmp_path: Path, tiny: Any) -> None:
    from localoai.testing import running_server

    path = tmp_path / "store.sqlite3"
    with running_server(*tiny, store=str(path)) as server:
        ep = server.episode(group="g", run="7")
        ep.client(max_retries=0).chat.completions.create(model=server.model, messages=MESSAGES, max_tokens=2)
        ep.set_reward(0.5, verdict="partial", checks=[1, 0])
        assert ep.reward == 0.5
        ep.reward = 0.75  # replaces it, and its info
    with SQLiteStore(path) as store:
        episode = store.episode(ep.id)
        assert episode is not None
        assert (episode.group, episode.reward, episode.reward_info, episode.metadata) == (
            "g", 0.75, {}, {"run": "7"})
        assert store.trajectory(ep.id).reward == 0.75 and len(store.trajectory(ep.id).turns) == 1
        store.set_reward("never-seen", 1.0, source="offline")  # an episode known only by its reward
        assert store.episode("never-seen").reward_info == {"source": "offline"}


def test_a_store_from_before_episodes_gains_the_table(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    SQLiteStore(path).close()
    with sqlite3.connect(path) as conn:  # what a store written before episodes existed looks like
        conn.execute("DROP TABLE episodes")
    with SQLiteStore(path) as store:
        store.add_episode("e1", "g1", {"k": 1})
        assert store.episodes() == [store.episode("e1")] and store.groups() == ["g1"]


def test_the_ledger_renders_on_worker_threads_not_the_event_loop(server: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The ledger's splice re-renders the history and tokenizes: every endpoint calls it while preparing, on the
    prepare threads, so a long history never blocks the server's event loop (its thread runs only the loop)."""
    import threading

    import anthropic

    ledger = server.served.episodes
    attach = ledger.attach
    threads: list[str] = []

    def recording_attach(*args: Any, **kwargs: Any) -> Any:
        threads.append(threading.current_thread().name)
        return attach(*args, **kwargs)

    monkeypatch.setattr(ledger, "attach", recording_attach)
    with server.episode() as ep:
        client = ep.client(max_retries=0)
        first = client.chat.completions.create(model=server.model, messages=MESSAGES, max_tokens=3)
        again = [*MESSAGES, {"role": "assistant", "content": first.choices[0].message.content},
                 {"role": "user", "content": "more"}]
        client.chat.completions.create(model=server.model, messages=again, max_tokens=2)
        client.responses.create(model=server.model, input="hello", max_output_tokens=2)
        messages = anthropic.Anthropic(base_url=ep.base_url.removesuffix("/v1"), api_key="localoai", max_retries=0)
        messages.messages.create(model=server.model, max_tokens=2, messages=[{"role": "user", "content": "hello"}])
        report = records(server, ep.id)[1].ledger
    assert report is not None and report["extends"] == first.id  # the second turn went through the splice
    assert len(threads) == 4
    assert not any(name.startswith("localoai-server-") for name in threads), threads


def test_episodes_need_only_the_session_the_server_implements(server: Any) -> None:
    """`Episode` and `Group` depend on `EpisodeSession`, not on `Server`: the server is one."""
    from localoai.episodes import EpisodeSession

    assert isinstance(server, EpisodeSession)
    with server.group(n=2) as group:
        assert all(ep.server is server for ep in group)
