"""The long fuzz run: tens of thousands of generated hostile requests across every route.

    python benchmarks/fuzz.py --requests 50000 [--workers 4]

Routes come from the app's `url_map`, bodies from every request model (`localoai.testing.fuzz`).
The server runs in this process; client processes (`--workers`) each generate their share with
hypothesis and send it on their own connection, so generating and sending do not wait on the
server's GIL and the server always has requests in flight. Reports 5xx answers, error bodies that
are not OpenAI-shaped JSON, hangs (no answer within the timeout), dropped connections, failed
writes and lost records (a generation answered 200 whose id is not in the store), then exits
non-zero if any is not 0. Figures go to `benchmarks/README.md`.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
import sys
import time
from collections import Counter
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from multiprocessing.sharedctypes import Synchronized

import httpx
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from localoai.testing import build_tiny_model, running_server
from localoai.testing.fuzz import (
    FUZZ_CONTEXT,
    GENERATED_PREFIXES,
    Route,
    discover_routes,
    json_requests,
    raw_requests,
    request_models,
)
from localoai.testing.fuzz_answers import Tally, send

_sent: Synchronized[int] | None = None
"""Requests sent by all workers so far (for the progress lines)."""


class TimeUp(Exception):
    """Raised in the property to end a worker's run at the deadline (hypothesis then stops generating)."""


def _start_worker(sent: Synchronized[int]) -> None:
    global _sent
    _sent = sent
    logging.basicConfig(level=logging.CRITICAL)


def fuzz_share(url: str, routes: list[Route], ids: list[str], count: int, deadline: float | None,
               timeout: float) -> Tally:
    """One client process: `count` generated requests (or until `deadline`, a `time.time()`), its tally."""
    tally = Tally()
    samples = st.one_of(json_requests(routes, request_models(), ids), raw_requests(routes, ids))
    with httpx.Client(base_url=url, timeout=timeout) as client:

        @settings(max_examples=count, deadline=None, database=None, phases=[Phase.generate],
                  suppress_health_check=list(HealthCheck))
        @given(samples)
        def fuzz(sample):  # type: ignore[no-untyped-def]
            if deadline is not None and time.time() > deadline:
                raise TimeUp
            send(client, sample, tally)
            assert _sent is not None
            with _sent.get_lock():
                _sent.value += 1

        try:
            fuzz()
        except TimeUp:
            pass
    return tally


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=50_000)
    parser.add_argument("--workers", type=int, default=4, help="client processes, each with its own connection")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds without an answer that count as a hang")
    parser.add_argument("--seconds", type=float, default=None, help="stop after this long, reporting what was sent")
    parser.add_argument("--progress", type=float, default=60.0, help="print a line every this many seconds")
    parser.add_argument("--show", type=int, default=5, help="examples printed per kind of failure")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    logging.basicConfig(level=logging.CRITICAL)  # the server logs each refused request's cause at most

    tally = Tally()
    started = time.monotonic()
    deadline = None if args.seconds is None else time.time() + args.seconds
    model, tokenizer = build_tiny_model(max_position_embeddings=FUZZ_CONTEXT)
    with running_server(model, tokenizer, name="tiny", reasoning_parser="none") as server:
        routes = discover_routes(server.app)
        models = request_models()
        with httpx.Client(base_url=server.url, timeout=args.timeout) as client:
            created = client.post("/v1/responses", json={"model": "tiny", "input": "hi", "max_output_tokens": 2}).json()
            conversation = client.post("/v1/conversations", json={}).json()
            ids = [created["id"], conversation["id"], "e1"]
            context = multiprocessing.get_context("spawn")  # the server's threads are not fork-safe
            sent = context.Value("q", 0)
            shares = [args.requests // args.workers + (index < args.requests % args.workers)
                      for index in range(args.workers)]
            with ProcessPoolExecutor(args.workers, mp_context=context, initializer=_start_worker,
                                     initargs=(sent,)) as pool:
                futures = [pool.submit(fuzz_share, server.url, routes, ids, share, deadline, args.timeout)
                           for share in shares]
                while wait(futures, timeout=args.progress, return_when=FIRST_EXCEPTION).not_done:
                    if any(future.done() and future.exception() for future in futures):
                        break
                    print(f"  {sent.value} sent, {time.monotonic() - started:.0f} s", flush=True)
                for future in futures:
                    tally.absorb(future.result())  # a worker's exception ends the run here
            server.served.recorder.flush()
            deleted = set(tally.deleted_ids)
            lost = [record_id for record_id in tally.generated_ids
                    if record_id not in deleted and server.store.get(record_id) is None]
            failed_writes = server.served.recorder.failed
            store_failed = server.store.stats()["failed_writes"]
            health = client.get("/health").status_code
            paused = client.get("/is_paused").json()["is_paused"]
    elapsed = time.monotonic() - started

    generated = Counter(next(prefix for prefix in GENERATED_PREFIXES if record_id.startswith(prefix))
                        for record_id in tally.generated_ids)
    print(f"routes: {len(routes)} ({', '.join(sorted(route.rule for route in routes))})")
    print(f"request models: {len(models)}")
    print(f"requests: {tally.sent} in {elapsed:.0f} s ({tally.sent / elapsed:.0f}/s), {args.workers} client processes")
    print("statuses: " + ", ".join(f"{status}: {count}" for status, count in sorted(tally.statuses.items())))
    print(f"generations answered: {len(tally.generated_ids)} ("
          + ", ".join(f"{prefix} {count}" for prefix, count in sorted(generated.items())) + ")")
    print(f"5xx: {len(tally.server_errors)}  non-JSON or unshaped errors: {len(tally.bad_bodies)}  "
          f"hangs: {len(tally.hangs)}  lost records: {len(lost)}  failed writes: {failed_writes} (recorder), "
          f"{store_failed} (store)  health after: {health}  paused after: {paused}")
    for seconds, example in reversed(tally.slowest):
        print(f"  slowest: {seconds:.2f} s {example}")
    print(f"connections closed before an answer (retried): {len(tally.dropped)}")
    for name, found in (("dropped", tally.dropped), ("5xx", tally.server_errors), ("bad body", tally.bad_bodies),
                        ("hang", tally.hangs), ("lost", lost)):
        for example in found[: args.show]:
            print(f"  {name}: {example}")
    sound = not (tally.server_errors or tally.bad_bodies or tally.hangs or lost or failed_writes or store_failed) \
        and health == 200
    return 0 if sound else 1


if __name__ == "__main__":
    sys.exit(main())
