"""The error model over real HTTP: every bad request gets OpenAI's error envelope.

Covers a parametrized table of malformed, out-of-range, refused and unknown inputs on
`/v1/chat/completions` and `/v1/completions` (exact status, exact envelope, `type`, `param`,
`code`), routing errors (404 / 405 / 413), the `openai` SDK's exception classes for them,
accepted no-op fields, the API key check, and a generation that fails inside the model
(500 / SSE error event, the server surviving it, validation never reaching the model).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import openai
import pytest

from localoai.testing import build_tiny_model, running_server


@pytest.fixture(scope="module")
def server(scripted_server: Any) -> Any:
    """This module's protocol tests run on the scripted engine (tests/conftest.py), not random weights."""
    return scripted_server


MODEL = "tiny"  # the session server's name (tests/conftest.py)
MESSAGES = [{"role": "user", "content": "hi"}]
ENVELOPE_KEYS = {"message", "type", "param", "code"}


# --- helpers ------------------------------------------------------------------------------


def chat(**fields: Any) -> dict[str, Any]:
    """A valid chat body (small max_tokens) with `fields` merged in; a None value drops the key."""
    body: dict[str, Any] = {"model": MODEL, "messages": MESSAGES, "max_tokens": 2}
    body.update(fields)
    return {key: value for key, value in body.items() if value is not None}


def completion(**fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"model": MODEL, "prompt": "hello", "max_tokens": 2}
    body.update(fields)
    return {key: value for key, value in body.items() if value is not None}


