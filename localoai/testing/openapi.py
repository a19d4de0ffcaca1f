"""Validate what the server sends against OpenAI's OpenAPI description (`openai-openapi.yaml`).

`OpenAPISchemas(path)` loads the description once; `check(instance, "Response")` raises an
`AssertionError` listing every violation of that component schema, `check_event(event)` picks a
stream event's schema by its `type` (the spec's `ResponseStreamEvent` is a union of 60 schemas,
whose errors alone would say little), `check_stream(events)` a whole Responses stream.
Instances are JSON as on the wire: `sse_events(url, body)` reads a stream's events as sent. Needs
`pyyaml` and `jsonschema` (the `test` extra).
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from functools import cached_property
from pathlib import Path
from typing import Any

STREAM_EVENT = "ResponseStreamEvent"
_BASE = "urn:openai-openapi"


def load_spec(path: str | Path) -> dict[str, Any]:
    """The description as JSON; parsed YAML is cached as JSON in the temp directory (the 3 MB YAML
    takes seconds to parse, its JSON milliseconds)."""
    raw = Path(path).read_bytes()
    cached = Path(tempfile.gettempdir()) / f"localoai-openapi-{hashlib.sha256(raw).hexdigest()[:16]}.json"
    if cached.exists():
        return json.loads(cached.read_text())
    import yaml

    spec = yaml.load(raw, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    partial = cached.with_suffix(f".{id(spec)}.tmp")
    partial.write_text(json.dumps(spec, default=str))  # YAML dates (in examples) as strings
    partial.replace(cached)  # atomic: a concurrent reader never sees half a file
    return spec


class OpenAPISchemas:
    def __init__(self, path: str | Path) -> None:
        self.spec = load_spec(path)
        self.schemas: dict[str, Any] = self.spec["components"]["schemas"]

    @cached_property
    def _registry(self) -> Any:
        from referencing import Registry, Resource
        from referencing.jsonschema import DRAFT202012

        return Registry().with_resource(_BASE, Resource.from_contents(self.spec, default_specification=DRAFT202012))

    def _validator(self, schema_name: str) -> Any:
        from jsonschema import Draft202012Validator

        if schema_name not in self.schemas:
            raise KeyError(f"no component schema {schema_name!r} in the OpenAPI description")
        return Draft202012Validator({"$ref": f"{_BASE}#/components/schemas/{schema_name}"}, registry=self._registry)

    def errors(self, instance: Any, schema_name: str) -> list[str]:
        """Every violation, as `path: message` (the deepest cause of each union mismatch)."""
        found = []
        for error in self._validator(schema_name).iter_errors(instance):
            causes = _leaves(error)
            for cause in causes:
                where = "/".join(str(part) for part in cause.absolute_path) or "(root)"
                found.append(f"{where}: {cause.message[:300]}")
        return found

    def check(self, instance: Any, schema_name: str) -> None:
        errors = self.errors(instance, schema_name)
        if errors:
            raise AssertionError(f"{schema_name} violates the OpenAPI description:\n  " + "\n  ".join(errors))

    @cached_property
    def event_schemas(self) -> dict[str, str]:
        """Stream event `type` -> its component schema's name."""
        names: dict[str, str] = {}
        for member in self.schemas[STREAM_EVENT]["anyOf"]:
            name = member["$ref"].split("/")[-1]
            for event_type in self.schemas[name].get("properties", {}).get("type", {}).get("enum", []):
                names[event_type] = name
        return names

    def check_event(self, event: dict[str, Any]) -> None:
        name = self.event_schemas.get(event.get("type", ""))
        if name is None:
            raise AssertionError(f"{event.get('type')!r} is not a Responses stream event of the OpenAPI description")
        self.check(event, name)

    def check_stream(self, events: list[dict[str, Any]]) -> dict[str, Any]:
        """Every event of a Responses stream valid, and the `Response` each carries; returns the last one's."""
        if not events or events[0].get("type") not in ("response.created", "response.queued"):
            raise AssertionError(f"a Responses stream starts with response.created, not {events[:1]}")
        for event in events:
            self.check_event(event)
            if "response" in event:
                self.check(event["response"], "Response")
        return events[-1].get("response", {})


def sse_events(url: str, body: dict[str, Any] | None = None, **headers: str) -> list[dict[str, Any]]:
    """The events of a typed SSE stream as sent (`POST` with `body`, else `GET`), checking that each
    is framed `event: <type>` then `data: <json>`."""
    import httpx

    events = []
    with httpx.stream("POST" if body is not None else "GET", url, json=body, headers=headers,
                      timeout=300) as response:
        if response.status_code != 200:
            raise AssertionError(f"{response.status_code}: {response.read()!r}")
        name = None
        for line in response.iter_lines():
            if line.startswith("event: "):
                name = line.removeprefix("event: ")
            elif line.startswith("data: "):
                event = json.loads(line.removeprefix("data: "))
                if event.get("type") != name:
                    raise AssertionError(f"event {name!r} carries data of type {event.get('type')!r}")
                events.append(event)
    return events


def _leaves(error: Any) -> list[Any]:
    """For a union that matched no member, the errors of the member that came closest (the one
    whose errors are deepest); otherwise the error itself."""
    if not error.context:
        return [error]
    by_member: dict[Any, list[Any]] = {}
    for sub in error.context:
        by_member.setdefault(sub.schema_path[0] if sub.schema_path else None, []).append(sub)
    closest = max(by_member.values(), key=lambda subs: max(len(sub.absolute_path) for sub in subs))
    return [leaf for sub in closest for leaf in _leaves(sub)]
