"""Hostile requests for every route the app serves, and the checks each answer must pass.

Routes come from the app's own `url_map` and bodies from every `RequestModel` the app imports
(their JSON schemas), so a route or a model added later is fuzzed without a list to update.
Each generated body is then spoiled at one random place with a hostile value: integers past 64
bits, NaN / Infinity, wrong types, unicode digits, deep nesting, another model's field. The
raw layer varies methods, paths, content types and headers. `localoai.testing.fuzz_answers` checks
what comes back.
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from hypothesis import strategies as st

from localoai.protocol.base import RequestModel
from localoai.protocol.response_items import compaction_content

GENERATED_PREFIXES = ("chatcmpl-", "cmpl-", "resp_", "msg_", "generate-tokens-")
"""Ids of answers recorded under that id: chat, completions, Responses, Messages, token-in generate."""
FUZZ_CONTEXT = 96
"""The fuzzed model's context: a valid body that asks for "as many tokens as fit" stays cheap."""
_PARAM = re.compile(r"<(?:[a-z]+:)?([a-z_]+)>")

# Valid starting points for the routes whose bodies a schema alone rarely gets right.
SEEDS: dict[str, list[dict[str, Any]]] = {
    "/v1/chat/completions": [{"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3},
                             {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3,
                              "stream": True, "seed": 7, "logit_bias": {"5": 1}}],
    "/v1/completions": [{"model": "tiny", "prompt": "hi", "max_tokens": 3},
                        {"model": "tiny", "prompt": [1, 2, 3], "max_tokens": 3, "stream": True}],
    "/v1/responses": [{"model": "tiny", "input": "hi", "max_output_tokens": 3},
                      {"model": "tiny", "input": [{"role": "user", "content": "hi"}], "max_output_tokens": 3,
                       "stream": True}],
    "/v1/responses/input_tokens": [{"model": "tiny", "input": [{"type": "message", "role": "user", "content": "hi"}]},
                                   {"model": "tiny", "input": [{"type": "compaction",
                                                                "encrypted_content": compaction_content("so far")}]}],
    "/v1/responses/compact": [{"model": "tiny", "input": [{"role": "user", "content": "hi"}], "max_output_tokens": 3}],
    "/v1/conversations": [{"items": [{"type": "message", "role": "user", "content": "hi"}], "metadata": {"a": "b"}}],
    "/tokenize": [{"prompt": "hi"}, {"messages": [{"role": "user", "content": "hi"}]}],
    "/detokenize": [{"tokens": [1, 2]}],
    "/policy_version": [{"policy_version": 3}],
    "/v1/messages": [{"model": "tiny", "max_tokens": 3, "messages": [{"role": "user", "content": "hi"}]},
                     {"model": "tiny", "max_tokens": 3, "stream": True,
                      "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]}],
    "/inference/v1/generate": [{"token_ids": [1, 2, 3], "sampling_params": {"max_tokens": 3}},
                               {"token_ids": [1, 2], "sampling_params": {"max_tokens": 3}, "stream": True}],
}
ITEM_SEED = {"items": [{"type": "message", "role": "user", "content": "hi"}]}
METADATA_SEED = {"metadata": {"a": "b"}}


@dataclass(frozen=True)
class Route:
    rule: str
    methods: frozenset[str]
    params: tuple[str, ...]


def discover_routes(app: Any) -> list[Route]:
    """Every rule of the Quart app, with the methods it answers and its path parameters."""
    return [Route(rule.rule, frozenset(rule.methods or ()), tuple(_PARAM.findall(rule.rule)))
            for rule in app.url_map.iter_rules()]


def request_models() -> list[type[RequestModel]]:
    """Every request model the app's routes import (new families' included)."""
    import localoai.app  # noqa: F401  # defines them all

    found: list[type[RequestModel]] = []
    pending = list(RequestModel.__subclasses__())
    while pending:
        model = pending.pop()
        if model not in found:
            found.append(model)
            pending.extend(model.__subclasses__())
    return sorted(found, key=lambda model: f"{model.__module__}.{model.__qualname__}")


def field_names(models: Iterable[type[RequestModel]]) -> list[str]:
    return sorted({name if info.alias is None else info.alias
                   for model in models for name, info in model.model_fields.items()})


# -- values ---------------------------------------------------------------------------------------

BIG_INTEGERS = [2**63, 2**64, 2**64 - 1, -(2**63) - 1, 2**31, -(2**31) - 1, 10**30, -1, 0, 2**63 - 1]
ODD_FLOATS = [math.nan, math.inf, -math.inf, 1e-45, 1e-320, -0.0, 1e308, 5e-324]
ODD_STRINGS = ["", "--5", "²", "٣", "1e5", "-0", " 1", "NaN", "\x00", "\ud7ff" * 3, "{{ 1/0 }}", "a" * 5000,
               "{% for x in range(10**9) %}{% endfor %}"]


def hostile_values(names: list[str]) -> st.SearchStrategy[Any]:
    return _hostile_values(tuple(names))


@functools.lru_cache(maxsize=16)
def _hostile_values(names: tuple[str, ...]) -> st.SearchStrategy[Any]:
    """Built once per name list: a recursive strategy built at each draw costs more than the draw."""
    leaves = st.one_of(
        st.sampled_from(BIG_INTEGERS), st.integers(), st.sampled_from(ODD_FLOATS), st.floats(),
        st.sampled_from(ODD_STRINGS), st.text(max_size=20), st.booleans(), st.none(),
    )
    return st.recursive(
        leaves,
        lambda children: st.one_of(
            st.lists(children, max_size=4),
            st.dictionaries(st.sampled_from(names) | st.text(max_size=8), children, max_size=4),
        ),
        max_leaves=12,
    ) | st.builds(_deep, st.integers(min_value=50, max_value=3000))


_DEEP = re.compile(rb'"__deep_([0-9]+)__"')


def _deep(depth: int) -> str:
    """A list nested `depth` deep, spelled out by `body_bytes` (json.dumps would recurse that deep)."""
    return f"__deep_{depth}__"


def from_schema(schema: dict[str, Any], defs: dict[str, Any], depth: int = 0) -> st.SearchStrategy[Any]:
    """A plausible value for a pydantic JSON schema (required fields, some optional ones)."""
    if depth > 5:
        return st.none()
    if "$ref" in schema:
        return from_schema(defs[schema["$ref"].rsplit("/", 1)[-1]], defs, depth + 1)
    if "const" in schema:
        return st.just(schema["const"])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return st.one_of([from_schema(option, defs, depth + 1) for option in schema[key]])
    kind = schema.get("type")
    if kind == "object":
        properties = schema.get("properties", {})
        required = set(schema.get("required", []))
        optional = sorted(set(properties) - required)
        return st.fixed_dictionaries(
            {name: from_schema(properties[name], defs, depth + 1) for name in sorted(required)},
            optional={name: from_schema(properties[name], defs, depth + 1) for name in optional[:8]},
        ) if properties else st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=2)
    if kind == "array":
        return st.lists(from_schema(schema.get("items", {}), defs, depth + 1), min_size=schema.get("minItems", 0),
                        max_size=min(schema.get("maxItems", 3), 3))
    if kind == "string":
        return st.sampled_from(["tiny", "hi", "user", "text"]) | st.text(max_size=10)
    if kind == "integer":
        low, high = schema.get("minimum", 0), schema.get("maximum", 8)
        return st.integers(min_value=low, max_value=max(low, min(high, low + 8)))
    if kind == "number":
        return st.floats(min_value=schema.get("minimum", 0.0), max_value=schema.get("maximum", 1.0))
    if kind == "boolean":
        return st.booleans()
    if kind == "null":
        return st.none()
    return st.none() | st.text(max_size=5)


def model_bodies(models: list[type[RequestModel]]) -> st.SearchStrategy[Any]:
    return _model_bodies(tuple(models))


@functools.lru_cache(maxsize=256)
def _model_bodies(models: tuple[type[RequestModel], ...]) -> st.SearchStrategy[Any]:
    schemas = [model.model_json_schema() for model in models]
    return st.one_of([from_schema(schema, schema.get("$defs", {})) for schema in schemas])


def _places(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [path]
    if isinstance(value, dict):
        for key, item in value.items():
            found += _places(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += _places(item, (*path, index))
    return found


def _replace(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(value, dict):
        return {**value, head: _replace(value[head], rest, new)}
    return [_replace(item, rest, new) if index == head else item for index, item in enumerate(value)]


@st.composite
def spoiled(draw: st.DrawFn, bodies: st.SearchStrategy[Any], names: list[str]) -> Any:
    """A body with one hostile value: a node replaced, or a field (any model's) added to an object."""
    body = draw(bodies)
    places = _places(body)
    place = draw(st.sampled_from(places))
    hostile = draw(hostile_values(names))
    target: Any = body
    for part in place:
        target = target[part]
    if isinstance(target, dict) and draw(st.booleans()):
        return _replace(body, place, {**target, draw(st.sampled_from(names)): hostile})
    return _replace(body, place, hostile)


# -- requests -------------------------------------------------------------------------------------


@dataclass
class Sample:
    """One request to send."""

    method: str
    path: str
    body: bytes | None
    headers: dict[str, str] = field(default_factory=dict)


ODD_IDS = st.sampled_from(["x", "resp_0", "%00", "..", "a" * 300, "%2e%2e", "conv_" + "9" * 40, "é"])


def fill(rule: str, ids: list[str], draw: st.DrawFn) -> str:
    choices = _path_ids(tuple(ids))
    return _PARAM.sub(lambda _: draw(choices), rule).replace("<", "").replace(">", "")


@functools.lru_cache(maxsize=16)
def _path_ids(ids: tuple[str, ...]) -> st.SearchStrategy[str]:
    """Strategies are built once: building one at each draw cost more than drawing from it."""
    return (st.sampled_from(ids) if ids else st.just("x")) | ODD_IDS


def body_bytes(body: Any) -> bytes:
    raw = json.dumps(body, allow_nan=True).encode()  # NaN / Infinity on purpose
    return _DEEP.sub(lambda match: b"[" * int(match[1]) + b"0" + b"]" * int(match[1]), raw)


def json_requests(routes: list[Route], models: list[type[RequestModel]], ids: list[str]) -> st.SearchStrategy[Sample]:
    """A spoiled JSON body on a route that takes one (the seeds or any model's shape)."""
    names = field_names(models)
    any_model = model_bodies(models)
    posts = [route for route in routes if route.methods & {"POST"}]
    queries = st.sampled_from(["", "?mode=keep", "?mode=abort", "?bump_version=false", "?limit=1000000", "?after=%00",
                               "?include=zzz", "?stream=true&starting_after=-5"])

    def body_for(route: Route) -> st.SearchStrategy[Any]:
        seeds = SEEDS.get(route.rule) or ([ITEM_SEED] if route.rule.endswith("/items") else [METADATA_SEED])
        bodies = _either(st.sampled_from(seeds), any_model).map(_limited)
        return spoiled(bodies, names) | bodies

    by_route = {route.rule: body_for(route) for route in posts}

    @st.composite
    def draw_one(draw: st.DrawFn) -> Sample:
        route = draw(st.sampled_from(posts))
        body = draw(by_route[route.rule])
        path = fill(route.rule, ids, draw) + draw(queries)
        return Sample("POST", path, body_bytes(body), {"Content-Type": "application/json"})

    return draw_one()


def _either(seeds: st.SearchStrategy[Any], shapes: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """A seed half the time, else any model's shape (`seeds | shapes` would flatten into one of all
    the models' branches, a seed then drawn once in a hundred)."""
    return st.booleans().flatmap(lambda seeded: seeds if seeded else shapes)


def _limited(body: Any) -> Any:
    """A few new tokens for a body that asks for none in particular."""
    limits = {"max_tokens", "max_output_tokens", "max_completion_tokens", "sampling_params"}  # the last: generate's
    if isinstance(body, dict) and not limits & set(body):
        return {**body, ("max_output_tokens" if "input" in body else "max_tokens"): 4}
    return body


RAW_BODIES = [b"", b"{", b"[]", b"null", b"1", b'"x"', b"\xff\xfe", b'{"a":' * 2000, b"{}" * 3, b"\x00" * 10,
              b'{"model": NaN}', b'{"messages": Infinity}']
METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "TRACE", "PROPFIND"]
CONTENT_TYPES = ["application/json", "text/plain", "multipart/form-data; boundary=x",
                 "application/x-www-form-urlencoded", "application/json; charset=latin-1", ""]


@st.composite
def raw_requests(draw: st.DrawFn, routes: list[Route], ids: list[str]) -> Sample:
    """Any method on any route (or a made-up path), odd bodies, content types and headers."""
    route = draw(st.sampled_from(routes))
    filled = fill(route.rule, ids, draw)
    path = filled if draw(st.booleans()) else draw(ODD_PATHS)
    headers = {"Content-Type": draw(RAW_CONTENT_TYPES)}
    return Sample(draw(RAW_METHODS), path, draw(RAW_BODY), {**headers, **draw(RAW_HEADERS)})


ODD_PATHS = st.sampled_from(["/", "/static/x", "/v1", "/v1/", "//v1/models", "/v1/models/../models",
                             "/episodes/e1/v1/models", "/episodes//v1/chat/completions", "/v1/chat/completions/",
                             "/%ff", "/v1/models/" + "a" * 3000])
RAW_BODY = st.sampled_from(RAW_BODIES) | st.binary(max_size=64) | st.none()
RAW_CONTENT_TYPES = st.sampled_from(CONTENT_TYPES)
RAW_HEADERS = st.sampled_from([{}, {"Authorization": "Bearer x"}, {"Accept": "text/event-stream"},
                               {"Expect": "100-continue"}, {"x-episode-id": "\u00e9" * 3}])
RAW_METHODS = st.sampled_from(METHODS)
