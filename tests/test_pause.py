"""Weight updates while serving: `server.pause()` in its three modes, policy versions per token,
the HTTP controls, and an optimizer step on the served model object between two halves of a
generation."""

from __future__ import annotations

import concurrent.futures
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
import torch

from localoai.testing import build_tiny_model, running_server, wait_until

PROMPT = "the weather in paris is"


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[Any, Any, Any]]:
    model, tokenizer = build_tiny_model(initializer_range=0.2)
    model.train()  # a policy in training
    with running_server(model, tokenizer, name="tiny", api_key="sekret") as server:
        yield server, model, tokenizer


def stream_completion(client: openai.OpenAI, prompt: Any, max_tokens: int) -> Iterator[Any]:
    return iter(client.completions.create(model="tiny", prompt=prompt, temperature=0, max_tokens=max_tokens,
                                          stream=True, extra_body={"return_token_ids": True, "ignore_eos": True}))


def chunk_ids(chunk: Any) -> list[int]:
    return list(chunk.choices[0].model_extra["token_ids"]) if chunk.choices else []


def optimizer_step(model: Any, tokenizer: Any) -> None:
    """A real training step on the served object: the model is in train mode, autograd works."""
    assert model.training
    ids = torch.tensor([tokenizer("reward the agent for the answer").input_ids])
    optimizer = torch.optim.SGD(model.parameters(), lr=5.0)
    model(input_ids=ids, labels=ids).loss.backward()
    optimizer.step()
    optimizer.zero_grad()


def greedy_continuation(model: Any, ids: list[int], tokens: int) -> list[int]:
    was_training = model.training
    model.eval()
    with torch.no_grad():
        out = model.generate(torch.tensor([ids]), max_new_tokens=tokens, do_sample=False,
                             eos_token_id=None, pad_token_id=0)
    model.train(was_training)
    return out[0, len(ids):].tolist()


def test_keep_freezes_and_continues_on_the_new_weights(served: tuple[Any, Any, Any]) -> None:
    server, model, tokenizer = served
    client = server.client(max_retries=0)
    prompt_ids = tokenizer(PROMPT).input_ids
    start_version = server.policy_version
    chunks = stream_completion(client, prompt_ids, 24)
    generated = chunk_ids(next(chunks)) + chunk_ids(next(chunks))
    with server.pause("keep") as paused:
        assert paused.paused and model.training  # the engine is out of the model, back in train mode
        frozen = server.served.engine.stats()
        assert frozen["running"] == 1 and frozen["waiting"] == 0
        optimizer_step(model, tokenizer)
    assert server.policy_version == start_version + 1 and not server.paused
    generated += [token for chunk in chunks for token in chunk_ids(chunk)]
    assert len(generated) == 24

    record = server.store.list(kind="text_completion", limit=1)[0]
    spans = record.completions[0]["policy_versions"]
    assert record.completions[0]["completion_token_ids"] == generated
    assert record.policy_version == start_version
    assert [version for _, version in spans] == [start_version, start_version + 1]
    switch = spans[1][0]
    assert switch >= 2
    # Every token after the update is what the NEW weights produce from the prefix: the KV cache
    # was recomputed, nothing computed by the old weights was reused.
    assert generated[switch:] == greedy_continuation(model, prompt_ids + generated[:switch], 24 - switch)

    after = client.completions.create(model="tiny", prompt=prompt_ids, temperature=0, max_tokens=4)
    assert after.system_fingerprint.endswith(f"_v{start_version + 1}")


def test_wait_lets_running_requests_finish_and_holds_new_ones(served: tuple[Any, Any, Any]) -> None:
    server, model, tokenizer = served
    client = server.client(max_retries=0)
    engine = server.served.engine
    version = server.policy_version
    chunks = stream_completion(client, PROMPT, 16)
    first = next(chunks)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        with server.pause("wait", bump_version=False):
            assert engine.stats()["running"] == 0  # the running request finished before the pause took hold
            later = pool.submit(client.completions.create, model="tiny", prompt=PROMPT, max_tokens=3)
            wait_until(lambda: engine.stats()["waiting"] == 1)
            server.policy_version = version + 10  # a trainer may also set the version itself
        assert later.result().choices[0].finish_reason == "length"
    rest = list(chunks)
    assert len(chunk_ids(first)) + sum(len(chunk_ids(chunk)) for chunk in rest) == 16
    assert rest[-1].choices[0].finish_reason == "length"
    records = server.store.list(kind="text_completion", limit=2)  # newest first
    assert records[0].policy_version == version + 10
    assert records[0].completions[0]["policy_versions"] == [[0, version + 10]]
    assert records[1].completions[0]["policy_versions"] == [[0, version]]


