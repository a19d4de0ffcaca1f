"""Request parsing shared by every endpoint: strict pydantic models, OpenAI-shaped errors.

Requests are validated from the raw body in one step (`parse_request`), so invalid JSON,
unknown fields, wrong types and out-of-range values all become a 400 naming the field
before any generation starts. Models are strict: `"1"` or `1.9` is not an integer. The
bounded types below (`Int64`, `TokenId`, `Count`, `Number`) are the one place each bound
lives; `parse_request` also refuses NaN / Infinity and integers past 64 bits anywhere in a body,
typed fields or free-form JSON (schemas, template kwargs) alike, so no family can forget them.
"""

from __future__ import annotations

import json
import logging
import math
import re
import types
from typing import Annotated, Any, Literal, TypeVar, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, ValidationError

from localoai.errors import InvalidRequestError

RequestT = TypeVar("RequestT", bound="RequestModel")
logger = logging.getLogger("localoai.protocol")

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
MAX_TOKEN_ID = 2**31 - 1
MAX_COUNT = 2**31 - 1

Int64 = Annotated[StrictInt, Field(ge=INT64_MIN, le=INT64_MAX)]
"""What SQLite and torch hold: seeds (OpenAI's own range), policy versions, ids, timestamps."""
TokenId = Annotated[StrictInt, Field(ge=0, le=MAX_TOKEN_ID)]
"""A token id before the vocabulary check (`handlers.common`), small enough for any tensor."""
Count = Annotated[StrictInt, Field(ge=0, le=MAX_COUNT)]
"""Token counts, lengths, limits: non-negative and within a C int."""
Number = StrictFloat | StrictInt
"""A JSON number; `RequestModel` refuses NaN / Infinity for it (`allow_inf_nan=False`)."""
ServiceTier = Literal["auto", "default", "flex", "scale", "priority", "fast", "ultrafast"]
"""OpenAI's processing tiers (the SDK's `ServiceTier`): accepted, one local model serves them all alike."""


class RequestModel(BaseModel):
    """Base of request bodies: unknown fields are refused as OpenAI refuses them."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)


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


def _unwrap(annotation: Any) -> Any:
    while get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    return annotation


def _members(annotation: Any) -> list[Any]:
    """The alternatives of a (possibly optional, possibly annotated) type, `None` left out."""
    annotation = _unwrap(annotation)
    if get_origin(annotation) in (Union, types.UnionType):
        return [member for arg in get_args(annotation) if arg is not type(None) for member in _members(arg)]
    return [annotation]


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _is_tag_of(member: Any, tag: str) -> bool:
    """Whether `tag` is pydantic's name for this union member (`str`, `list[int]`, a discriminator value)."""
    if _is_model(member):
        for name in ("role", "type"):
            field = member.model_fields.get(name)
            if field is not None and get_origin(field.annotation) is Literal and tag in get_args(field.annotation):
                return True
        return tag == member.__name__
    origin = get_origin(member)
    label = getattr(origin or member, "__name__", str(member))
    return tag == label or tag.startswith(f"{label}[")


def format_location(loc: tuple[int | str, ...], model: type[BaseModel] | None = None) -> str:
    """`("messages", 0, "content")` -> `messages[0].content`, the way OpenAI names params.

    Pydantic's locations also name the union member it tried (`temperature.float`,
    `messages.0.user.content`); with `model`, the location is resolved against the model's
    own fields so that only real parameter names remain.
    """
    if model is None:
        return _format_plain(loc)
    out, candidates = "", [model]
    for part in loc:
        expanded = [member for candidate in candidates for member in _members(candidate)]
        if isinstance(part, int):
            items = [get_args(m)[0] for m in expanded if get_origin(m) in (list, tuple) and get_args(m)]
            out += f"[{part}]"
            candidates = items or expanded
            continue
        models = [m for m in expanded if _is_model(m)]
        tagged = [m for m in expanded if _is_tag_of(m, part)]
        if tagged and (len(models) > 1 or len(models) < len(expanded)):
            candidates = tagged  # a union member's name, not a parameter
            continue
        fields = [m.model_fields[part].annotation for m in models if part in m.model_fields]
        values = [get_args(m)[1] for m in expanded if get_origin(m) is dict and len(get_args(m)) == 2]
        if fields or values:
            out += f".{part}" if out else part
            candidates = fields or values
        elif part is loc[-1] and part.isidentifier():
            out += f".{part}" if out else part  # a field the model does not have (an unknown argument)
        # anything else is a validator's own tag (e.g. `function-after[...]`): not a parameter
    return out


