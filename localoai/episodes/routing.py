"""Which episode a request belongs to: the `/episodes/{id}/v1` URL prefix, the `X-Episode-Id` header,
or `metadata.episode_id` in the body; failing those, a harness's session header (Codex sends
`session_id` / `session-id` with its session's id), so that an unmodified Codex session is one episode.

The URL prefix exists so that agent code that only takes a base URL is traced without a change:
`EpisodePrefix` (ASGI middleware around the app) strips the prefix and sends the id on as the
`X-Episode-Id` header, so every `/v1` route serves under it with no route of its own, and the
handlers see one way in (the header) plus the body's metadata.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from localoai.errors import InvalidRequestError

EPISODE_HEADER = "X-Episode-Id"
GROUP_HEADER = "X-Episode-Group"
SESSION_HEADERS = ("session_id", "session-id")
"""Harness session headers (Codex's) that name the episode when nothing else does."""
EPISODE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}")
"""What an episode id may be: safe in a URL path segment, a header and a log line."""
_PREFIX = re.compile(r"^/episodes/([^/]+)((?:/inference)?/v1(?:/.*)?)$")

ASGIApp = Callable[[dict[str, Any], Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]], Awaitable[None]]


@dataclass(frozen=True)
class EpisodeRef:
    """The episode (and GRPO group) a request names."""

    id: str
    group: str | None = None


class EpisodePrefix:
    """ASGI middleware: `/episodes/{id}/v1/...` is served as `/v1/...` with `X-Episode-Id: {id}` (and
    `/episodes/{id}/inference/v1/...` as `/inference/v1/...`).

    A path whose id is not a valid episode id is left alone (and answered 404 by the app)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope.get("type") == "http" and (match := _PREFIX.match(scope.get("path", ""))):
            episode_id = unquote(match.group(1))
            if EPISODE_ID.fullmatch(episode_id):
                rest = match.group(2)
                name = EPISODE_HEADER.lower().encode()
                headers = [(key, value) for key, value in scope.get("headers", []) if key.lower() != name]
                scope = {**scope, "path": rest, "raw_path": rest.encode(),
                         "headers": [*headers, (name, episode_id.encode())]}
        await self.app(scope, receive, send)


def episode_ref(headers: Mapping[str, str], metadata: Mapping[str, str] | None) -> EpisodeRef | None:
    """The episode a request names (header or prefix first, then `metadata.episode_id`); None for none.

    A 400 when they disagree or an id is malformed: a request must never land in the wrong episode."""
    from_header = headers.get(EPISODE_HEADER)
    from_body = (metadata or {}).get("episode_id")
    if from_header is not None and from_body is not None and from_header != from_body:
        raise InvalidRequestError(
            f"metadata.episode_id {from_body!r} differs from the episode this request was sent to "
            f"({from_header!r}, by URL prefix or {EPISODE_HEADER}).", param="metadata")
    episode_id = from_header if from_header is not None else from_body
    if episode_id is None:
        return _session_episode(headers)
    group = headers.get(GROUP_HEADER) or (metadata or {}).get("episode_group")
    for value, what in ((episode_id, "episode id"), (group, "episode group")):
        if value is not None and not EPISODE_ID.fullmatch(value):
            raise InvalidRequestError(
                f"Invalid {what} {value!r}: use 1-128 letters, digits, '_', '.', ':' or '-'.",
                param="metadata" if from_header is None else None)
    return EpisodeRef(episode_id, group)


def _session_episode(headers: Mapping[str, str]) -> EpisodeRef | None:
    """The episode a harness's session header names; None without one, or when it is not a valid
    episode id (a session header is not ours to refuse)."""
    for name in SESSION_HEADERS:
        value = headers.get(name)
        if value is not None and EPISODE_ID.fullmatch(value):
            return EpisodeRef(value)
    return None
