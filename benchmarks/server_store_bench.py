"""Does the *server* stay fast when its store is full? HTTP, official `openai` SDK, one process.

    python benchmarks/server_store_bench.py [--responses 10000] [--repeats 40]

A server on a tiny model with a file store (in a temporary directory) is measured twice on the
same operations: first with a nearly empty store (only the handful of objects the measurements
read), then after 10,000 realistic stored responses are put straight into its store (through
the `Store` API, the fast way; `store_bench.realistic_record` sized, each with its input items
and a `Response` as output). Operations: `responses.retrieve`, `responses.input_items.list`,
stored chat completions `list`, and a `responses.create` round trip (8 greedy tokens). Prints
medians (minimum in brackets) and the full/empty ratio of each. Requests go through the SDK's
`with_raw_response`, so the figures are the server's and the HTTP round trip's, not the SDK's
own parsing of the body.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import localoai  # noqa: E402
from localoai.store import GenerationRecord  # noqa: E402
from localoai.testing import build_tiny_model  # noqa: E402
from store_bench import realistic_record  # noqa: E402


def response_record(i: int, rng: random.Random) -> GenerationRecord:
    """A stored response as the server writes one: input items in the request, a Response as output."""
    base = realistic_record(i, rng, prefix="resp_")
    text = base.completions[0]["text"]
    user = base.request["messages"][1]["content"]
    created = int(time.time())
    items = [{"id": f"msg_{i:08d}in", "type": "message", "role": "user", "status": "completed",
              "content": [{"type": "input_text", "text": user}]}]
    output = {
        "id": base.id, "object": "response", "created_at": created, "completed_at": created, "status": "completed",
        "model": base.model, "background": False, "error": None, "incomplete_details": None, "instructions": None,
        "metadata": base.metadata, "parallel_tool_calls": True, "previous_response_id": None, "store": True,
        "temperature": 1.0, "top_p": 1.0, "tool_choice": "auto", "tools": [], "service_tier": "default",
        "text": {"format": {"type": "text"}, "verbosity": "medium"}, "truncation": "disabled",
        "output": [{"id": f"msg_{i:08d}out", "type": "message", "role": "assistant", "status": "completed",
                    "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]}],
        "usage": {"input_tokens": len(base.prompt_token_ids), "output_tokens": len(text.split()),
                  "total_tokens": len(base.prompt_token_ids) + len(text.split()),
                  "input_tokens_details": {"cached_tokens": 0}, "output_tokens_details": {"reasoning_tokens": 0}},
    }
    return dataclasses.replace(base, kind="response", store_visible=True, output=output,
                               request={"model": base.model, "input": user, "input_items": items})


def timed(call: Callable[[], object], repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        gc.collect()
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--responses", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=40)
    args = parser.parse_args()
    model, tokenizer = build_tiny_model()
    with tempfile.TemporaryDirectory() as tmp, \
            localoai.start(model, tokenizer, port=0, store=str(Path(tmp) / "store.sqlite3")) as server:
        client = server.client(max_retries=0)
        create = {"model": server.model, "input": "hello there", "max_output_tokens": 8, "temperature": 0}
        probe = client.responses.create(**create)
        for i in range(3):  # stored chat completions for the list to return
            client.chat.completions.create(model=server.model, messages=[{"role": "user", "content": f"hi {i}"}],
                                           max_tokens=4, store=True, metadata={"run": "bench"})
        # `with_raw_response`: the HTTP round trip without the SDK building its models of the
        # body, a client-side cost (tens of ms for an input_items page) that says nothing of the server.
        raw = client.with_raw_response
        operations: dict[str, Callable[[], object]] = {
            "responses.retrieve": lambda: raw.responses.retrieve(probe.id),
            "responses.input_items.list": lambda: raw.responses.input_items.list(probe.id),
            "chat.completions.list(limit=20)": lambda: raw.chat.completions.list(limit=20),
            "chat.completions.list(metadata filter)": lambda: raw.chat.completions.list(
                limit=20, metadata={"run": "bench"}),
            "responses.create (8 tokens) round trip": lambda: raw.responses.create(**create),
        }
        for call in operations.values():  # warm-up
            timed(call, 3)
        empty = {name: timed(call, args.repeats) for name, call in operations.items()}

        rng = random.Random(0)
        start = time.perf_counter()
        for i in range(args.responses):
            server.store.put(response_record(i, rng))
        seeded_s = time.perf_counter() - start
        middle = f"resp_{args.responses // 2:08d}"
        deep = next(record.id for record in server.store.list(kind="response", limit=args.responses)
                    if record.id.startswith(middle))
        operations["responses.retrieve (a seeded one, mid-store)"] = lambda: raw.responses.retrieve(deep)
        full = {name: timed(call, args.repeats) for name, call in operations.items()}
        entries = server.store.stats()["entries"]

    print(f"{args.responses:,} responses seeded in {seeded_s:.1f} s; store then holds {entries:,} records; "
          f"median of {args.repeats} (min in brackets)")
    print()
    print(f"| operation | empty store | {args.responses:,} responses | ratio of medians | ratio of minimums |")
    print("|---|---|---|---|---|")
    for name, times in full.items():
        before = empty.get(name) or empty["responses.retrieve"]
        after_ms, before_ms = statistics.median(times) * 1e3, statistics.median(before) * 1e3
        print(f"| {name} | {before_ms:.2f} ms ({min(before) * 1e3:.2f}) | {after_ms:.2f} ms ({min(times) * 1e3:.2f}) "
              f"| {after_ms / before_ms:.2f}x | {min(times) / min(before):.2f}x |")


if __name__ == "__main__":
    main()