def _format_plain(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif not out:
            out = str(part)
        elif "[" in str(part) or "-" in str(part):
            continue
        else:
            out += f".{part}"
    return out


def _most_relevant(errors: list[Any]) -> Any:
    """Of the errors pydantic reports (one per union member tried), the one that explains most:
    a refusal or cross-field rule first, then a broken constraint over a mere type mismatch."""

    def rank(error: Any) -> int:
        cause = (error.get("ctx") or {}).get("error")
        if isinstance(cause, (Unsupported, InvalidParam)):
            return 0
        if error["type"] in ("extra_forbidden", "missing", "json_invalid"):
            return 1
        if not error["type"].endswith("_type") and error["type"] != "union_tag_invalid":
            return 2
        return 3

    return min(errors, key=rank)


def _error_from_validation(exc: ValidationError, model: type[BaseModel]) -> InvalidRequestError:
    from localoai.errors import UnsupportedFieldError

    first = _most_relevant(exc.errors(include_url=False))
    kind, loc = first["type"], tuple(first["loc"])
    param = format_location(loc, model) or None
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


# What may hold a non-finite number or a long integer: NaN, Infinity, 1e400, 19 digits or more.
_SUSPECT_NUMBER = re.compile(rb"NaN|Infinity|[eE][+]?[0-9]{3}|[0-9]{19}")


def _out_of_range(value: Any, where: str = "") -> str | None:
    """The location of the first non-finite number or integer past int64 in parsed JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return where or "body"
    if isinstance(value, int) and not isinstance(value, bool) and not INT64_MIN <= value <= INT64_MAX:
        return where or "body"
    if isinstance(value, dict):
        children = ((f"{where}.{key}" if where else str(key), item) for key, item in value.items())
    elif isinstance(value, list):
        children = ((f"{where}[{index}]", item) for index, item in enumerate(value))
    else:
        return None
    for place, item in children:
        if (found := _out_of_range(item, place)) is not None:
            return found
    return None


def check_json_numbers(body: bytes | str) -> None:
    """Refuse NaN / Infinity (JSON has neither; Python's parsers accept them) and integers past
    64 bits anywhere in a body, naming where. Only bodies that may hold one are parsed twice."""
    raw = body.encode() if isinstance(body, str) else body
    if not _SUSPECT_NUMBER.search(raw):
        return
    try:
        parsed = json.loads(raw)
        where = _out_of_range(parsed)
    except (ValueError, RecursionError):
        return  # not JSON, or nested deeper than pydantic's parser accepts: the model's own parse names it
    if where is not None:
        raise InvalidRequestError(
            f"Invalid value for '{where}': numbers must be finite and integers within 64 bits "
            f"[{INT64_MIN}, {INT64_MAX}].", param=where, code="invalid_value")


def parse_request(model: type[RequestT], body: bytes | str) -> RequestT:
    """Validate a raw JSON body into `model`."""
    check_json_numbers(body)
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        raise _error_from_validation(exc, model) from None
    except (TypeError, KeyError, AttributeError, IndexError, RecursionError) as exc:
        # A validator used a value of the wrong type before pydantic checked it: a bug to fix,
        # but the input is at fault, so the client gets a 400 and the log the traceback.
        logger.error("validating %s raised", model.__name__, exc_info=exc)
        raise InvalidRequestError("The request body has a value of the wrong type.", code="invalid_value") from None
