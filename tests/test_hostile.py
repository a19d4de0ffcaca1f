"""Hostile input on a live server: the minimized reproducers of the fuzz runs (issue 17), each a
400 naming its field before any generation, and what must hold after them (records still written).

The generators in `localoai.testing.fuzz` (tests/test_fuzz.py) look for the classes; these pin
the instances found, one per class, so a regression names itself."""

from __future__ import annotations

import json
import socket
from typing import Any

import httpx
import openai
import pytest

from localoai.store import SQLiteStore
from localoai.testing import running_server


def post(server: Any, path: str, body: bytes | dict[str, Any]) -> httpx.Response:
    content = body if isinstance(body, bytes) else None
    return httpx.post(f"{server.url}{path}", content=content, json=None if content is not None else body, timeout=60)


def refused(reply: httpx.Response, param: str | None, status: int = 400) -> dict[str, Any]:
    assert reply.status_code == status, reply.text
    error = reply.json()["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error", error
    return error


CHAT = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
COMPLETION = {"model": "tiny", "prompt": "hi", "max_tokens": 2}


def test_policy_version_past_64_bits_is_refused_and_records_go_on(server: Any, client: openai.OpenAI) -> None:
    refused(post(server, "/policy_version", b'{"policy_version": 9223372036854775808}'), "policy_version")
    refused(post(server, "/policy_version", b'{"policy_version": -9223372036854775809}'), "policy_version")
    answer = client.chat.completions.create(**CHAT)
    server.served.recorder.flush()
    assert server.store.get(answer.id) is not None
    with pytest.raises(ValueError, match="64 bits"):
        server.served.policy_version = 2**63


@pytest.mark.parametrize("path, body, param", [
    ("/v1/conversations", {"items": [{"type": ["m"]}]}, "items[0]"),
    ("/v1/responses/input_tokens", {"model": "tiny", "input": [{"type": [0]}]}, "input[0]"),
    ("/v1/responses", {"model": "tiny", "input": [{"type": {"a": 1}}], "tools": [{"type": ["x"]}]}, "input[0]"),
    ("/v1/responses", {"model": "tiny", "input": "hi", "tools": [{"type": ["function"]}]}, "tools[0]"),
])
def test_wrongly_typed_nested_items_are_refused(server: Any, path: str, body: dict[str, Any], param: str) -> None:
    reply = post(server, path, body)
    assert reply.status_code == 400, reply.text
    error = reply.json()["error"]
    assert error["type"] == "invalid_request_error" and str(error["param"]).startswith(param), error


def test_wrongly_typed_items_of_an_existing_conversation_are_refused(server: Any) -> None:
    conversation = post(server, "/v1/conversations", {}).json()["id"]
    reply = post(server, f"/v1/conversations/{conversation}/items", {"items": [{"type": ["m"]}]})
    assert reply.status_code == 400 and reply.json()["error"]["param"].startswith("items[0]")


@pytest.mark.parametrize("path, body", [("/v1/chat/completions", CHAT), ("/v1/completions", COMPLETION)])
@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("seed", [b"18446744073709551616", b"-9223372036854775809", b"1e400"])
def test_seed_out_of_range_is_refused_before_the_stream(server: Any, path: str, body: dict[str, Any], stream: bool,
                                                        seed: bytes) -> None:
    raw = json.dumps({**body, "stream": stream, "seed": "SEED"}).encode().replace(b'"SEED"', seed)
    refused(post(server, path, raw), "seed")


def test_largest_seeds_are_taken(client: openai.OpenAI) -> None:
    for seed in (2**63 - 1, -(2**63)):
        assert client.chat.completions.create(**CHAT, seed=seed).choices[0].finish_reason in ("stop", "length")


@pytest.mark.parametrize("constant", [b"NaN", b"Infinity", b"-Infinity", b"1e999"])
def test_non_finite_numbers_are_refused_everywhere(server: Any, constant: bytes) -> None:
    schema = b'{"type": "object", "properties": {"n": {"type": "number", "maximum": %s}}}' % constant
    body = b'{"model": "tiny", "messages": [{"role": "user", "content": "x"}], "response_format": {"type": ' \
           b'"json_schema", "json_schema": {"name": "n", "schema": %s}}}' % schema
    refused(post(server, "/v1/chat/completions", body), "response_format.json_schema.schema.properties.n.maximum")
    refused(post(server, "/v1/chat/completions", b'{"model": "tiny", "messages": [], "temperature": %s}' % constant),
            "temperature")
    refused(post(server, "/tokenize", b'{"prompt": "x", "chat_template_kwargs": {"a": [%s]}}' % constant),
            "chat_template_kwargs.a[0]")


@pytest.mark.parametrize("key", ["--5", "\u00b2", "\u0663", "-1", "99999999999"])
def test_logit_bias_keys_must_be_token_ids(server: Any, key: str) -> None:
    refused(post(server, "/v1/chat/completions", {**CHAT, "logit_bias": {key: 1}}), "logit_bias")


def test_tiny_temperature_samples_and_tiny_penalty_is_refused(server: Any, client: openai.OpenAI) -> None:
    answer = client.chat.completions.create(**CHAT, temperature=1e-40)  # JSON keeps it: no NaN probabilities
    assert answer.choices[0].finish_reason in ("stop", "length")
    refused(post(server, "/v1/chat/completions", {**CHAT, "repetition_penalty": 1e-40}), "repetition_penalty")


def test_client_chat_template_is_refused(server: Any) -> None:
    body = {**CHAT, "chat_template_kwargs": {"chat_template": "{{ 'x' * 10**9 }}"}}
    error = refused(post(server, "/v1/chat/completions", body), "chat_template_kwargs.chat_template")
    assert error["code"] == "unsupported_parameter"
    refused(post(server, "/tokenize", {"messages": CHAT["messages"], "chat_template_kwargs": {"chat_template": "x"}}),
            "chat_template_kwargs.chat_template")
    responses = {"model": "tiny", "input": "hi", "chat_template_kwargs": {"chat_template": "x"}}
    refused(post(server, "/v1/responses", responses),
            "chat_template_kwargs.chat_template")


def test_allowed_client_template_that_fails_is_a_400(tiny: tuple[Any, Any]) -> None:
    with running_server(*tiny, name="tiny", allow_client_chat_template=True) as server:
        good = {**CHAT, "chat_template_kwargs": {"chat_template": "{% for m in messages %}{{ m.content }}{% endfor %}"}}
        assert post(server, "/v1/chat/completions", good).status_code == 200
        bad = {**CHAT, "chat_template_kwargs": {"chat_template": "{{ 1/0 }}"}}
        refused(post(server, "/v1/chat/completions", bad), "messages")


def test_prompt_too_long_for_the_context_is_refused_untokenized(server: Any) -> None:
    longest = server.served.template_policy.max_prompt_chars
    error = refused(post(server, "/v1/completions", {**COMPLETION, "prompt": "a" * (longest + 1)}), "prompt")
    assert error["code"] == "context_length_exceeded"
    messages = [{"role": "user", "content": "a" * (longest + 1)}]
    refused(post(server, "/v1/chat/completions", {**CHAT, "messages": messages}), "messages")
    refused(post(server, "/tokenize", {"prompt": "a" * (longest + 1)}), "prompt")


def test_json_schema_format_without_schema(server: Any) -> None:
    body = {"model": "tiny", "input": "hi", "max_output_tokens": 2,
            "text": {"format": {"type": "json_schema", "name": "x"}}}
    reply = post(server, "/v1/responses", body)
    assert reply.status_code == 400 and reply.json()["error"]["param"].startswith("text.format"), reply.text


def test_no_static_route(server: Any) -> None:
    reply = httpx.get(f"{server.url}/static/x")
    assert reply.status_code == 404 and reply.json()["error"]["code"] == "unknown_url"
    assert not [rule for rule in server.app.url_map.iter_rules() if rule.rule.startswith("/static")]


@pytest.mark.parametrize("raw", [b"GARBAGE\r\n\r\n", b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
                                 b"GET /\x00 HTTP/1.1\r\n\r\n", b"POST /v1/completions HTTP/1.1\r\nHost: x\r\n"
                                 b"Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\nzz\r\n"])
def test_malformed_http_is_answered_or_closed_and_the_server_lives(server: Any, raw: bytes) -> None:
    with socket.create_connection((server.host, server.port), timeout=30) as conn:
        conn.sendall(raw)
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    assert answer == b"" or answer.startswith(b"HTTP/1.1 4"), answer[:200]
    if answer:  # hypercorn's own answers to broken HTTP carry the error body too
        assert json.loads(answer.partition(b"\r\n\r\n")[2])["error"]["type"] == "invalid_request_error"
    assert httpx.get(f"{server.url}/health").status_code == 200


class FailingStore(SQLiteStore):
    """A real store that cannot take records whose metadata says so (a full disk for one record)."""

    def put(self, record: Any) -> None:
        if record.metadata.get("fail") == "yes":
            self.failed_writes += 1
            raise OSError("disk full")
        super().put(record)


def test_a_lost_record_fails_its_request_loudly_and_stops_nothing_else(tiny: tuple[Any, Any]) -> None:
    with running_server(*tiny, name="tiny", store=FailingStore(":memory:")) as server:
        client = server.client(max_retries=0)
        with pytest.raises(openai.InternalServerError, match="record could not be written"):
            client.chat.completions.create(**CHAT, metadata={"fail": "yes"})
        with pytest.raises(openai.APIError, match="record could not be written"):
            for _ in client.chat.completions.create(**CHAT, metadata={"fail": "yes"}, stream=True):
                pass
        answer = client.chat.completions.create(**CHAT)
        assert server.store.get(answer.id) is not None
        assert server.served.recorder.failed == 2
        assert server.store.stats()["failed_writes"] == 4  # each lost record was tried twice


def test_responses_left_in_progress_are_closed_at_start(tiny: tuple[Any, Any], tmp_path: Any) -> None:
    path = tmp_path / "store.sqlite3"
    with running_server(*tiny, name="tiny", store=str(path)) as server:
        queued = server.client().responses.create(model="tiny", input="hi", background=True, max_output_tokens=2)
        server.served.recorder.flush()
        record = server.store.get(queued.id)
    # What a crash leaves: the response's record still in_progress, no task to finish it.
    store = SQLiteStore(path)
    store.put(type(record)(**{**record.__dict__, "status": "in_progress",
                              "output": {**record.output, "status": "in_progress"}}))
    store.close()
    with running_server(*tiny, name="tiny", store=str(path)) as server:
        retrieved = server.client().responses.retrieve(queued.id)
        assert retrieved.status == "failed" and retrieved.error is not None
        assert server.store.get(queued.id).status == "failed"
