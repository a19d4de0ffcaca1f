"""Conversations API request bodies and query strings.

Items are the Responses API's input items (`protocol.responses.InputItem`: messages with
input_text / output_text / refusal parts, function_call, function_call_output, reasoning), at most
20 per call. Unknown item types are refused naming their index (`items[3].type`), known ones this
server cannot hold (hosted tool calls, item references) naming them, before anything is written.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import Field, model_validator

from localoai.errors import InvalidRequestError
from localoai.protocol.base import InvalidParam, RequestModel, Unsupported
from localoai.protocol.responses import (
    HOSTED_ITEM_TYPES,
    INPUT_ITEM_TYPES,
    InputItem,
    parse_include,
    parse_input_items_query,
)
from localoai.protocol.stored import ListQuery

MAX_ITEMS = 20

Metadata = Annotated[
    dict[Annotated[str, Field(max_length=64)], Annotated[str, Field(max_length=512)]],
    Field(max_length=16),
]
Items = Annotated[list[InputItem], Field(max_length=MAX_ITEMS)]


class _ItemsRequest(RequestModel):
    @model_validator(mode="before")
    @classmethod
    def _allow_listed(cls, data: Any) -> Any:
        """Refuse unknown item types by index, before pydantic tries the union."""
        if not isinstance(data, Mapping):
            return data
        items = data.get("items")
        for index, item in enumerate(items if isinstance(items, list) else []):
            if not isinstance(item, Mapping):
                continue
            kind = item.get("type") or "message"  # an "easy" message may omit its type
            if kind in INPUT_ITEM_TYPES:
                continue
            if kind == "item_reference":
                raise Unsupported("item references are not supported; send the item itself",
                                  param=f"items[{index}]")
            if kind in HOSTED_ITEM_TYPES:
                raise Unsupported(f"items of type '{kind}' are not supported: they belong to a hosted tool or a "
                                  "feature this server does not provide", param=f"items[{index}].type")
            raise InvalidParam(f"unknown item type {kind!r} at index {index}", param=f"items[{index}].type")
        return data


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
