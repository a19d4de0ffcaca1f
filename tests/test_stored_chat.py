"""Every generation is recorded with its trace; `store: true` chat completions are retrievable
through the official SDK (list, retrieve, update, delete, messages)."""

from __future__ import annotations

from typing import Any

import openai
import pytest


@pytest.fixture(scope="module")
def server(scripted_server: Any) -> Any:
    """This module's protocol tests run on the scripted engine (tests/conftest.py), not random weights."""
    return scripted_server


MESSAGES = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello"}]


def test_every_generation_is_recorded_token_exact(client: openai.OpenAI, server: Any) -> None:
    reply = client.chat.completions.create(model=server.model, messages=MESSAGES, max_tokens=5, seed=8, n=2,
                                           extra_body={"return_token_ids": True})
    record = server.store.get(reply.id)  # stored even though `store` was not set
    assert record is not None and record.kind == "chat.completion" and record.status == "completed"
    assert not record.store_visible
    assert record.prompt_token_ids == reply.model_extra["prompt_token_ids"]
    assert record.prompt_text == server.served.tokenizer.decode(record.prompt_token_ids)
    for choice, trace in zip(reply.choices, record.completions):
        assert trace["completion_token_ids"] == choice.model_extra["token_ids"]
        assert len(trace["logprobs"]) == len(trace["completion_token_ids"])
        assert all(value <= 0 for value in trace["logprobs"])
        assert trace["text"] == choice.message.content and trace["finish_reason"] == choice.finish_reason
    assert record.output["choices"][1]["message"]["content"] == reply.choices[1].message.content
    assert record.sampling["seed"] == 8 and record.sampling["n"] == 2
    assert set(record.timings) >= {"queued", "first_token", "total"}
    assert record.request["messages"] == MESSAGES


def test_streams_and_completions_are_recorded(client: openai.OpenAI, server: Any) -> None:
    chunks = list(client.chat.completions.create(model=server.model, messages=MESSAGES, max_tokens=4, stream=True))
    record = server.store.get(chunks[0].id)
    assert record is not None and record.status == "completed"
    assert record.completions[0]["text"] == "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    completion = client.completions.create(model=server.model, prompt=["a", "b"], max_tokens=3)
    first, second = server.store.get(f"{completion.id}:0"), server.store.get(f"{completion.id}:1")
    assert first.kind == second.kind == "text_completion"
    assert [first.completions[0]["index"], second.completions[0]["index"]] == [0, 1]
    assert second.completions[0]["text"] == completion.choices[1].text


def test_stored_chat_completions_round_trip(client: openai.OpenAI, server: Any) -> None:
    tag = {"experiment": "stored-round-trip"}
    created = [
        client.chat.completions.create(model=server.model, messages=MESSAGES, max_tokens=3, store=True,
                                       metadata={**tag, "i": str(i)})
        for i in range(3)
    ]
    hidden = client.chat.completions.create(model=server.model, messages=MESSAGES, max_tokens=3, metadata=tag)

    retrieved = client.chat.completions.retrieve(created[0].id)
    assert retrieved.id == created[0].id
    assert retrieved.choices[0].message.content == created[0].choices[0].message.content
    assert retrieved.metadata == {**tag, "i": "0"}
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.retrieve(hidden.id)  # not stored for the API, only as a trace

    listed = client.chat.completions.list(metadata=tag, limit=2)
    assert [c.id for c in listed.data] == [created[0].id, created[1].id]
    assert listed.has_more
    everything = [c.id for c in client.chat.completions.list(metadata=tag, limit=2)]  # auto-paginates
    assert everything == [c.id for c in created]
    newest = client.chat.completions.list(metadata=tag, order="desc", limit=1)
    assert [c.id for c in newest.data] == [created[2].id]

    updated = client.chat.completions.update(created[1].id, metadata={"label": "good"})
    assert updated.metadata == {"label": "good"}
    assert client.chat.completions.retrieve(created[1].id).metadata == {"label": "good"}

    messages = client.chat.completions.messages.list(created[0].id)
    assert [m.content for m in messages.data] == ["be brief", "hello"]
    assert [m.id for m in messages.data] == [f"{created[0].id}-0", f"{created[0].id}-1"]

    deleted = client.chat.completions.delete(created[2].id)
    assert deleted.deleted and deleted.id == created[2].id
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.retrieve(created[2].id)


def test_list_query_errors(server: Any) -> None:
    import httpx

    bad_limit = httpx.get(f"{server.base_url}/chat/completions", params={"limit": "0"})
    assert bad_limit.status_code == 400 and bad_limit.json()["error"]["param"] == "limit"
    bad_order = httpx.get(f"{server.base_url}/chat/completions", params={"order": "up"})
    assert bad_order.status_code == 400 and bad_order.json()["error"]["param"] == "order"
    unknown = httpx.get(f"{server.base_url}/chat/completions", params={"colour": "red"})
    assert unknown.status_code == 400 and unknown.json()["error"]["param"] == "colour"
