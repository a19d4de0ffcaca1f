"""The long fuzz run: tens of thousands of generated hostile requests across every route.

    python benchmarks/fuzz.py --requests 50000

Routes come from the app's `url_map`, bodies from every request model (`localoai.testing.fuzz`).
Reports 5xx answers, error bodies that are not OpenAI-shaped JSON, hangs (no answer within the
timeout) and lost records (a generation answered 200 whose id is not in the store), then exits
non-zero if any is not 0. Figures go to `benchmarks/README.md`.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time

import httpx
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from localoai.testing import build_tiny_model, running_server
from localoai.testing.fuzz import FUZZ_CONTEXT, Tally, discover_routes, json_requests, raw_requests, request_models, send


class TimeUp(Exception):
    """Raised in the property to end the run at `--seconds` (hypothesis then stops generating)."""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=50_000)
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds without an answer that count as a hang")
    parser.add_argument("--seconds", type=float, default=None, help="stop after this long, reporting what was sent")
    parser.add_argument("--progress", type=int, default=1000, help="print a line every this many requests")
    parser.add_argument("--show", type=int, default=5, help="examples printed per kind of failure")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    logging.basicConfig(level=logging.CRITICAL)  # the server logs each refused request's cause at most

    tally = Tally()
    started = time.monotonic()
    model, tokenizer = build_tiny_model(max_position_embeddings=FUZZ_CONTEXT)
    with running_server(model, tokenizer, name="tiny", reasoning_parser="none") as server:
        routes = discover_routes(server.app)
        models = request_models()
        with httpx.Client(base_url=server.url, timeout=args.timeout) as client:
            created = client.post("/v1/responses", json={"model": "tiny", "input": "hi", "max_output_tokens": 2}).json()
            conversation = client.post("/v1/conversations", json={}).json()
            ids = [created["id"], conversation["id"], "e1"]
            samples = st.one_of(json_requests(routes, models, ids), raw_requests(routes, ids))

            @settings(max_examples=args.requests, deadline=None, database=None, phases=[Phase.generate],
                      suppress_health_check=list(HealthCheck))
            @given(samples)
            def fuzz(sample):  # type: ignore[no-untyped-def]
                if args.seconds is not None and time.monotonic() - started > args.seconds:
                    raise TimeUp
                send(client, sample, tally)
                if tally.sent % args.progress == 0:
                    print(f"  {tally.sent} sent, {time.monotonic() - started:.0f} s, 5xx {len(tally.server_errors)}, "
                          f"bad bodies {len(tally.bad_bodies)}, hangs {len(tally.hangs)}", flush=True)

            try:
                fuzz()
            except TimeUp:
                print(f"stopped after {args.seconds:.0f} s", flush=True)
            server.served.recorder.flush()
            deleted = set(tally.deleted_ids)
            lost = [record_id for record_id in tally.generated_ids
                    if record_id not in deleted and server.store.get(record_id) is None]
            failed_writes = server.served.recorder.failed
            health = client.get("/health").status_code
    elapsed = time.monotonic() - started

    print(f"routes: {len(routes)} ({', '.join(sorted(route.rule for route in routes))})")
    print(f"request models: {len(models)}")
    print(f"requests: {tally.sent} in {elapsed:.0f} s ({tally.sent / elapsed:.0f}/s)")
    print("statuses: " + ", ".join(f"{status}: {count}" for status, count in sorted(tally.statuses.items())))
    print(f"5xx: {len(tally.server_errors)}  non-JSON or unshaped errors: {len(tally.bad_bodies)}  "
          f"hangs: {len(tally.hangs)}  generations answered: {len(tally.generated_ids)}  lost records: {len(lost)}  "
          f"failed writes: {failed_writes}  health after: {health}")
    for seconds, example in reversed(tally.slowest):
        print(f"  slowest: {seconds:.2f} s {example}")
    print(f"connections closed before an answer (retried): {len(tally.dropped)}")
    for name, found in (("dropped", tally.dropped), ("5xx", tally.server_errors), ("bad body", tally.bad_bodies), ("hang", tally.hangs),
                        ("lost", lost)):
        for example in found[: args.show]:
            print(f"  {name}: {example}")
    sound = not (tally.server_errors or tally.bad_bodies or tally.hangs or lost or failed_writes) and health == 200
    return 0 if sound else 1


if __name__ == "__main__":
    sys.exit(main())
