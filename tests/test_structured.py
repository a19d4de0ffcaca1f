"""Structured outputs by constrained decoding, end to end through the official `openai` SDK.

The model has random weights, so whatever it writes is the grammar's doing: every sample must be
valid against its schema (checked with `jsonschema`), and every forced tool call must name an
offered tool with valid arguments. Schemas bound their strings, arrays and integers: a random
model would otherwise write until `max_tokens` and the JSON would be cut (not a grammar failure).
"""

from __future__ import annotations

import json
from typing import Any, Literal

import jsonschema
import openai
import pytest
from pydantic import BaseModel, Field

MODEL = "tiny"
MESSAGES = [{"role": "user", "content": "Describe a person as JSON."}]

PERSON: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 6},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "role": {"enum": ["admin", "editor", "viewer"]},
        "address": {
            "type": "object",
            "properties": {
                "city": {"enum": ["paris", "tokyo", "lima"]},
                "zip": {"type": "string", "pattern": "^[0-9]{5}$"},
                "geo": {
                    "type": "object",
                    "properties": {"north": {"type": "boolean"}, "zone": {"type": "integer", "minimum": 1,
                                                                           "maximum": 60}},
                    "required": ["north", "zone"],
                    "additionalProperties": False,
                },
            },
            "required": ["city", "zip", "geo"],
            "additionalProperties": False,
        },
        "pets": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"kind": {"enum": ["cat", "dog"]}, "age": {"type": "integer", "minimum": 0,
                                                                         "maximum": 30}},
                "required": ["kind", "age"],
                "additionalProperties": False,
            },
            "maxItems": 2,
        },
    },
    "required": ["name", "age", "role", "address", "pets"],
    "additionalProperties": False,
}
PERSON_FORMAT = {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON, "strict": True}}

WEATHER = {"type": "object", "properties": {"city": {"enum": ["paris", "tokyo"]},
                                            "unit": {"enum": ["celsius", "fahrenheit"]}},
           "required": ["city", "unit"], "additionalProperties": False}
SEARCH = {"type": "object", "properties": {"query": {"type": "string", "maxLength": 12},
                                           "limit": {"type": "integer", "minimum": 1, "maximum": 9}},
          "required": ["query", "limit"], "additionalProperties": False}
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "parameters": WEATHER}},
    {"type": "function", "function": {"name": "search", "parameters": SEARCH}},
]
SCHEMAS = {"get_weather": WEATHER, "search": SEARCH}


def assert_valid_calls(message: Any, names: set[str]) -> None:
    assert message.tool_calls, message
    assert not message.content
    for call in message.tool_calls:
        assert call.function.name in names
        jsonschema.validate(json.loads(call.function.arguments), SCHEMAS[call.function.name])


def test_json_schema_holds_in_50_of_50_samples(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(model=MODEL, messages=MESSAGES, n=50, seed=1, max_tokens=400,
                                                response_format=PERSON_FORMAT)
    assert len(completion.choices) == 50
    for choice in completion.choices:
        assert choice.finish_reason == "stop"
        jsonschema.validate(json.loads(choice.message.content), PERSON)


def test_the_trace_keeps_the_grammar_and_logprobs_come_from_the_masked_distribution(
    client: openai.OpenAI, server: Any,
) -> None:
    completion = client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=400, seed=3,
                                                response_format=PERSON_FORMAT, logprobs=True, top_logprobs=5)
    record = server.store.get(completion.id)
    assert '"maxLength": 6' in record.sampling["constraint"]["grammar"]
    first = completion.choices[0].logprobs.content[0]
    # The grammar allows only tokens that open the object: every other alternative is impossible.
    assert first.token.startswith("{")
    for alternative in first.top_logprobs:
        assert alternative.token.startswith("{") or alternative.logprob == -9999.0


