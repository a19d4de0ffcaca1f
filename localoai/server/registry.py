"""The servers this process runs, by port: a re-run cell replaces the server it started before, and
`stop_all` (also at exit) stops every one."""

from __future__ import annotations

import atexit
import logging
import threading
from typing import Protocol


class RunningServer(Protocol):
    """What the registry needs of a server (`localoai.Server`)."""

    port: int

    @property
    def model(self) -> str: ...

    def stop(self, timeout: float = 10.0) -> None: ...


logger = logging.getLogger("localoai.server")

_registry: dict[int, RunningServer] = {}
_registry_lock = threading.Lock()


def add(server: RunningServer) -> None:
    with _registry_lock:
        _registry[server.port] = server


def forget(server: RunningServer) -> None:
    """Called by a server that stops."""
    with _registry_lock:
        if _registry.get(server.port) is server:
            del _registry[server.port]


def stop_previous(port: int | None, name: str) -> None:
    """Stop the server a new one on `port` (None: the default search, the same model `name`) replaces."""
    with _registry_lock:
        if port is None:  # a re-run cell: replace the server of the same model, keep its port
            previous = [server for server in _registry.values() if server.model == name]
        elif port == 0:  # explicitly a new server on any free port
            previous = []
        else:
            previous = [_registry[port]] if port in _registry else []
    for server in previous:
        logger.info("replacing %r", server)
        server.stop()


def running_servers() -> list[RunningServer]:
    with _registry_lock:
        return list(_registry.values())


def stop_all() -> None:
    for server in running_servers():
        server.stop()


atexit.register(stop_all)
