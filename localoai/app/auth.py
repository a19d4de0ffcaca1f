"""API-key check: when a key is set, every route requires it, as `Authorization: Bearer KEY` (OpenAI's
clients) or `x-api-key: KEY` (Anthropic's clients, Claude Code); except `/health`, the inspector's page
(`/ui/`, which holds no data; its API calls send the key) and `/metrics` if public."""

from __future__ import annotations

import hmac

from quart import Quart, request

from localoai.errors import AuthenticationError

OPEN_PATHS = frozenset({"/health", "/ui", "/ui/"})


def require_api_key(app: Quart, api_key: str, open_paths: frozenset[str] = OPEN_PATHS) -> None:
    """`open_paths`: the paths served without the key."""
    expected = f"Bearer {api_key}".encode()

    @app.before_request
    async def check_key() -> None:
        if request.path in open_paths:
            return
        header = request.headers.get("Authorization")
        key = request.headers.get("x-api-key")
        if header is None and key is None:
            raise AuthenticationError(
                "You didn't provide an API key. Provide it in an Authorization header (Authorization: Bearer KEY) "
                "or an x-api-key header."
            )
        offered = [value.encode() for value in (header, f"Bearer {key}" if key is not None else None) if value]
        if not any(hmac.compare_digest(value, expected) for value in offered):
            raise AuthenticationError("Incorrect API key provided.")