def test_json_object_holds_against_a_strong_logit_bias(client: openai.OpenAI, tiny: tuple[Any, Any]) -> None:
    """Unconstrained, half the samples would start with `}`. (Biasing `{` over `{"` also keeps the
    random model out of an endless key: any JSON object is allowed.)"""
    bias = {str(tiny[1].convert_tokens_to_ids(token)): 30 for token in ("{", "}")}
    completion = client.chat.completions.create(model=MODEL, messages=MESSAGES, n=4, seed=4, max_tokens=50,
                                                response_format={"type": "json_object"}, logit_bias=bias)
    for choice in completion.choices:
        assert choice.finish_reason == "stop"
        assert json.loads(choice.message.content) == {}


@pytest.mark.parametrize("parallel", [True, False])
def test_tool_choice_required_always_calls_an_offered_tool_validly(client: openai.OpenAI, parallel: bool) -> None:
    completion = client.chat.completions.create(model=MODEL, messages=MESSAGES, n=4 if parallel else 6, seed=5,
                                                max_tokens=300, tools=TOOLS, tool_choice="required",
                                                parallel_tool_calls=parallel)
    for choice in completion.choices:
        assert choice.finish_reason == "tool_calls"
        assert_valid_calls(choice.message, set(SCHEMAS))
        if not parallel:
            assert len(choice.message.tool_calls) == 1


def test_a_named_tool_choice_calls_that_tool(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model=MODEL, messages=MESSAGES, n=4, seed=6, max_tokens=300, tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "search"}},
    )
    for choice in completion.choices:
        assert_valid_calls(choice.message, {"search"})
        assert len(choice.message.tool_calls) == 1


def test_a_strict_tool_call_is_valid_once_the_model_opens_it(client: openai.OpenAI, tiny: tuple[Any, Any]) -> None:
    """`tool_choice: auto`: text is free, but a call the model starts must be valid. A bias makes the
    random model open calls at once; unconstrained it would write `<tool_call>` over and over."""
    tools = [{**tool, "function": {**tool["function"], "strict": True}} for tool in TOOLS]
    tool_call = tiny[1].convert_tokens_to_ids("<tool_call>")
    completion = client.chat.completions.create(model=MODEL, messages=MESSAGES, n=2, seed=7, max_tokens=80,
                                                tools=tools, logit_bias={str(tool_call): 100})
    for choice in completion.choices:
        assert choice.message.tool_calls
        for call in choice.message.tool_calls:
            jsonschema.validate(json.loads(call.function.arguments), SCHEMAS[call.function.name])


