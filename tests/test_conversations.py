"""The Conversations API through the official SDK: conversations, their items, pagination, errors;
and the store underneath (same file as the records, thread-safe, all-or-nothing writes)."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import openai
import pytest
from openai.types.conversations import Conversation, ConversationDeletedResource, Message

from localoai.store import ConversationNotFound, ConversationStore, DuplicateItemId, SQLiteStore


@pytest.fixture(scope="module")
def server(scripted_server: Any) -> Any:
    """This module's protocol tests run on the scripted engine (tests/conftest.py), not random weights."""
    return scripted_server


ITEMS: list[Any] = [
    {"type": "message", "role": "system", "content": "be brief"},
    {"role": "user", "content": "what's the weather in Paris?"},
    {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": '{"city": "Paris"}'},
    {"type": "function_call_output", "call_id": "call_1", "output": "sunny"},
    {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Sunny."}]},
]


def test_conversation_round_trip(client: openai.OpenAI) -> None:
    created = client.conversations.create(items=ITEMS, metadata={"run": "7"})
    assert isinstance(created, Conversation) and created.object == "conversation"
    assert created.id.startswith("conv_") and created.metadata == {"run": "7"} and created.created_at > 0

    assert client.conversations.retrieve(created.id) == created
    updated = client.conversations.update(created.id, metadata={"run": "8"})
    assert updated.id == created.id and updated.metadata == {"run": "8"}
    assert client.conversations.retrieve(created.id).metadata == {"run": "8"}

    items = client.conversations.items.list(created.id, order="asc")
    assert [item.type for item in items.data] == ["message", "message", "function_call", "function_call_output",
                                                  "message"]
    system, user, call, output, assistant = items.data
    assert isinstance(user, Message) and user.id.startswith("msg_") and user.role == "user"
    assert user.content[0].type == "input_text" and user.content[0].text == "what's the weather in Paris?"
    assert call.id.startswith("fc_") and call.call_id == "call_1" and call.arguments == '{"city": "Paris"}'
    assert output.call_id == "call_1" and output.output == "sunny"
    assert assistant.role == "assistant" and assistant.content[0].type == "output_text"
    assert len({item.id for item in items.data}) == 5 and items.has_more is False

    deleted = client.conversations.delete(created.id)
    assert isinstance(deleted, ConversationDeletedResource)
    assert (deleted.id, deleted.object, deleted.deleted) == (created.id, "conversation.deleted", True)
    with pytest.raises(openai.NotFoundError):
        client.conversations.retrieve(created.id)
    with pytest.raises(openai.NotFoundError):
        client.conversations.items.list(created.id)


def test_items_create_retrieve_delete(client: openai.OpenAI) -> None:
    conversation = client.conversations.create()
    assert conversation.metadata == {} and client.conversations.items.list(conversation.id).data == []

    added = client.conversations.items.create(conversation.id, items=[
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hello"}]},
        {"type": "message", "role": "assistant", "content": "hi there", "id": "msg_mine"},
    ])
    assert added.object == "list" and [item.id for item in added.data][1] == "msg_mine"
    assert added.first_id == added.data[0].id and added.last_id == "msg_mine" and added.has_more is False

    item = client.conversations.items.retrieve("msg_mine", conversation_id=conversation.id)
    assert item.type == "message" and item.content[0].text == "hi there"

    after = client.conversations.items.delete("msg_mine", conversation_id=conversation.id)
    assert isinstance(after, Conversation) and after.id == conversation.id
    with pytest.raises(openai.NotFoundError):
        client.conversations.items.retrieve("msg_mine", conversation_id=conversation.id)
    with pytest.raises(openai.NotFoundError):
        client.conversations.items.delete("msg_mine", conversation_id=conversation.id)
    assert [item.id for item in client.conversations.items.list(conversation.id)] == [added.data[0].id]

    # a client's id may not repeat within the conversation; nothing of the refused call is written
    with pytest.raises(openai.BadRequestError) as refused:
        client.conversations.items.create(conversation.id, items=[
            {"role": "user", "content": "new"}, {"role": "user", "content": "dup", "id": added.data[0].id}])
    assert refused.value.body["param"] == "items[1].id"
    assert len(client.conversations.items.list(conversation.id).data) == 1


def test_items_pagination(client: openai.OpenAI) -> None:
    conversation = client.conversations.create(items=[{"role": "user", "content": f"m{i}"} for i in range(7)])
    client.conversations.items.create(conversation.id, items=[{"role": "user", "content": "m7"}])
    texts = lambda page: [item.content[0].text for item in page.data]  # noqa: E731

    newest = client.conversations.items.list(conversation.id, limit=3)  # newest first by default
    assert texts(newest) == ["m7", "m6", "m5"] and newest.has_more is True
    assert newest.first_id == newest.data[0].id and newest.last_id == newest.data[-1].id
    assert texts(newest.get_next_page()) == ["m4", "m3", "m2"]
    every = [item.content[0].text for item in client.conversations.items.list(conversation.id, limit=3, order="asc")]
    assert every == [f"m{i}" for i in range(8)]  # the SDK followed `after` through three pages

    last = client.conversations.items.list(conversation.id, order="asc", after=newest.data[1].id)
    assert texts(last) == ["m7"] and last.has_more is False
    with pytest.raises(openai.NotFoundError) as missing:
        client.conversations.items.list(conversation.id, after="msg_nope")
    assert missing.value.body["param"] == "after"
    with pytest.raises(openai.BadRequestError):
        client.conversations.items.list(conversation.id, limit=101)


def test_unknown_ids_are_openai_shaped_404s(client: openai.OpenAI) -> None:
    for call in (
        lambda: client.conversations.retrieve("conv_nope"),
        lambda: client.conversations.update("conv_nope", metadata={}),
        lambda: client.conversations.delete("conv_nope"),
        lambda: client.conversations.items.create("conv_nope", items=[{"role": "user", "content": "x"}]),
        lambda: client.conversations.items.retrieve("msg_x", conversation_id="conv_nope"),
        lambda: client.conversations.items.delete("msg_x", conversation_id="conv_nope"),
    ):
        with pytest.raises(openai.NotFoundError) as missing:
            call()
        assert missing.value.body["type"] == "invalid_request_error"
        assert missing.value.body["param"] == "conversation_id" and "conv_nope" in missing.value.body["message"]


def test_bad_input_is_refused_naming_the_field(client: openai.OpenAI) -> None:
    cases = [
        ({"items": [{"role": "user", "content": "ok"}, {"type": "bogus"}]}, "items[1].type"),
        ({"items": [{"type": "image_generation_call", "id": "ig_1"}]}, "items[0].type"),
        ({"items": [{"type": "function_call", "call_id": "c", "name": "f"}]}, "items[0].arguments"),
        ({"items": [{"role": "user", "content": "x"}] * 21}, "items"),
        ({"metadata": {"k": 1}}, "metadata.k"),
        ({"metadata": {f"k{i}": "v" for i in range(17)}}, "metadata"),
        ({"unknown": 1}, "unknown"),
    ]
    for body, param in cases:
        with pytest.raises(openai.BadRequestError) as refused:
            client.post("/conversations", body=body, cast_to=object)
        assert refused.value.body["param"] == param, body

    conversation = client.conversations.create()
    with pytest.raises(openai.BadRequestError) as refused:
        client.conversations.items.create(conversation.id, items=[{"role": "user", "content": "x"}, {"type": "nope"}])
    assert refused.value.body["param"] == "items[1].type" and "index 1" in refused.value.body["message"]
    with pytest.raises(openai.BadRequestError) as refused:
        client.conversations.items.list(conversation.id, include=["file_search_call.results"])
    assert refused.value.body["param"] == "include[0]"
    assert client.conversations.items.list(conversation.id).data == []  # nothing was written


def test_reasoning_encrypted_content_only_when_included(client: openai.OpenAI) -> None:
    reasoning = {"type": "reasoning", "summary": [], "encrypted_content": "secret"}
    conversation = client.conversations.create(items=[reasoning])
    listed = client.conversations.items.list(conversation.id)
    assert listed.data[0].type == "reasoning" and listed.data[0].encrypted_content is None
    included = client.conversations.items.list(conversation.id, include=["reasoning.encrypted_content"])
    assert included.data[0].encrypted_content == "secret"
    one = client.conversations.items.retrieve(listed.data[0].id, conversation_id=conversation.id,
                                              include=["reasoning.encrypted_content"])
    assert one.encrypted_content == "secret"


def test_async_client(async_client: openai.AsyncOpenAI) -> None:
    async def run() -> None:
        conversation = await async_client.conversations.create(items=[{"role": "user", "content": "hi"}])
        page = await async_client.conversations.items.list(conversation.id)
        assert [item.content[0].text async for item in page] == ["hi"]
        assert (await async_client.conversations.delete(conversation.id)).deleted

    asyncio.run(run())


# -- the store -----------------------------------------------------------------------------


def test_store_shares_the_record_file_and_survives_reopening(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite3"
    records = SQLiteStore(path)
    conversations = ConversationStore.beside(records)
    assert conversations.path == path
    created = conversations.create({"a": "b"}, [{"id": "i1", "type": "message"}])
    conversations.close()
    records.close()

    reopened_records = SQLiteStore(path)  # the record store still opens a file holding conversations
    reopened = ConversationStore(path)
    assert reopened.get(created["id"]) == created
    assert reopened.items(created["id"]) == [{"id": "i1", "type": "message"}]
    reopened.close()
    reopened_records.close()


def test_store_memory_ordering_and_atomicity() -> None:
    store = ConversationStore.beside(SQLiteStore(":memory:"))
    assert store.memory
    conversation = store.create(None, [{"id": f"i{i}"} for i in range(5)])
    cid = conversation["id"]
    assert [item["id"] for item in store.list_items(cid, limit=2)] == ["i4", "i3"]
    assert [item["id"] for item in store.list_items(cid, after="i1", order="asc")] == ["i2", "i3", "i4"]
    assert store.delete_item(cid, "i4") == conversation
    store.add_items(cid, [{"id": "i5"}])  # positions never reused: i5 comes after i3
    assert [item["id"] for item in store.list_items(cid, after="i3", order="asc")] == ["i5"]
    with pytest.raises(DuplicateItemId) as duplicate:
        store.add_items(cid, [{"id": "new"}, {"id": "i0"}])
    assert duplicate.value.index == 1
    assert store.get_item(cid, "new") is None  # all or nothing
    with pytest.raises(ConversationNotFound):
        store.add_items("conv_nope", [{"id": "x"}])
    assert store.delete(cid) and not store.delete(cid)
    store.close()


def test_store_is_thread_safe() -> None:
    store = ConversationStore(":memory:")
    cid = store.create()["id"]

    def append(worker: int) -> None:
        for i in range(25):
            store.add_items(cid, [{"id": f"w{worker}-{i}"}])

    threads = [threading.Thread(target=append, args=(worker,)) for worker in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    items = store.items(cid)
    assert len(items) == 100
    for worker in range(4):  # each thread's items stay in its own order
        mine = [item["id"] for item in items if item["id"].startswith(f"w{worker}-")]
        assert mine == [f"w{worker}-{i}" for i in range(25)]
    store.close()


def test_responses_in_a_conversation_grow_it(client: Any, server: Any) -> None:
    """`conversation` on responses.create: the conversation's items are the context, and the new
    input and the output are appended once the response finishes."""
    conversation = client.conversations.create(items=[{"type": "message", "role": "user", "content": "hello"}])
    first = client.responses.create(model=server.model, conversation=conversation.id, input="and then?",
                                    max_output_tokens=3)
    assert first.conversation is not None and first.conversation.id == conversation.id
    items = list(client.conversations.items.list(conversation.id, order="asc"))
    assert [item.type for item in items] == ["message", "message", "message"]
    assert [item.role for item in items] == ["user", "user", "assistant"]
    assert items[-1].id == first.output[0].id

    second = client.responses.create(model=server.model, conversation={"id": conversation.id}, input="more",
                                     max_output_tokens=3)
    assert second.usage.input_tokens > first.usage.input_tokens  # the whole conversation is in the prompt
    record = server.store.get(second.id)
    assert "hello" in record.prompt_text and "and then?" in record.prompt_text and "more" in record.prompt_text
    assert len(list(client.conversations.items.list(conversation.id))) == 5

    with pytest.raises(openai.BadRequestError) as both:
        client.responses.create(model=server.model, conversation=conversation.id, previous_response_id=first.id,
                                input="x", max_output_tokens=2)
    assert both.value.body["param"] == "conversation"
    with pytest.raises(openai.NotFoundError) as missing:
        client.responses.create(model=server.model, conversation="conv_missing", input="x", max_output_tokens=2)
    assert missing.value.body["param"] == "conversation"