def assert_envelope(response: httpx.Response, status: int) -> dict[str, Any]:
    """Exactly `{"error": {message: str, type: str, param: str|None, code: str|None}}`; returns the inner dict."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) == ENVELOPE_KEYS
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["type"], str)
    assert error["param"] is None or isinstance(error["param"], str)
    assert error["code"] is None or isinstance(error["code"], str)
    if 400 <= status < 500:
        assert error["type"] == "invalid_request_error"
    return error


@dataclass(frozen=True)
class Case:
    id: str
    body: Any  # a dict/list is sent as JSON, bytes as they are
    status: int = 400
    param: str | None = None
    code: str | None = "invalid_value"
    message: str | None = None  # a substring the message must contain
    path: str = "/v1/chat/completions"

    def send(self, http: httpx.Client) -> httpx.Response:
        if isinstance(self.body, bytes):
            return http.post(self.path, content=self.body, headers={"content-type": "application/json"})
        return http.post(self.path, json=self.body)


def refused(name: str, value: Any) -> Case:
    return Case(f"refused-{name}", chat(**{name: value}), param=name, code="unsupported_parameter")


CASES: list[Case] = [
    # Malformed bodies.
    Case("invalid-json", b'{"model": "tiny", "messages": [', param=None, code="invalid_json",
         message="could not parse the JSON body"),
    Case("json-array", [chat()], param=None, code="invalid_json", message="must be a JSON object"),
    Case("missing-model", chat(model=None), param="model", code="missing_required_parameter",
         message="Missing required parameter: 'model'"),
    Case("missing-messages", chat(messages=None), param="messages", code="missing_required_parameter",
         message="Missing required parameter: 'messages'"),
    Case("empty-messages", chat(messages=[]), param="messages"),
    Case("unknown-field", chat(frobnicate=1), param="frobnicate", code="unrecognized_argument",
         message="Unrecognized request argument supplied: frobnicate"),
    # Wrong types (the models are strict: no coercion).
    Case("temperature-string", chat(temperature="1"), param="temperature"),
    Case("n-float", chat(n=1.9), param="n"),
    Case("max_tokens-string", chat(max_tokens="10"), param="max_tokens"),
    Case("stream-string", chat(stream="yes"), param="stream"),
    # Out of range.
    Case("temperature-2.5", chat(temperature=2.5), param="temperature"),
    Case("temperature-negative", chat(temperature=-0.1), param="temperature"),
    Case("top_p-1.5", chat(top_p=1.5), param="top_p"),
    Case("presence_penalty-3", chat(presence_penalty=3), param="presence_penalty"),
    Case("frequency_penalty-3", chat(frequency_penalty=3), param="frequency_penalty"),
    Case("n-0", chat(n=0), param="n"),
    Case("n-129", chat(n=129), param="n"),
    Case("max_tokens-0", chat(max_tokens=0), param="max_tokens"),
    Case("top_logprobs-21", chat(logprobs=True, top_logprobs=21), param="top_logprobs"),
    Case("top_logprobs-without-logprobs", chat(top_logprobs=2), param="top_logprobs",
         message="requires logprobs"),
    Case("completions-logprobs-6", completion(logprobs=6), param="logprobs", path="/v1/completions"),
    Case("logit_bias-value-200", chat(logit_bias={"5": 200}), param="logit_bias.5"),  # names the entry
    Case("logit_bias-key-not-int", chat(logit_bias={"hello": 1}), param="logit_bias", message="token ids"),
    Case("logit_bias-outside-vocab", chat(logit_bias={"999999": 1}), param="logit_bias",
         message="outside the vocabulary"),
    Case("stop-5-sequences", chat(stop=["a", "b", "c", "d", "e"]), param="stop"),
    Case("stop-empty-string", chat(stop=""), param="stop", message="must not be empty"),
    Case("stop-empty-in-list", chat(stop=["x", ""]), param="stop", message="must not be empty"),
    Case("max_tokens-beyond-context", chat(max_tokens=5000), param="max_tokens", code="context_length_exceeded",
         message="maximum context length is 2048 tokens"),
    Case("max_completion_tokens-beyond-context", chat(max_tokens=None, max_completion_tokens=5000),
         param="max_completion_tokens", code="context_length_exceeded"),
    Case("completions-max_tokens-beyond-context", completion(max_tokens=5000), param="max_tokens",
         code="context_length_exceeded", path="/v1/completions"),
    # Messages.
    Case("invalid-role", chat(messages=[{"role": "wizard", "content": "hi"}]), param="messages[0]",
         message="wizard"),
    Case("image_url-part",
         chat(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://x/y.png"}}]}]),
         param="messages[0].content[0]", code="unsupported_parameter", message="image_url"),
    # Unknown model.
    Case("unknown-model", chat(model="no-such-model"), status=404, param="model", code="model_not_found",
         message="no-such-model"),
    Case("completions-unknown-model", completion(model="no-such-model"), status=404, param="model",
         code="model_not_found", path="/v1/completions"),
    # Cross-field rules.
    Case("stream_options-without-stream", chat(stream_options={"include_usage": True}), param="stream_options"),
    Case("completions-suffix", completion(suffix="tail"), param="suffix", code="unsupported_parameter",
         path="/v1/completions"),
    Case("completions-best_of-below-n", completion(n=3, best_of=2), param="best_of", path="/v1/completions"),
    Case("completions-best_of-with-stream", completion(best_of=2, stream=True), param="best_of",
         path="/v1/completions"),
    Case("completions-unknown-field", completion(frobnicate=True), param="frobnicate", code="unrecognized_argument",
         message="Unrecognized request argument supplied: frobnicate", path="/v1/completions"),
    Case("completions-missing-prompt", completion(prompt=None), param="prompt", code="missing_required_parameter",
         path="/v1/completions"),
    # Documented fields this server refuses.
    refused("audio", {"voice": "alloy", "format": "wav"}),
    refused("modalities", ["text", "audio"]),
    Case("refused-response_format-keyword", chat(response_format={"type": "json_schema", "json_schema": {
        "name": "x", "schema": {"type": "array", "uniqueItems": True}}}), param="response_format.json_schema.schema",
        code="unsupported_parameter"),
    Case("refused-tool_choice-allowed_tools", chat(tool_choice={"type": "allowed_tools", "allowed_tools": {}}),
         param="tool_choice", code="unsupported_parameter"),
    refused("web_search_options", {}),
    refused("prediction", {"type": "content", "content": "hello"}),
    refused("functions", [{"name": "f", "parameters": {}}]),
    # A stream that is invalid is refused before the first byte, as JSON.
    Case("stream-with-invalid-temperature", chat(stream=True, temperature=2.5), param="temperature"),
]


def _params(check: str) -> list[Any]:
    out = []
    for case in CASES:
        out.append(pytest.param(case, id=case.id))
    return out


# --- fixtures -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def http(server: Any) -> Iterator[httpx.Client]:
    assert server.model == MODEL
    with httpx.Client(base_url=server.url, timeout=60) as client:
        yield client


# --- the table ----------------------------------------------------------------------------


@pytest.mark.parametrize("case", _params("envelope"))
def test_bad_request_gets_error_envelope(http: httpx.Client, case: Case) -> None:
    assert_envelope(case.send(http), case.status)


@pytest.mark.parametrize("case", _params("details"))
def test_bad_request_error_details(http: httpx.Client, case: Case) -> None:
    error = case.send(http).json()["error"]
    assert error["param"] == case.param
    assert error["code"] == case.code
    if case.message is not None:
        assert case.message in error["message"]


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        ("POST", "/v1/no-such-route", 404, "unknown_url"),
        ("GET", "/no-such-page", 404, "unknown_url"),
        ("PUT", "/v1/chat/completions", 405, "method_not_allowed"),
        ("PUT", "/v1/completions", 405, "method_not_allowed"),
        ("GET", "/v1/models/no-such-model", 404, "model_not_found"),
    ],
)
def test_routing_errors(http: httpx.Client, method: str, path: str, status: int, code: str) -> None:
    response = http.request(method, path, json={} if method != "GET" else None)
    error = assert_envelope(response, status)
    assert error["code"] == code


# --- the same errors through the openai SDK -------------------------------------------------


SDKCall = Callable[[openai.OpenAI], Any]

SDK_CASES: list[tuple[str, SDKCall, type[openai.APIStatusError], int, str | None, str | None]] = [
    ("temperature", lambda c: c.chat.completions.create(model=MODEL, messages=MESSAGES, temperature=2.5, max_tokens=2),
     openai.BadRequestError, 400, "temperature", "invalid_value"),
    ("unknown-field", lambda c: c.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=2,
                                                          extra_body={"frobnicate": 1}),
     openai.BadRequestError, 400, "frobnicate", "unrecognized_argument"),
    ("context", lambda c: c.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=5000),
     openai.BadRequestError, 400, "max_tokens", "context_length_exceeded"),
    ("response_format", lambda c: c.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=2,
                                                            response_format={"type": "json_schema", "json_schema": {
                                                                "name": "x", "schema": {"not": {}}}}),
     openai.BadRequestError, 400, "response_format.json_schema.schema", "unsupported_parameter"),
    ("stream-invalid", lambda c: c.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=2, n=0,
                                                           stream=True),
     openai.BadRequestError, 400, "n", "invalid_value"),
    ("unknown-model", lambda c: c.chat.completions.create(model="no-such-model", messages=MESSAGES, max_tokens=2),
     openai.NotFoundError, 404, "model", "model_not_found"),
    ("retrieve-unknown-model", lambda c: c.models.retrieve("no-such-model"),
     openai.NotFoundError, 404, "model", "model_not_found"),
    ("completions-logprobs", lambda c: c.completions.create(model=MODEL, prompt="hi", max_tokens=2, logprobs=6),
     openai.BadRequestError, 400, "logprobs", "invalid_value"),
    ("completions-suffix", lambda c: c.completions.create(model=MODEL, prompt="hi", max_tokens=2, suffix="x"),
     openai.BadRequestError, 400, "suffix", "unsupported_parameter"),
]


@pytest.mark.parametrize(("call", "exc_type", "status", "param", "code"),
                         [pytest.param(*case[1:], id=case[0]) for case in SDK_CASES])
def test_sdk_raises_matching_exception(
    client: openai.OpenAI, call: SDKCall, exc_type: type[openai.APIStatusError], status: int, param: str | None,
    code: str | None,
) -> None:
    with pytest.raises(exc_type) as raised:
        call(client)
    exc = raised.value
    assert exc.status_code == status
    assert exc.type == "invalid_request_error"
    assert exc.param == param
    assert exc.code == code
    assert isinstance(exc.body, dict) and set(exc.body) == ENVELOPE_KEYS


def test_sdk_unknown_field_message(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=2, extra_body={"best_of": 2})
    assert isinstance(raised.value.body, dict)
    assert raised.value.body["message"] == "Unrecognized request argument supplied: best_of"


# --- accepted no-op fields ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("user", "user-1234"),
        ("metadata", {"experiment": "errors"}),
        ("service_tier", "auto"),
        ("prompt_cache_key", "cache-key"),
        ("safety_identifier", "hashed-id"),
        ("store", False),
        ("n", 1),
        ("parallel_tool_calls", True),
    ],
)
def test_accepted_noop_field(http: httpx.Client, name: str, value: Any) -> None:
    response = http.post("/v1/chat/completions", json=chat(**{name: value}))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "chat.completion"
    assert len(body["choices"]) == 1
    assert body["usage"]["completion_tokens"] <= 2


# --- servers of their own: body limit, API key ------------------------------------------------


def test_oversized_body_is_413(tiny: tuple[Any, Any]) -> None:
    model, tokenizer = tiny
    with running_server(model, tokenizer, name="errors-small-body", max_body_bytes=1024) as small, \
            httpx.Client(base_url=small.url, timeout=60) as http:
        big = {"model": small.model, "messages": [{"role": "user", "content": "x" * 4096}], "max_tokens": 2}
        response = http.post("/v1/chat/completions", json=big)
        error = assert_envelope(response, 413)
        assert error["code"] == "request_too_large"
        assert response.headers["connection"] == "close"  # the unread body: the client must not reuse it
        assert error["param"] is None

        data = json.dumps(big).encode()
        chunked = iter([data[i : i + 512] for i in range(0, len(data), 512)])  # no content-length
        response = http.post("/v1/chat/completions", content=chunked, headers={"content-type": "application/json"})
        assert assert_envelope(response, 413)["code"] == "request_too_large"

        fits = {"model": small.model, "messages": MESSAGES, "max_tokens": 2}
        assert http.post("/v1/chat/completions", json=fits).status_code == 200


@pytest.fixture(scope="module")
def secured(tiny: tuple[Any, Any]) -> Iterator[Any]:
    model, tokenizer = tiny
    with running_server(model, tokenizer, name="errors-secured", api_key="secret") as running:
        yield running


def test_auth_missing_key_is_401(secured: Any) -> None:
    response = httpx.post(f"{secured.url}/v1/chat/completions", timeout=60,
                          json={"model": secured.model, "messages": MESSAGES, "max_tokens": 2})
    error = assert_envelope(response, 401)
    assert error["code"] == "invalid_api_key"
    assert error["param"] is None


def test_auth_wrong_key_is_401(secured: Any) -> None:
    response = httpx.post(f"{secured.url}/v1/chat/completions", timeout=60,
                          headers={"Authorization": "Bearer wrong"},
                          json={"model": secured.model, "messages": MESSAGES, "max_tokens": 2})
    assert assert_envelope(response, 401)["code"] == "invalid_api_key"

    wrong = openai.OpenAI(base_url=secured.base_url, api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as raised:
        wrong.chat.completions.create(model=secured.model, messages=MESSAGES, max_tokens=2)
    assert raised.value.status_code == 401
    assert raised.value.code == "invalid_api_key"


def test_auth_right_key_is_200(secured: Any) -> None:
    completion = secured.client(max_retries=0).chat.completions.create(
        model=secured.model, messages=MESSAGES, max_tokens=2
    )
    assert completion.choices[0].message.role == "assistant"
    response = httpx.get(f"{secured.url}/v1/models", headers={"Authorization": "Bearer secret"}, timeout=60)
    assert response.status_code == 200


def test_auth_health_needs_no_key(secured: Any) -> None:
    response = httpx.get(f"{secured.url}/health", timeout=60)
    assert response.status_code == 200
    assert response.json()["status"] == "ok"


def test_auth_is_checked_before_routing(secured: Any) -> None:
    assert assert_envelope(httpx.get(f"{secured.url}/v1/models", timeout=60), 401)["code"] == "invalid_api_key"


def test_second_server_on_any_port_leaves_same_named_server_running(tiny: tuple[Any, Any]) -> None:
    model, tokenizer = tiny
    with running_server(model, tokenizer, name="errors-twin") as first:
        with running_server(model, tokenizer, name="errors-twin") as second:
            assert second.running
            assert first.running


# --- a generation that fails inside the model ------------------------------------------------


@dataclass
class FailingModel:
    server: Any
    fail: threading.Event
    forward_calls: list[int]

    @property
    def calls(self) -> int:
        return self.forward_calls[0]


SECRET_TEXT = "injected failure 7f3a: do not leak"


@pytest.fixture(scope="module")
def failing() -> Iterator[FailingModel]:
    """A real tiny model with a forward pre-hook that counts calls and raises while `fail` is set."""
    model, tokenizer = build_tiny_model()
    fail = threading.Event()
    forward_calls = [0]

    def hook(module: Any, args: Any) -> None:
        forward_calls[0] += 1
        if fail.is_set():
            raise RuntimeError(SECRET_TEXT)

    handle = model.register_forward_pre_hook(hook)
    try:
        with running_server(model, tokenizer, name="errors-failing") as running:
            yield FailingModel(running, fail, forward_calls)
    finally:
        handle.remove()


@pytest.fixture
def failing_now(failing: FailingModel) -> Iterator[FailingModel]:
    failing.fail.set()
    try:
        yield failing
    finally:
        failing.fail.clear()


def _body(server: Any, **fields: Any) -> dict[str, Any]:
    return {"model": server.model, "messages": MESSAGES, "max_tokens": 3, **fields}


def test_failed_generation_is_500(failing_now: FailingModel) -> None:
    server = failing_now.server
    response = httpx.post(f"{server.url}/v1/chat/completions", json=_body(server), timeout=60)
    error = assert_envelope(response, 500)
    assert error["type"] == "server_error"
    assert response.headers["x-should-retry"] == "false"
    assert SECRET_TEXT not in response.text
    assert "RuntimeError" not in response.text

    completions = httpx.post(f"{server.url}/v1/completions", timeout=60,
                             json={"model": server.model, "prompt": "hi", "max_tokens": 3})
    assert assert_envelope(completions, 500)["type"] == "server_error"
    assert SECRET_TEXT not in completions.text


def test_failed_generation_is_not_retried_by_sdk(failing_now: FailingModel) -> None:
    server = failing_now.server
    before = failing_now.calls
    with pytest.raises(openai.InternalServerError) as raised:
        server.client(max_retries=2).chat.completions.create(**_body(server))
    assert raised.value.status_code == 500
    assert raised.value.type == "server_error"
    assert SECRET_TEXT not in str(raised.value)
    assert failing_now.calls == before + 1  # x-should-retry: false, so the SDK sent it once


def test_failed_stream_sends_error_event(failing_now: FailingModel) -> None:
    server = failing_now.server
    with httpx.stream("POST", f"{server.url}/v1/chat/completions", json=_body(server, stream=True),
                      timeout=60) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line]
    assert all(line.startswith("data: ") for line in lines)
    payloads = [line.removeprefix("data: ") for line in lines]
    assert payloads[-1] == "[DONE]"
    errors = [json.loads(p) for p in payloads[:-1] if "error" in json.loads(p)]
    assert len(errors) == 1
    assert set(errors[0]) == {"error"}
    assert set(errors[0]["error"]) == ENVELOPE_KEYS
    assert errors[0]["error"]["type"] == "server_error"
    assert SECRET_TEXT not in "\n".join(lines)


def test_failed_stream_raises_in_sdk(failing_now: FailingModel) -> None:
    server = failing_now.server
    stream = server.client(max_retries=0).chat.completions.create(**_body(server, stream=True))
    with pytest.raises(openai.APIError) as raised:
        for _ in stream:
            pass
    assert SECRET_TEXT not in str(raised.value)
    assert isinstance(raised.value.body, dict) and raised.value.body["type"] == "server_error"


def test_server_survives_failed_generation(failing: FailingModel) -> None:
    server = failing.server
    failing.fail.set()
    try:
        assert httpx.post(f"{server.url}/v1/chat/completions", json=_body(server), timeout=60).status_code == 500
    finally:
        failing.fail.clear()
    assert server.running
    response = httpx.post(f"{server.url}/v1/chat/completions", json=_body(server), timeout=60)
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["finish_reason"] in ("length", "stop")
    chunks = list(server.client(max_retries=0).chat.completions.create(**_body(server, stream=True)))
    assert chunks[-1].choices[0].finish_reason in ("length", "stop")


@pytest.mark.parametrize(
    ("fields", "status"),
    [
        ({"temperature": 2.5}, 400),
        ({"max_tokens": 5000}, 400),
        ({"logit_bias": {"999999": 5}}, 400),
        ({"stream": True, "n": 0}, 400),
        ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"not": {}}}}}, 400),
        ({"model": "no-such-model"}, 404),
    ],
)
def test_invalid_request_never_reaches_model(failing: FailingModel, fields: dict[str, Any], status: int) -> None:
    server = failing.server
    before = failing.calls
    response = httpx.post(f"{server.url}/v1/chat/completions", json=_body(server, **fields), timeout=60)
    assert_envelope(response, status)
    assert failing.calls == before
    # The hook does count: a valid request runs the model.
    assert httpx.post(f"{server.url}/v1/chat/completions", json=_body(server), timeout=60).status_code == 200
    assert failing.calls > before
