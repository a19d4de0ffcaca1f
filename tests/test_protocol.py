"""Unit tests of request parsing (`localoai.protocol`), without a server: `parse_request` on the
chat, completions and tokenize models (valid bodies, strictness, ranges, refused fields,
cross-field rules, the error each becomes) and `format_location`."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from localoai.errors import InvalidRequestError, UnsupportedFieldError
from localoai.protocol.base import format_location, parse_request
from localoai.protocol.chat import ChatCompletionRequest, TextPart, UserMessage
from localoai.protocol.completions import DEFAULT_MAX_TOKENS, CompletionRequest
from localoai.protocol.sampling import MAX_STOP_SEQUENCES
from localoai.protocol.tokenize import DetokenizeRequest, TokenizeRequest

MESSAGES = [{"role": "user", "content": "hi"}]

def chat(**fields: Any) -> str:
    return json.dumps({"model": "m", "messages": MESSAGES, **fields})


def completion(**fields: Any) -> str:
    return json.dumps({"model": "m", "prompt": "hello", **fields})


def error_of(model: type[BaseModel], body: str | bytes) -> InvalidRequestError:
    with pytest.raises(InvalidRequestError) as raised:
        parse_request(model, body)
    return raised.value


# --- format_location ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("loc", "expected"),
    [
        ((), ""),
        (("model",), "model"),
        (("messages", 0, "content"), "messages[0].content"),
        (("messages", 2, "content", 1, "text"), "messages[2].content[1].text"),
        (("tools", 0, "function", "name"), "tools[0].function.name"),
        (("prompt", 1, 3), "prompt[1][3]"),
        (("logit_bias", "50256"), "logit_bias.50256"),
        (("messages", 0, "function-after[_refuse(), FunctionMessage]"), "messages[0]"),
        (("messages", 0, "content", "list[tagged-union[TextPart,ImagePart]]", 0), "messages[0].content[0]"),
    ],
)
def test_format_location(loc: tuple[int | str, ...], expected: str) -> None:
    assert format_location(loc) == expected


# --- valid bodies ---------------------------------------------------------------------------


def test_minimal_chat_request() -> None:
    request = parse_request(ChatCompletionRequest, chat())
    assert request.model == "m"
    assert isinstance(request.messages[0], UserMessage)
    assert request.messages[0].content == "hi"
    assert request.stream is None and request.n is None and request.temperature is None
    assert request.add_generation_prompt is True and request.continue_final_message is False
    assert request.stop_sequences == ()
    assert request.max_new_tokens is None


def test_parse_accepts_bytes_and_str() -> None:
    assert parse_request(ChatCompletionRequest, chat().encode()) == parse_request(ChatCompletionRequest, chat())


def test_requests_are_frozen() -> None:
    request = parse_request(ChatCompletionRequest, chat())
    with pytest.raises(ValidationError):
        request.model = "other"  # type: ignore[misc]


def test_full_chat_request() -> None:
    body = chat(
        messages=[
            {"role": "system", "content": "be brief"},
            {"role": "developer", "content": [{"type": "text", "text": "dev"}]},
            {"role": "user", "content": [{"type": "text", "text": "weather?"}], "name": "ann"},
            {"role": "assistant", "content": None,
             "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "get", "arguments": "{}"}}]},
            {"role": "tool", "content": "sunny", "tool_call_id": "c1"},
        ],
        tools=[{"type": "function", "function": {"name": "get", "parameters": {"type": "object"}}}],
        tool_choice="auto",
        temperature=0.7,
        top_p=1,
        n=2,
        stop=["\n\n"],
        max_completion_tokens=32,
        max_tokens=8,
        logprobs=True,
        top_logprobs=3,
        logit_bias={"12": -100, "7": 2.5},
        seed=3,
        stream=True,
        stream_options={"include_usage": True},
        response_format={"type": "text"},
        top_k=-1,
        min_p=0.1,
        repetition_penalty=1.1,
        return_token_ids=True,
    )
    request = parse_request(ChatCompletionRequest, body)
    assert [m.role for m in request.messages] == ["system", "developer", "user", "assistant", "tool"]
    assert isinstance(request.messages[2].content[0], TextPart)  # type: ignore[index]
    assert request.max_new_tokens == 32  # max_completion_tokens wins over max_tokens
    assert request.stop_sequences == ("\n\n",)
    assert request.temperature == 0.7 and request.top_p == 1
    assert request.logit_bias == {"12": -100, "7": 2.5}
    assert request.stream_options is not None and request.stream_options.include_usage is True


def test_stop_string_becomes_one_sequence() -> None:
    assert parse_request(ChatCompletionRequest, chat(stop="END")).stop_sequences == ("END",)
    stops = [f"s{i}" for i in range(MAX_STOP_SEQUENCES)]
    assert parse_request(ChatCompletionRequest, chat(stop=stops)).stop_sequences == tuple(stops)


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("hello", ["hello"]),
        (["a", "b"], ["a", "b"]),
        ([1, 2, 3], [[1, 2, 3]]),
        ([[1, 2], [3]], [[1, 2], [3]]),
    ],
)
def test_completion_prompt_forms(prompt: Any, expected: list[Any]) -> None:
    request = parse_request(CompletionRequest, completion(prompt=prompt))
    assert request.prompts == expected
    assert request.max_tokens == DEFAULT_MAX_TOKENS


def test_completion_accepts_max_tokens_zero_and_best_of() -> None:
    request = parse_request(CompletionRequest, completion(max_tokens=0, n=2, best_of=3, echo=True, logprobs=5))
    assert (request.max_tokens, request.n, request.best_of, request.logprobs) == (0, 2, 3, 5)


@pytest.mark.parametrize(
    "fields",
    [{"store": False}, {"modalities": ["text"]}, {"tool_choice": "none"}, {"parallel_tool_calls": False},
     {"metadata": {"k": "v"}}, {"service_tier": "flex"}, {"top_logprobs": 0, "logprobs": True}],
)
def test_accepted_values_of_refusable_fields(fields: dict[str, Any]) -> None:
    request = parse_request(ChatCompletionRequest, chat(**fields))
    for name, value in fields.items():
        assert getattr(request, name) == value


def test_tokenize_and_detokenize_requests() -> None:
    assert parse_request(TokenizeRequest, '{"prompt": "hi"}').prompt == "hi"
    assert parse_request(TokenizeRequest, json.dumps({"messages": MESSAGES})).messages is not None
    assert parse_request(DetokenizeRequest, '{"tokens": [1, 2]}').tokens == [1, 2]


# --- errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "body", "param", "code"),
    [
        (ChatCompletionRequest, "{", None, "invalid_json"),
        (ChatCompletionRequest, "", None, "invalid_json"),
        (ChatCompletionRequest, "[]", None, "invalid_json"),
        (ChatCompletionRequest, "null", None, "invalid_json"),
        (ChatCompletionRequest, json.dumps({"messages": MESSAGES}), "model", "missing_required_parameter"),
        (ChatCompletionRequest, chat(model=5), "model", "invalid_value"),
        (ChatCompletionRequest, chat(messages=[]), "messages", "invalid_value"),
        (ChatCompletionRequest, chat(n=1.0), "n", "invalid_value"),
        (ChatCompletionRequest, chat(n=True), "n", "invalid_value"),
        (ChatCompletionRequest, chat(seed="1"), "seed", "invalid_value"),
        (ChatCompletionRequest, chat(logprobs=1), "logprobs", "invalid_value"),
        (ChatCompletionRequest, chat(temperature=2.0001), "temperature", "invalid_value"),
        (ChatCompletionRequest, chat(top_k=-2), "top_k", "invalid_value"),
        (ChatCompletionRequest, chat(min_p=1.5), "min_p", "invalid_value"),
        (ChatCompletionRequest, chat(repetition_penalty=0), "repetition_penalty", "invalid_value"),
        (ChatCompletionRequest, chat(service_tier="turbo"), "service_tier", "invalid_value"),
        (ChatCompletionRequest, chat(logit_bias={"-x": 1}), "logit_bias", "invalid_value"),
        (ChatCompletionRequest, chat(stop=""), "stop", "invalid_value"),
        (ChatCompletionRequest, chat(stream_options={"include_usage": True}), "stream_options", "invalid_value"),
        (ChatCompletionRequest, chat(stream=True, stream_options={"include_usage": "y"}),
         "stream_options.include_usage", "invalid_value"),
        (ChatCompletionRequest, chat(top_logprobs=1), "top_logprobs", "invalid_value"),
        (ChatCompletionRequest, chat(continue_final_message=True), "continue_final_message", "invalid_value"),
        (ChatCompletionRequest, chat(messages=[{"role": "robot", "content": "x"}]), "messages[0]", "invalid_value"),
        (ChatCompletionRequest, chat(messages=[{"content": "x"}]), "messages[0]", "invalid_value"),
        (ChatCompletionRequest, chat(tools=[{"type": "function", "function": {"name": "has space"}}]),
         "tools[0].function.name", "invalid_value"),
        (ChatCompletionRequest, chat(reasoning_effort="extreme"), "reasoning_effort", "invalid_value"),
        (ChatCompletionRequest, chat(verbosity="low"), "verbosity", "unsupported_parameter"),
        (ChatCompletionRequest, chat(moderation={}), "moderation", "unsupported_parameter"),
        (ChatCompletionRequest, chat(function_call="auto"), "function_call", "unsupported_parameter"),
        (ChatCompletionRequest, chat(tool_choice={"type": "function", "function": {"name": "f"}}), "tool_choice",
         "invalid_value"),
        (ChatCompletionRequest, chat(tool_choice={"type": "allowed_tools", "allowed_tools": {}}), "tool_choice",
         "unsupported_parameter"),
        (ChatCompletionRequest, chat(response_format={"type": "json_schema", "json_schema": {}}),
         "response_format.json_schema.name", "missing_required_parameter"),
        (ChatCompletionRequest, chat(metadata={str(i): "v" for i in range(17)}), "metadata", "invalid_value"),
        (ChatCompletionRequest, chat(bogus=1), "bogus", "unrecognized_argument"),
        (CompletionRequest, completion(logprobs=6), "logprobs", "invalid_value"),
        (CompletionRequest, completion(max_tokens=-1), "max_tokens", "invalid_value"),
        (CompletionRequest, completion(best_of=21), "best_of", "invalid_value"),
        (CompletionRequest, completion(suffix="x"), "suffix", "unsupported_parameter"),
        (CompletionRequest, completion(n=2, best_of=1), "best_of", "invalid_value"),
        (CompletionRequest, completion(best_of=2, stream=True), "best_of", "invalid_value"),
        (CompletionRequest, completion(messages=MESSAGES), "messages", "unrecognized_argument"),
        (TokenizeRequest, "{}", "prompt", "invalid_value"),
        (TokenizeRequest, json.dumps({"prompt": "a", "messages": MESSAGES}), "prompt", "invalid_value"),
        (DetokenizeRequest, '{"tokens": ["1"]}', "tokens[0]", "invalid_value"),
        (DetokenizeRequest, "{}", "tokens", "missing_required_parameter"),
    ],
)
def test_invalid_body_raises_named_error(model: type[BaseModel], body: str, param: str | None, code: str) -> None:
    error = error_of(model, body)
    assert error.status == 400
    assert error.type == "invalid_request_error"
    assert error.param == param
    assert error.code == code
    assert error.to_dict() == {"error": {"message": error.message, "type": error.type, "param": param, "code": code}}
    if param is not None:
        assert f"'{param}'" in error.message or error.message.endswith(param)


def test_unknown_field_message() -> None:
    error = error_of(ChatCompletionRequest, chat(frobnicate=True))
    assert error.message == "Unrecognized request argument supplied: frobnicate"


def test_refused_field_is_unsupported_error() -> None:
    error = error_of(ChatCompletionRequest, chat(verbosity="high"))
    assert isinstance(error, UnsupportedFieldError)
    assert error.message.startswith("Unsupported value for 'verbosity': ")


def test_out_of_range_message_shows_value() -> None:
    error = error_of(ChatCompletionRequest, chat(top_p=1.5))
    assert error.message == "Invalid value for 'top_p': Input should be less than or equal to 1 (got 1.5)."


def test_missing_message_names_field() -> None:
    assert error_of(CompletionRequest, '{"model": "m"}').message == "Missing required parameter: 'prompt'."


def test_invalid_json_is_not_chained() -> None:
    error = error_of(ChatCompletionRequest, "{")
    assert error.__cause__ is None and error.__suppress_context__


@pytest.mark.parametrize(
    ("model", "body", "param"),
    [
        pytest.param(ChatCompletionRequest, chat(temperature="1"), "temperature", id="number-union-type-name"),
        pytest.param(ChatCompletionRequest, chat(stop=["a", "b", "c", "d", "e"]), "stop", id="stop-union"),
        pytest.param(CompletionRequest, completion(prompt=5), "prompt", id="prompt-union"),
        pytest.param(CompletionRequest, completion(prompt=[]), "prompt", id="empty-prompt-list"),
        pytest.param(ChatCompletionRequest, chat(messages=[{"role": "user", "content": 5}]), "messages[0].content",
                     id="role-tag-and-content-union"),
        pytest.param(ChatCompletionRequest, chat(messages=[{"role": "user"}]), "messages[0].content",
                     id="role-tag-in-missing"),
        pytest.param(ChatCompletionRequest, chat(messages=[{"role": "function", "name": "f", "content": "x"}]),
                     "messages[0]", id="function-role-tag"),
        pytest.param(
            ChatCompletionRequest,
            chat(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]),
            "messages[0].content[0]",
            id="image-part",
        ),
    ],
)
def test_union_errors_name_the_field(model: type[BaseModel], body: str, param: str) -> None:
    assert error_of(model, body).param == param


def test_union_errors_are_still_400() -> None:
    """Whatever `param` says, a union mismatch is a 400 invalid_value, never an exception."""
    cases = [
        (chat(temperature="1"), "temperature"),
        (chat(stop=["a"] * 5), "stop"),
        (chat(messages=[{"role": "user", "content": 5}]), "messages[0]"),
    ]
    for body, field_prefix in cases:
        error = error_of(ChatCompletionRequest, body)
        assert (error.status, error.code) == (400, "invalid_value")
        assert error.param is not None and error.param.startswith(field_prefix)


def test_image_part_refusal_message_is_reported() -> None:
    body = chat(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}])
    error = error_of(ChatCompletionRequest, body)
    assert isinstance(error, UnsupportedFieldError)
    assert "image_url" in error.message


def test_strict_function_tools_are_accepted_as_agents_send_them() -> None:
    """openai-agents marks every function tool `strict`; accepted (not yet enforced, see README)."""
    request = parse_request(ChatCompletionRequest, chat(tools=[
        {"type": "function", "function": {"name": "f", "strict": True, "parameters": {"type": "object"}}}]))
    assert request.tools is not None and request.tools[0].function.strict is True
