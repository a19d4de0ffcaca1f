"""Gaps a conformance run found against real clients and OpenAI's OpenAPI description: prompt ids
on legacy completions' choices, the fingerprint of the weights that generated a request that
waited through a pause, a `function_call_output` answering no call, and `output_text` parts'
`logprobs` in stored conversation items."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from localoai.testing import running_server, wait_until


@pytest.fixture(scope="module")
def server(scripted_server: Any) -> Any:
    """This module's protocol tests run on the scripted engine (tests/conftest.py), not random weights."""
    return scripted_server


PROMPT = "the weather in paris is"


def test_return_token_ids_puts_the_prompt_ids_on_each_choice(client: openai.OpenAI, tiny: Any) -> None:
    _, tokenizer = tiny
    first, second = tokenizer(PROMPT)["input_ids"], tokenizer("a reward")["input_ids"]
    answer = client.completions.create(model="tiny", prompt=[PROMPT, "a reward"], max_tokens=3, n=2,
                                       extra_body={"return_token_ids": True})
    assert [choice.model_extra["prompt_token_ids"] for choice in answer.choices] == [first, first, second, second]
    assert all(len(choice.model_extra["token_ids"]) == 3 for choice in answer.choices)

    chunks = list(client.completions.create(model="tiny", prompt=PROMPT, max_tokens=3, n=2, stream=True,
                                            extra_body={"return_token_ids": True}))
    for index in (0, 1):
        parts = [choice for chunk in chunks for choice in chunk.choices if choice.index == index]
        carrying = [part.model_extra["prompt_token_ids"] for part in parts if "prompt_token_ids" in part.model_extra]
        assert carrying == [first]  # once per choice, on its first chunk (vLLM's placement)
        assert "prompt_token_ids" in parts[0].model_extra
    plain = client.completions.create(model="tiny", prompt=PROMPT, max_tokens=2)
    assert "prompt_token_ids" not in (plain.choices[0].model_extra or {})


@pytest.fixture(scope="module")
def pausable(tiny: tuple[Any, Any]) -> Iterator[Any]:
    model, tokenizer = tiny
    with running_server(model, tokenizer, name="tiny", reasoning_parser="none") as server:
        yield server


@pytest.mark.parametrize("kind", ["chat", "chat-stream", "completion", "completion-stream"])
def test_a_request_that_waited_through_a_pause_names_the_new_weights(pausable: Any, kind: str) -> None:
    server = pausable
    client = server.client(max_retries=0)
    engine = server.served.engine

    def request() -> list[str]:
        stream = kind.endswith("-stream")
        if kind.startswith("chat"):
            made = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}],
                                                  max_tokens=3, stream=stream)
        else:
            made = client.completions.create(model="tiny", prompt=PROMPT, max_tokens=3, stream=stream)
        return [chunk.system_fingerprint for chunk in made] if stream else [made.system_fingerprint]

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        with server.pause("wait"):
            before = server.served.system_fingerprint
            waited = pool.submit(request)
            wait_until(lambda: engine.stats()["waiting"] == 1)
        fingerprints = waited.result()
    after = server.served.system_fingerprint
    assert before != after and after.endswith(f"_v{server.policy_version}")
    assert set(fingerprints) == {after}  # every chunk, the role chunk included
    server.served.recorder.flush()
    record = server.store.list(limit=1)[0]
    assert record.policy_version == server.policy_version


def test_function_call_output_without_its_call_is_refused(client: openai.OpenAI) -> None:
    orphan = {"type": "function_call_output", "call_id": "call_nowhere", "output": "21"}
    with pytest.raises(openai.BadRequestError) as refused:
        client.responses.create(model="tiny", max_output_tokens=2,
                                input=[{"role": "user", "content": "weather?"}, orphan])
    error = refused.value.body
    assert refused.value.status_code == 400
    assert error["message"] == "No tool call found for function call output with call_id call_nowhere."
    assert error["param"] == "input" and error["type"] == "invalid_request_error"
    with pytest.raises(openai.BadRequestError):  # counted input tokens too: the same prompt would be rendered
        client.responses.input_tokens.count(model="tiny", input=[orphan])
    call = {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": "{}"}
    answered = client.responses.create(model="tiny", max_output_tokens=2, input=[
        {"role": "user", "content": "weather?"}, call, {**orphan, "call_id": "call_1"}])
    assert answered.status in ("completed", "incomplete")
    # the call may come from the replayed chain
    again = client.responses.create(model="tiny", max_output_tokens=2, previous_response_id=answered.id,
                                    input=[{**orphan, "call_id": "call_1"}])
    assert again.status in ("completed", "incomplete")


def test_stored_output_text_parts_carry_logprobs(client: openai.OpenAI) -> None:
    conversation = client.conversations.create(items=[
        {"role": "user", "content": "hi"},
        {"type": "message", "role": "assistant", "content": "hello"},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "there"}]},
    ])
    response = client.responses.create(model="tiny", conversation=conversation.id, max_output_tokens=3,
                                       input="and now?", include=["message.output_text.logprobs"])
    texts = [part for item in client.conversations.items.list(conversation.id, order="asc").data
             if item.type == "message" and item.role == "assistant" for part in item.content]
    raw = client.conversations.items.with_raw_response.list(conversation.id, order="asc").http_response.json()
    parts = [part for item in raw["data"] if item.get("role") == "assistant" for part in item["content"]]
    assert [part["type"] for part in parts] == ["output_text"] * len(texts)
    assert all(isinstance(part["logprobs"], list) for part in parts)
    assert parts[0]["logprobs"] == [] and parts[1]["logprobs"] == []
    if response.output_text:
        assert len(parts) == 3 and len(parts[2]["logprobs"]) >= 1
