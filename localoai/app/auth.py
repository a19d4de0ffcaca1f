"""Bearer-key check: when a key is set, every route but `/health`, the inspector's page (`/ui/`, which
holds no data; its API calls send the key) and `/metrics` if public requires it."""

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
        if header is None:
            raise AuthenticationError(
                "You didn't provide an API key. Provide it in an Authorization header (Authorization: Bearer KEY)."
            )
        if not hmac.compare_digest(header.encode(), expected):
            raise AuthenticationError("Incorrect API key provided.")
