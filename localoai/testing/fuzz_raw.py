"""Broken HTTP on a raw socket: request lines, headers and framing no HTTP client sends.

The answers (hypercorn's own, for what never reaches the app) must pass the same check as the
app's (`localoai.testing.fuzz_answers.check_answer`): nothing, or HTTP answers with OpenAI-shaped errors.
"""

from __future__ import annotations

import socket

from hypothesis import strategies as st

from localoai.testing.fuzz import Sample
from localoai.testing.fuzz_answers import Tally, check_answer

REQUEST_LINES = [b"GET /health HTTP/1.1\r\n", b"POST /v1/chat/completions HTTP/1.1\r\n", b"GET / HTTP/1.0\r\n",
                 b"GARBAGE\r\n", b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\n", b"\r\n", b"GET /\x00 HTTP/1.1\r\n",
                 b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"]
HEADER_LINES = [b"Host: x\r\n", b"Content-Length: -1\r\n", b"Content-Length: 5\r\n", b"Transfer-Encoding: chunked\r\n",
                b"Content-Length: 3\r\nContent-Length: 4\r\n", b"X: " + b"y" * 70000 + b"\r\n", b"Bad Header\r\n",
                b"Content-Type: application/json\r\n", b" folded\r\n", b"Connection: close\r\n"]


@st.composite
def raw_http(draw: st.DrawFn) -> bytes:
    """Bytes on a fresh connection: broken request lines, headers and framing."""
    head = draw(st.sampled_from(REQUEST_LINES)) + b"".join(draw(st.lists(st.sampled_from(HEADER_LINES), max_size=4)))
    return head + b"\r\n" + draw(st.sampled_from([b"", b"{}", b"zz\r\n", b"0\r\n\r\n"]) | st.binary(max_size=32))


def send_raw(host: str, port: int, data: bytes, tally: Tally, timeout: float = 30.0) -> None:
    """Send `data` on a new connection and read until the server closes it (or a timeout: a hang).
    What comes back must be nothing, or HTTP answers whose errors are OpenAI-shaped."""
    what = f"raw {data[:120]!r}"
    answer = b""
    with socket.create_connection((host, port), timeout=timeout) as conn:
        try:
            conn.sendall(data)
            conn.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the server answered (a 431, say) and closed before all of it was sent: read the answer
        try:
            while chunk := conn.recv(65536):
                answer += chunk
        except TimeoutError:
            tally.hangs.append(what)
            return
        except OSError:  # reset after the answer
            pass
    if not answer or (data.startswith(b"PRI * HTTP/2.0") and not answer.startswith(b"HTTP/")):
        tally.add(0)  # closed, or HTTP/2 spoken back to HTTP/2's connection preface
        return
    head, _, body = answer.partition(b"\r\n\r\n")
    try:
        status = int(head.split(b" ", 2)[1])
    except (IndexError, ValueError):
        tally.bad_bodies.append(f"{what} -> {answer[:200]!r}")
        return
    content_type = "application/json" if b"application/json" in head.lower() else head.decode(errors="replace")
    first = body.split(b"HTTP/1.1 ", 1)[0]  # a pipelined second answer may follow
    check_answer(Sample("RAW", data[:60].decode(errors="replace"), data), status, content_type,
                 first if content_type == "application/json" or status >= 400 else b"{}", tally)
