"""The Hypercorn configuration a `Server` serves with: the capped listener it is handed, quiet logs, its
timeouts, and OpenAI-shaped answers to what never reaches the app (`http_errors`)."""

from __future__ import annotations

import logging

from hypercorn.config import Config, Sockets

from localoai.server.http_errors import shape_protocol_errors
from localoai.server.sockets import BACKLOG, CappedListener

KEEP_ALIVE_TIMEOUT = 10.0
"""Seconds an idle connection (or one still sending its headers) is kept: longer than httpx's 5 s
pool expiry, so a client never reuses a connection the server is closing, and short enough that
closed-off clients do not hold descriptors for long."""


def hypercorn_config(listener: CappedListener) -> Config:
    class _Config(Config):
        openai_errors = True  # see localoai.server.http_errors

        def create_sockets(self) -> Sockets:  # hypercorn closes the socket it is given: a dup
            return Sockets(secure_sockets=[], insecure_sockets=[listener], quic_sockets=[])

    shape_protocol_errors()
    config = _Config()
    config.accesslog = None
    config.errorlog = logging.getLogger("localoai.hypercorn")
    config.graceful_timeout = 2.0
    config.keep_alive_timeout = KEEP_ALIVE_TIMEOUT
    config.backlog = BACKLOG
    return config
