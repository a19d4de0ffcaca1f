"""The checks each fuzzed answer must pass (`check_answer`), the run's tally and `send`.

The contract: below 500, JSON error bodies in OpenAI's shape (stream events included), streams
that end, a timeout counted as a hang, and every generated id kept to be looked up in the store.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import httpx

from localoai.testing.fuzz import GENERATED_PREFIXES, Sample


@dataclass
class Tally:
    """What a run saw. A sound run has `server_errors == bad_bodies == hangs == 0`."""

    sent: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    server_errors: list[str] = field(default_factory=list)
    bad_bodies: list[str] = field(default_factory=list)
    hangs: list[str] = field(default_factory=list)
    generated_ids: list[str] = field(default_factory=list)
    slowest: list[tuple[float, str]] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    deleted_ids: list[str] = field(default_factory=list)
    """Records the fuzzer itself deleted (a DELETE that succeeded): not lost."""
    last: str = ""

    def add(self, status: int) -> None:
        self.sent += 1
        self.statuses[status] = self.statuses.get(status, 0) + 1

    def absorb(self, other: Tally) -> None:
        """Add what another client saw (the long run's worker processes each keep a tally)."""
        self.sent += other.sent
        for status, count in other.statuses.items():
            self.statuses[status] = self.statuses.get(status, 0) + count
        for name in ("server_errors", "bad_bodies", "hangs", "generated_ids", "dropped", "deleted_ids"):
            getattr(self, name).extend(getattr(other, name))
        self.slowest = sorted([*self.slowest, *other.slowest])[-5:]


def check_answer(sample: Sample, status: int, content_type: str, body: bytes, tally: Tally) -> None:
    """Record one answer: 5xx, an error body not in OpenAI's shape, a stream's broken event."""
    tally.add(status)
    what = f"{sample.method} {sample.path[:120]} {(sample.body or b'')[:300]!r} -> {status}"
    if status >= 500:
        tally.server_errors.append(f"{what}: {body[:300]!r}")
    if sample.method == "HEAD" or status in (204, 304):
        return
    if status < 400 and not content_type.startswith(("application/json", "text/event-stream")):
        return  # an answer that is no JSON by design: /metrics' text format, the inspector's page, a redirect
    if content_type.startswith("text/event-stream"):
        for event in _stream_events(body):
            error = event.get("error") if isinstance(event, dict) else None
            if error is not None and not _error_shaped(event):
                tally.bad_bodies.append(f"{what}: stream event {event!r:.300}")
            elif isinstance(error, dict) and error.get("type") == "server_error":
                tally.server_errors.append(f"{what}: stream event {event!r:.300}")
            elif isinstance(event, dict) and event.get("type") == "response.failed":
                tally.server_errors.append(f"{what}: {event!r:.300}")
            # Responses wrap the answer in `response`, Anthropic's message_start in `message`.
            answer = (event.get("response") or event.get("message") or event) if isinstance(event, dict) else None
            if sample.method == "POST" and isinstance(answer, dict) \
                    and str(answer.get("id", "")).startswith(GENERATED_PREFIXES) \
                    and answer["id"] not in tally.generated_ids:
                tally.generated_ids.append(answer["id"])
        return
    try:
        parsed = json.loads(body)
    except ValueError:
        tally.bad_bodies.append(f"{what}: not JSON {body[:200]!r}")
        return
    if status >= 400 and not _error_shaped(parsed):
        tally.bad_bodies.append(f"{what}: {parsed!r:.300}")
    # Only a POST generates; a GET of a stored answer does not (and a later DELETE may remove it on purpose).
    if sample.method == "POST" and status == 200 and isinstance(parsed, dict) \
            and str(parsed.get("id", "")).startswith(GENERATED_PREFIXES) and "deleted" not in parsed:
        tally.generated_ids.append(parsed["id"])
    if sample.method == "DELETE" and status == 200 and isinstance(parsed, dict) and parsed.get("deleted"):
        tally.deleted_ids.append(str(parsed.get("id")))


def _stream_events(body: bytes) -> Iterable[Any]:
    for line in body.decode(errors="replace").splitlines():
        if line.startswith("data: ") and line != "data: [DONE]":
            try:
                event = json.loads(line[6:])
            except ValueError:
                yield {"error": "not JSON: " + line[:100]}
                continue
            yield event


def _error_shaped(parsed: Any) -> bool:
    error = parsed.get("error") if isinstance(parsed, dict) else None
    return isinstance(error, dict) and isinstance(error.get("message"), str) and isinstance(error.get("type"), str)


def send(client: httpx.Client, sample: Sample, tally: Tally) -> None:
    """Send one sample and check its answer; a timeout is a hang. A connection the server closed
    before answering is retried once on a new one (the previous request may have ended it: counted
    in `tally.dropped` with that request); closed again, it counts as a 5xx."""
    started = time.monotonic()
    headers = {name: value.encode() for name, value in sample.headers.items()}  # raw bytes, not ASCII only
    for attempt in range(2):
        try:
            with client.stream(sample.method, sample.path, content=sample.body, headers=headers) as reply:
                body = reply.read()
            break
        except httpx.TimeoutException:
            tally.hangs.append(f"{sample.method} {sample.path[:120]} {(sample.body or b'')[:200]!r}")
            return
        except (httpx.RemoteProtocolError, httpx.ConnectError, httpx.ReadError, httpx.WriteError) as exc:
            if attempt:
                tally.server_errors.append(f"{sample.method} {sample.path[:120]}: {exc}")
                return
            tally.dropped.append(f"after {tally.last}")
    tally.last = f"{sample.method} {sample.path[:120]} {sample.headers} {(sample.body or b'')[:100]!r}"
    check_answer(sample, reply.status_code, reply.headers.get("content-type", ""), body, tally)
    if sample.path.startswith("/pause") and reply.status_code == 200:
        try:
            client.post("/resume")  # a paused engine holds every later generation: resume at once
        except httpx.TransportError:
            tally.dropped.append(f"resume after {tally.last}")
            client.post("/resume")
    what = f"{sample.method} {sample.path[:80]} {(sample.body or b'')[:200]!r} -> {reply.status_code}"
    tally.slowest = sorted([*tally.slowest, (time.monotonic() - started, what)])[-5:]