def test_streaming_under_a_constraint(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(model=MODEL, messages=MESSAGES, n=3, seed=8, max_tokens=400,
                                            response_format=PERSON_FORMAT, stream=True)
    texts: dict[int, str] = {}
    for chunk in stream:
        for choice in chunk.choices:
            texts[choice.index] = texts.get(choice.index, "") + (choice.delta.content or "")
    assert len(texts) == 3
    for text in texts.values():
        jsonschema.validate(json.loads(text), PERSON)
    with client.chat.completions.stream(model=MODEL, messages=MESSAGES, seed=9, max_tokens=300, tools=TOOLS,
                                        tool_choice="required") as events:
        final = events.get_final_completion()
    assert_valid_calls(final.choices[0].message, set(SCHEMAS))


class Geo(BaseModel):
    north: bool
    zone: int = Field(ge=1, le=60)


class Person(BaseModel):
    name: str = Field(max_length=6)
    role: Literal["admin", "editor", "viewer"]
    geo: Geo
    tags: list[Literal["a", "b", "c"]] = Field(max_length=3)


def test_parse_helpers_return_parsed_objects(client: openai.OpenAI) -> None:
    completion = client.chat.completions.parse(model=MODEL, messages=MESSAGES, seed=10, max_tokens=300,
                                               response_format=Person)
    assert isinstance(completion.choices[0].message.parsed, Person)
    response = client.responses.parse(model=MODEL, input="Describe a person.", max_output_tokens=300,
                                      text_format=Person, temperature=1.0)
    assert isinstance(response.output_parsed, Person)
    assert response.text.format.type == "json_schema" and response.text.format.name == "Person"
    with client.responses.stream(model=MODEL, input="Describe a person.", max_output_tokens=300,
                                 text_format=Person) as events:
        assert isinstance(events.get_final_response().output_parsed, Person)


def test_responses_force_a_named_function_and_json_object(client: openai.OpenAI) -> None:
    tools = [{"type": "function", "name": tool["function"]["name"], "parameters": tool["function"]["parameters"]}
             for tool in TOOLS]
    response = client.responses.create(model=MODEL, input="Weather?", max_output_tokens=300, tools=tools,
                                       tool_choice={"type": "function", "name": "get_weather"})
    [call] = response.output
    assert call.type == "function_call" and call.name == "get_weather"
    jsonschema.validate(json.loads(call.arguments), WEATHER)
    assert response.tool_choice.name == "get_weather"
    response = client.responses.create(model=MODEL, input="Weather?", max_output_tokens=300, tools=tools,
                                       tool_choice="required", parallel_tool_calls=False)
    [call] = response.output
    jsonschema.validate(json.loads(call.arguments), SCHEMAS[call.name])
    response = client.responses.create(model=MODEL, input="JSON please", max_output_tokens=300,
                                       text={"format": {"type": "json_schema", "name": "p", "schema": PERSON}})
    jsonschema.validate(json.loads(response.output_text), PERSON)


@pytest.mark.parametrize(("request_fields", "param", "named"), [
    ({"response_format": {"type": "json_schema", "json_schema": {
        "name": "x", "schema": {"type": "array", "uniqueItems": True}}}},
     "response_format.json_schema.schema", "uniqueItems"),
    ({"tools": [{"type": "function", "function": {"name": "f", "strict": True, "parameters": {
        "type": "object", "properties": {"a": {"type": "integer", "not": {"const": 3}}}}}}]},
     "tools[0].function.parameters", "not"),
    ({"tools": TOOLS[:1], "tool_choice": "required", "ignore_eos": True}, "ignore_eos", "structured outputs"),
    ({"tool_choice": "required"}, "tool_choice", "tools"),
    ({"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice", "nope"),
    ({"tools": TOOLS, "tool_choice": {"type": "allowed_tools", "allowed_tools": {"mode": "auto", "tools": []}}},
     "tool_choice", "allowed_tools"),
])
def test_what_cannot_be_enforced_is_a_400_before_generation(
    client: openai.OpenAI, request_fields: dict[str, Any], param: str, named: str,
) -> None:
    extra = {key: request_fields.pop(key) for key in ("ignore_eos",) if key in request_fields}
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=5, extra_body=extra or None,
                                       **request_fields)
    error = caught.value.body
    assert error["param"] == param and named in error["message"], error


def test_responses_name_unsupported_schema_keywords(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model=MODEL, input="x", text={"format": {
            "type": "json_schema", "name": "x", "schema": {"type": "object", "dependentRequired": {"a": ["b"]}}}})
    assert caught.value.body["param"] == "text.format.schema" and "dependentRequired" in caught.value.body["message"]


def test_forcing_a_call_needs_a_known_tool_call_format(tiny: tuple[Any, Any]) -> None:
    from localoai.testing import running_server

    model, tokenizer = tiny
    with running_server(model, tokenizer, name=MODEL, tool_parser="pythonic") as server:
        client = server.client(max_retries=0)
        with pytest.raises(openai.BadRequestError) as caught:
            client.chat.completions.create(model=MODEL, messages=MESSAGES, tools=TOOLS, tool_choice="required")
        assert caught.value.body["param"] == "tool_choice" and "pythonic" in caught.value.body["message"]
        # json_schema needs no tool-call format.
        completion = client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=400, seed=11,
                                                    response_format=PERSON_FORMAT)
        jsonschema.validate(json.loads(completion.choices[0].message.content), PERSON)

