"""Request parsing shared by every endpoint: strict pydantic models, OpenAI-shaped errors.

Requests are validated from the raw body in one step (`parse_request`), so invalid JSON,
unknown fields, wrong types and out-of-range values all become a 400 naming the field
before any generation starts. Models are strict: `"1"` or `1.9` is not an integer.
"""

from __future__ import annotations

import types
from typing import Annotated, Any, Literal, TypeVar, Union, get_args, get_origin

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


def parse_request(model: type[RequestT], body: bytes | str) -> RequestT:
    """Validate a raw JSON body into `model`."""
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        raise _error_from_validation(exc, model) from None
