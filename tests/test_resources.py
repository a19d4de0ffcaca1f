"""Exhausted resources: too many connections refused with a 503 before descriptors run out (in a
subprocess with a low RLIMIT_NOFILE), and a client that stops reading a stream does not keep its
batch slot."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from typing import Any

import httpx

from localoai.server.sockets import CappedListener, bind, connection_cap
from localoai.testing import running_server, wait_until

LIMIT = 256
SERVE_WITH_FEW_DESCRIPTORS = textwrap.dedent(f"""
    import resource, sys
    resource.setrlimit(resource.RLIMIT_NOFILE, ({LIMIT}, {LIMIT}))
    from localoai.testing import running_server
    with running_server(name="tiny") as server:
        print(server.url, server.listener.cap, flush=True)
        sys.stdin.read()  # until the test closes it
        print("refused", server.listener.refused, flush=True)
""")


def read_answer(conn: socket.socket) -> bytes:
    """One HTTP answer (headers and a content-length body), or what came before the connection closed."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")),
                  0)
    while len(body) < length and (chunk := conn.recv(65536)):
        body += chunk
    return head + b"\r\n\r\n" + body


def test_connections_past_the_cap_are_refused_with_a_503(tmp_path: Any) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [os.getcwd(), os.environ.get("PYTHONPATH")]))}
    server = subprocess.Popen([sys.executable, "-c", SERVE_WITH_FEW_DESCRIPTORS], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    try:
        url, cap = server.stdout.readline().split()  # type: ignore[union-attr]
        assert int(cap) == connection_cap(4096, LIMIT) < LIMIT
        host, port = url.removeprefix("http://").split(":")
        connections = [socket.create_connection((host, int(port)), timeout=30) for _ in range(LIMIT + 50)]
        answers = []
        for conn in connections:  # every one is answered: kept open (keep-alive) or refused
            conn.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            answers.append(read_answer(conn))
        statuses = [answer.split(b" ", 2)[1] for answer in answers if answer]
        assert len(statuses) == len(connections)  # no connection left without an answer
        assert statuses.count(b"200") >= int(cap) - 10 and statuses.count(b"503") >= 50
        refusal = next(answer for answer in answers if answer.startswith(b"HTTP/1.1 503"))
        assert json.loads(refusal.partition(b"\r\n\r\n")[2])["error"]["code"] == "too_many_connections"
        for conn in connections:
            conn.close()
        wait_until(lambda: httpx.get(f"{url}/health", timeout=5).status_code == 200, timeout=30)
    finally:
        out, err = server.communicate("", timeout=60)
    assert "Too many open files" not in err, err[-2000:]
    assert int(out.split()[-1]) >= 50


def test_a_client_that_stops_reading_does_not_hold_its_slot(tiny: tuple[Any, Any]) -> None:
    with running_server(*tiny, name="tiny", reasoning_parser="none") as server:
        body = json.dumps({"model": "tiny", "messages": [{"role": "user", "content": "go"}], "stream": True,
                           "max_tokens": 800, "logprobs": True, "top_logprobs": 20,
                           "ignore_eos": True}).encode()
        conn = socket.socket()
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a reader that falls behind at once
        conn.connect((server.host, server.port))
        conn.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        assert conn.recv(1024).startswith(b"HTTP/1.1 200")
        # The answer (megabytes of logprobs) cannot all be sent; the generation ends anyway.
        wait_until(lambda: server.served.engine.stats()["running"] == 0 and server.served.engine.stats()["rows"] == 0,
                   timeout=600, message="a stalled reader kept its batch slot")
        assert httpx.post(f"{server.url}/v1/completions", json={"model": "tiny", "prompt": "x", "max_tokens": 2},
                          timeout=60).status_code == 200
        conn.close()


def test_accepted_connections_do_not_wait_for_acks() -> None:
    """Nagle off on every accepted connection (asyncio turns it off only where the socket's proto is
    TCP, and ours is 0): with it on, each answer's body waited ~40 ms for the client's delayed ACK of
    its headers, which made every short request 40 ms slower (found by benchmarks/fuzz.py)."""
    with bind("127.0.0.1", 0) as sock, CappedListener(sock, 4) as listener, \
            socket.create_connection(sock.getsockname()):
        conn, _ = listener.accept()
        with conn:
            assert conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
