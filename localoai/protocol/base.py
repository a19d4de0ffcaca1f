"""Request parsing shared by every endpoint: strict pydantic models, OpenAI-shaped errors.

Requests are validated from the raw body in one step (`parse_request`), so invalid JSON,
unknown fields, wrong types and out-of-range values all become a 400 naming the field
before any generation starts. Models are strict: `"1"` or `1.9` is not an integer.
"""

from __future__ import annotations

from typing import TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from localoai.errors import InvalidRequestError

RequestT = TypeVar("RequestT", bound="RequestModel")


class RequestModel(BaseModel):
    """Base of request bodies: unknown fields are refused as OpenAI refuses them."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Unsupported(ValueError):
    """Raised by validators for a documented field value this server cannot honour."""

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class InvalidParam(ValueError):
    """Raised by cross-field validators, naming the field at fault."""

    def __init__(self, message: str, *, param: str) -> None:
        super().__init__(message)
        self.param = param


def format_location(loc: tuple[int | str, ...]) -> str:
    """`("messages", 0, "content")` -> `messages[0].content`, the way OpenAI names params."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif not out:
            out = str(part)
        elif "[" in str(part) or "-" in str(part):
            continue  # pydantic's union-member tags (e.g. `function-after[...]`) are not params
        else:
            out += f".{part}"
    return out


def _error_from_validation(exc: ValidationError) -> InvalidRequestError:
    from localoai.errors import UnsupportedFieldError

    first = exc.errors(include_url=False)[0]
    kind, loc = first["type"], tuple(first["loc"])
    param = format_location(loc) or None
    if kind == "json_invalid":
        return InvalidRequestError(
            "We could not parse the JSON body of your request. (HINT: This likely means you aren't using "
            "your HTTP library correctly. The OpenAI API expects a JSON payload.)",
            code="invalid_json",
        )
    if kind == "model_type" and not loc:
        return InvalidRequestError("The request body must be a JSON object.", code="invalid_json")
    if kind == "extra_forbidden":
        return InvalidRequestError(f"Unrecognized request argument supplied: {param}", param=param,
                                   code="unrecognized_argument")
    if kind == "missing":
        return InvalidRequestError(f"Missing required parameter: '{param}'.", param=param, code="missing_required_parameter")
    cause = (first.get("ctx") or {}).get("error")
    if isinstance(cause, (Unsupported, InvalidParam)) and cause.param:
        param = ".".join(filter(None, [param, cause.param]))
    if isinstance(cause, Unsupported):
        return UnsupportedFieldError(f"Unsupported value for '{param}': {cause}", param=param)
    if isinstance(cause, InvalidParam):
        return InvalidRequestError(f"Invalid value for '{param}': {cause}", param=param, code="invalid_value")
    message = first["msg"].removeprefix("Value error, ")
    value = first.get("input")
    shown = "" if isinstance(value, (dict, list)) else f" (got {value!r})"
    return InvalidRequestError(f"Invalid value for '{param}': {message}{shown}.", param=param, code="invalid_value")


def parse_request(model: type[RequestT], body: bytes | str) -> RequestT:
    """Validate a raw JSON body into `model`."""
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        raise _error_from_validation(exc) from None
