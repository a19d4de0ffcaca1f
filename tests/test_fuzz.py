"""Property-based fuzzing, bounded for CI: every request model, every route of the live app (found
in its `url_map`), the raw HTTP layer. The long run is `benchmarks/fuzz.py` (figures in
benchmarks/README.md); the instances it found are pinned in tests/test_hostile.py."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from localoai.errors import OpenAIError
from localoai.protocol.base import parse_request
from localoai.testing import build_tiny_model, running_server
from localoai.testing.fuzz import (
    FUZZ_CONTEXT,
    body_bytes,
    discover_routes,
    field_names,
    json_requests,
    model_bodies,
    raw_requests,
    request_models,
    spoiled,
)
from localoai.testing.fuzz_answers import Tally, send
from localoai.testing.fuzz_raw import raw_http, send_raw

FUZZ = settings(max_examples=100, deadline=None, database=None, suppress_health_check=list(HealthCheck))
MODELS = request_models()
NAMES = field_names(MODELS)
Fuzzing = tuple[httpx.Client, st.SearchStrategy[Any], st.SearchStrategy[Any]]


@pytest.fixture(scope="module")
def fuzzed() -> Iterator[Any]:
    """A server of its own, on a model with a short context (a valid body's generation stays short):
    the fuzzer pauses, resumes, sets policy versions and deletes what it finds."""
    model, tokenizer = build_tiny_model(max_position_embeddings=FUZZ_CONTEXT)
    with running_server(model, tokenizer, name="tiny", reasoning_parser="none") as server:
        yield server


@pytest.fixture(scope="module")
def fuzzing(fuzzed: Any) -> Iterator[tuple[httpx.Client, st.SearchStrategy[Any], st.SearchStrategy[Any]]]:
    """A client, then spoiled JSON bodies and raw requests for every route (strategies built once)."""
    with httpx.Client(base_url=fuzzed.url, timeout=60) as client:
        response = client.post("/v1/responses", json={"model": "tiny", "input": "hi", "max_output_tokens": 2}).json()
        conversation = client.post("/v1/conversations", json={}).json()
        routes, ids = discover_routes(fuzzed.app), [response["id"], conversation["id"]]
        yield client, json_requests(routes, MODELS, ids), raw_requests(routes, ids)


def assert_sound(tally: Tally) -> None:
    assert not tally.server_errors, tally.server_errors
    assert not tally.bad_bodies, tally.bad_bodies
    assert not tally.hangs, tally.hangs


def test_every_route_of_the_app_is_fuzzed(fuzzed: Any) -> None:
    rules = {route.rule for route in discover_routes(fuzzed.app)}
    assert {"/v1/chat/completions", "/v1/responses", "/policy_version", "/tokenize"} <= rules
    assert len(MODELS) > 40  # every family's request models, nested ones included


@settings(max_examples=250, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(model=st.sampled_from(MODELS), data=st.data())
def test_request_models_refuse_with_openai_errors_only(model: Any, data: st.DataObject) -> None:
    """Validation alone: any spoiled body becomes the model or an `OpenAIError`, never another exception."""
    body = data.draw(spoiled(model_bodies([model]), NAMES))
    try:
        parse_request(model, body_bytes(body))
    except OpenAIError as error:  # anything else fails the test
        assert error.status == 400 and error.message
        json.dumps(error.to_dict())


@FUZZ
@given(data=st.data())
def test_spoiled_json_bodies_on_every_post_route(fuzzing: Fuzzing, data: st.DataObject) -> None:
    client, bodies, _ = fuzzing
    tally = Tally()
    send(client, data.draw(bodies), tally)
    assert_sound(tally)


@FUZZ
@given(data=st.data())
def test_raw_http_methods_paths_headers_and_bodies(fuzzing: Fuzzing, data: st.DataObject) -> None:
    client, _, raw = fuzzing
    tally = Tally()
    send(client, data.draw(raw), tally)
    assert_sound(tally)


def test_server_is_sound_after_fuzzing(fuzzed: Any, fuzzing: Fuzzing) -> None:
    client, _, _ = fuzzing
    assert client.get("/health").status_code == 200
    assert client.get("/is_paused").json()["is_paused"] is False
    fuzzed.served.recorder.flush()
    assert fuzzed.served.recorder.failed == 0 and fuzzed.store.stats()["failed_writes"] == 0
    assert fuzzed.served.engine.stats() == {"waiting": 0, "running": 0, "jobs": 0, "rows": 0}


@FUZZ
@given(data=raw_http())
def test_broken_http_framing_is_answered_in_shape_or_closed(fuzzed: Any, data: bytes) -> None:
    tally = Tally()
    send_raw(fuzzed.host, fuzzed.port, data, tally)
    assert_sound(tally)
