"""Conversations API request bodies and query strings.

Items are the Responses API's input items (`protocol.responses.InputItem`: messages with
input_text / output_text / refusal parts, function_call, function_call_output, reasoning), at most
20 per call. Unknown item types are refused naming their index (`items[3].type`), known ones this
server cannot hold (hosted tool calls, item references) naming them, before anything is written.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field

from localoai.errors import InvalidRequestError
from localoai.protocol.base import RequestModel
from localoai.protocol.response_items import InputItem, allow_listed_items
from localoai.protocol.responses import parse_include, parse_input_items_query
from localoai.protocol.stored import ListQuery

MAX_ITEMS = 20

Metadata = Annotated[
    dict[Annotated[str, Field(max_length=64)], Annotated[str, Field(max_length=512)]],
    Field(max_length=16),
]
Items = Annotated[list[InputItem], Field(max_length=MAX_ITEMS)]


class _ItemsRequest(RequestModel):
    _allow_listed = allow_listed_items("items")


class ConversationCreateRequest(_ItemsRequest):
    items: Items | None = None
    metadata: Metadata | None = None


class ConversationUpdateRequest(RequestModel):
    metadata: Metadata | None  # required, as in the SDK; null clears it


class ItemsCreateRequest(_ItemsRequest):
    items: Items


def parse_items_query(args: Any) -> tuple[ListQuery, list[str]]:
    """`after` / `limit` / `order` (newest first by default) and `include`, as `input_items`."""
    return parse_input_items_query(args)


def parse_include_only(args: Any) -> list[str]:
    """`include` (items.create, items.retrieve); any other query parameter is refused."""
    include = parse_include(args)
    for key in args:
        if key not in ("include", "include[]"):
            raise InvalidRequestError(f"Unrecognized query parameter: {key}", param=key, code="unrecognized_argument")
    return include
