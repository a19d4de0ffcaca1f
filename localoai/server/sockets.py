"""Bind the listening socket once, in the caller's thread, and hand it to hypercorn.

Binding here (rather than probing a port and letting the server bind it later) means
`start()` fails in the caller's cell with a clear error, and no other process can take
the port in between.
"""

from __future__ import annotations

import errno
import socket

DEFAULT_PORT = 8000
PORT_SEARCH = 100


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
        sock.set_inheritable(True)
    except BaseException:
        sock.close()
        raise
    return sock


def bind_first_free(host: str, start: int = DEFAULT_PORT, attempts: int = PORT_SEARCH) -> socket.socket:
    """`start` or the next port that is free."""
    for port in range(start, start + attempts):
        try:
            return bind(host, port)
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
    raise OSError(errno.EADDRINUSE, f"no free port in {start}..{start + attempts - 1} on {host}")
