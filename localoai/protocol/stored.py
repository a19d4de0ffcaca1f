"""Query and body models of the stored-object endpoints (list pagination, metadata updates)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Annotated, Literal

from pydantic import Field, StrictInt

from localoai.errors import InvalidRequestError
from localoai.protocol.base import RequestModel, parse_request


class ListQuery(RequestModel):
    """OpenAI's cursor pagination: `after` an id, `limit` 1-100, `order` by creation."""

    after: str | None = None
    limit: Annotated[StrictInt, Field(ge=1, le=100)] = 20
    order: Literal["asc", "desc"] = "asc"
    model: str | None = None
    metadata: dict[str, str] | None = None


class MetadataUpdate(RequestModel):
    metadata: Annotated[dict[str, str], Field(max_length=16)] | None


def parse_list_query(args: Mapping[str, str], *, allowed: frozenset[str]) -> ListQuery:
    """Query strings carry everything as text; `metadata[key]=value` is how the SDK sends a dict."""
    fields: dict[str, object] = {}
    metadata: dict[str, str] = {}
    for key, value in args.items():
        if key.startswith("metadata[") and key.endswith("]") and "metadata" in allowed:
            metadata[key[len("metadata[") : -1]] = value
        elif key == "limit":
            if not value.lstrip("-").isdigit():
                raise InvalidRequestError(f"Invalid value for 'limit': {value!r} is not an integer.", param="limit")
            fields["limit"] = int(value)
        elif key in allowed:
            fields[key] = value
        else:
            raise InvalidRequestError(f"Unrecognized query parameter: {key}", param=key, code="unrecognized_argument")
    if metadata:
        fields["metadata"] = metadata
    return parse_request(ListQuery, json.dumps(fields))