def test_abort_ends_running_requests_with_their_partial_output(served: tuple[Any, Any, Any]) -> None:
    server, _, _ = served
    client = server.client(max_retries=0)
    stream = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}],
                                            max_tokens=1000, stream=True, extra_body={"ignore_eos": True})
    chunks = iter(stream)
    next(chunks)
    next(chunks)
    with server.pause("abort"):
        assert server.served.engine.stats() == {"waiting": 0, "running": 0, "jobs": 0, "rows": 0}
    rest = list(chunks)
    finish = [chunk.choices[0].finish_reason for chunk in rest if chunk.choices]
    assert finish[-1] == "length"  # OpenAI's closest: the output was cut short
    record = server.store.list(kind="chat.completion", limit=1)[0]
    trace = record.completions[0]
    assert trace["finish_reason"] == "abort"  # the trace keeps the real reason
    assert 1 <= len(trace["completion_token_ids"]) < 1000


def test_a_resume_over_http_runs_off_the_event_loop(served: tuple[Any, Any, Any],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Resuming the vLLM engine pushes the weights (seconds on a large model): meanwhile the server
    still answers (health, metrics, stored records), as it does while `/pause` waits."""
    server, _, _ = served
    engine = server.served.engine
    resuming, release = threading.Event(), threading.Event()
    resume = engine.resume

    def slow_resume(**options: Any) -> int:
        resuming.set()
        assert release.wait(30)
        return resume(**options)

    monkeypatch.setattr(engine, "resume", slow_resume)
    headers = {"Authorization": "Bearer sekret"}
    with httpx.Client(base_url=server.url, headers=headers, timeout=30) as http, \
            concurrent.futures.ThreadPoolExecutor(1) as pool:
        version = http.post("/pause", params={"mode": "wait"}).json()["policy_version"]
        resumed = pool.submit(http.post, "/resume")
        assert resuming.wait(30)
        try:
            assert http.get("/health", timeout=5).status_code == 200  # the loop is free while the push runs
            assert http.get("/is_paused", timeout=5).json() == {"is_paused": True}
        finally:
            release.set()
        assert resumed.result(30).json() == {"is_paused": False, "policy_version": version + 1}


def test_http_controls(served: tuple[Any, Any, Any]) -> None:
    server, _, _ = served
    headers = {"Authorization": "Bearer sekret"}
    with httpx.Client(base_url=server.url, headers=headers, timeout=30) as http:
        assert httpx.post(f"{server.url}/pause").status_code == 401  # behind the api key like the rest
        version = server.policy_version
        assert http.get("/is_paused").json() == {"is_paused": False}
        bad = http.post("/pause", params={"mode": "later"})
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "mode"
        paused = http.post("/pause", params={"mode": "keep"})
        assert paused.json() == {"is_paused": True, "policy_version": version}
        assert server.paused and http.get("/is_paused").json() == {"is_paused": True}
        resumed = http.post("/resume")
        assert resumed.json() == {"is_paused": False, "policy_version": version + 1}
        http.post("/pause", params={"mode": "wait"})
        assert http.post("/resume", params={"bump_version": "false"}).json()["policy_version"] == version + 1
        assert http.post("/policy_version", json={"policy_version": 42}).json()["policy_version"] == 42
        assert http.get("/policy_version").json() == {"is_paused": False, "policy_version": 42}
        refused = http.post("/policy_version", json={"policy_version": "43"})
        assert refused.status_code == 400 and refused.json()["error"]["param"] == "policy_version"
    assert server.policy_version == 42
    client = server.client(max_retries=0)
    answer = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=2)
    assert answer.system_fingerprint.endswith("_v42")
