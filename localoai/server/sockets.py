"""Bind the listening socket once, in the caller's thread, and hand it to hypercorn.

Binding here (rather than probing a port and letting the server bind it later) means
`start()` fails in the caller's cell with a clear error, and no other process can take
the port in between.

Connections are capped (`CappedListener`): past the cap a connection is answered a 503 in
OpenAI's error shape and closed, before descriptors run out (when they do, asyncio stops accepting
for a second and clients time out with no answer at all). The cap stays under the descriptor
limit, whose soft value `raise_descriptor_limit` lifts towards the hard one, as vLLM does.
"""

from __future__ import annotations

import errno
import json
import logging
import resource
import socket
import threading

DEFAULT_PORT = 8000
PORT_SEARCH = 100
BACKLOG = 1024
"""Connections the kernel queues before `accept`: a burst of clients is queued, not reset."""
DEFAULT_MAX_CONNECTIONS = 4096
DESCRIPTOR_TARGET = 65536
logger = logging.getLogger("localoai.server")


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(BACKLOG)
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


def raise_descriptor_limit(target: int = DESCRIPTOR_TARGET) -> int:
    """Lift the soft RLIMIT_NOFILE towards `target` (within the hard limit); the soft limit after."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = target if hard == resource.RLIM_INFINITY else min(target, hard)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
        except (ValueError, OSError) as exc:
            logger.warning("could not raise the open-file limit from %d to %d: %s", soft, wanted, exc)
    return soft


def connection_cap(max_connections: int, descriptor_limit: int) -> int:
    """At most `max_connections`, leaving a quarter of the descriptors (at least 64) to the rest of
    the process: the model, the store, the user's own files."""
    return max(1, min(max_connections, descriptor_limit - max(64, descriptor_limit // 4)))


_REFUSAL_BODY = json.dumps({"error": {
    "message": "This server has too many open connections; close idle ones or retry shortly.",
    "type": "server_error", "param": None, "code": "too_many_connections"}}).encode()
REFUSAL = (b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\n"
           b"connection: close\r\ncontent-length: " + str(len(_REFUSAL_BODY)).encode() + b"\r\n\r\n" + _REFUSAL_BODY)


class CappedListener(socket.socket):
    """The listening socket hypercorn serves: `accept` counts open connections and answers those
    past `cap` with `REFUSAL` instead of handing them on. asyncio calls `accept` on this object."""

    def __init__(self, sock: socket.socket, cap: int) -> None:
        super().__init__(sock.family, sock.type, sock.proto, fileno=socket.dup(sock.fileno()))
        self.cap = cap
        self.open = 0
        self.refused = 0
        self._count_lock = threading.Lock()

    def accept(self) -> tuple[socket.socket, object]:
        while True:
            fd, address = self._accept()  # type: ignore[attr-defined]  # BlockingIOError ends asyncio's loop
            with self._count_lock:
                admitted = self.open < self.cap
                self.open += admitted
            if admitted:
                return _Connection(self, fd), address
            self.refused += 1
            _refuse(fd)

    def released(self) -> None:
        with self._count_lock:
            self.open -= 1


class _Connection(socket.socket):
    """An accepted connection that tells its listener when it closes."""

    def __init__(self, listener: CappedListener, fd: int) -> None:
        super().__init__(listener.family, listener.type, listener.proto, fileno=fd)
        self._listener: CappedListener | None = listener
        # Hypercorn sets this on sockets it binds, asyncio only where `proto` is TCP (here 0): without it
        # an answer's body waits for the client's delayed ACK of its headers (Nagle), ~40 ms a request.
        self.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def close(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.released()
        super().close()


def _refuse(fd: int) -> None:
    with socket.socket(fileno=fd) as conn:
        conn.setblocking(False)
        try:
            conn.recv(65536)  # what the client sent already: closing over unread data would reset it
        except OSError:
            pass
        try:
            conn.send(REFUSAL)
            conn.shutdown(socket.SHUT_WR)
        except OSError:
            pass
