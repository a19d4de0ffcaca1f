"""How fast the generation store is at the size it runs at: 10,000 realistic records in a file.

    python benchmarks/store_bench.py [--records 10000] [--writers 32] [--memory]

Records are the size a short chat turn leaves (~200 prompt ids, ~100 completion ids and
logprobs, the request and response JSON); one in ten is `store_visible`. Prints medians; the
whole run takes seconds.
"""

from __future__ import annotations

import argparse
import random
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from localoai.store import GenerationRecord, Recorder, SQLiteStore  # noqa: E402
from localoai.store.recorder import MAX_BATCH  # noqa: E402


def realistic_record(i: int, rng: random.Random, prefix: str = "chatcmpl-") -> GenerationRecord:
    prompt = [rng.randrange(151_000) for _ in range(rng.randint(180, 220))]
    completion = [rng.randrange(151_000) for _ in range(rng.randint(90, 110))]
    text = " ".join(f"word{t % 997}" for t in completion)
    record_id = f"{prefix}{i:08d}{rng.getrandbits(32):08x}"
    return GenerationRecord(
        id=record_id,
        kind="chat.completion",
        model="qwen-0.5b",
        policy_version=i // 1000,
        status="completed" if i % 10 else "incomplete",
        request={
            "model": "qwen-0.5b",
            "messages": [
                {"role": "system", "content": "You are a helpful assistant."},
                {"role": "user", "content": " ".join(f"token{t % 991}" for t in prompt[:150])},
            ],
            "temperature": 1.0,
            "max_completion_tokens": 128,
            "logprobs": True,
        },
        prompt_text="<|im_start|>user\n" + " ".join(f"token{t % 991}" for t in prompt[:150]) + "<|im_end|>\n",
        prompt_token_ids=prompt,
        completions=[
            {
                "completion_token_ids": completion,
                "logprobs": [-rng.expovariate(2.0) for _ in completion],
                "text": text,
                "finish_reason": "stop",
            }
        ],
        output={
            "id": record_id,
            "object": "chat.completion",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": len(prompt), "completion_tokens": len(completion)},
        },
        sampling={"temperature": 1.0, "top_p": 1.0, "max_tokens": 128, "seed": None},
        timings={"queued": 0.0004, "first_token": 0.021, "total": 0.61},
        metadata={"run": f"run-{i % 8}", "step": str(i // 100)},
        episode_id=f"ep-{i // 4}",
        store_visible=i % 10 == 3,
    )


def median_us(call: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e6


def concurrent_writers(store: SQLiteStore, writers: int, per_writer: int) -> tuple[float, list[float]]:
    rngs = [random.Random(1000 + w) for w in range(writers)]
    batches = [
        [realistic_record(w * per_writer + k, rngs[w], "conc-") for k in range(per_writer)] for w in range(writers)
    ]
    latencies: list[list[float]] = [[] for _ in range(writers)]
    barrier = threading.Barrier(writers + 1)

    def write(w: int) -> None:
        barrier.wait()
        for record in batches[w]:
            start = time.perf_counter()
            store.put(record)
            latencies[w].append(time.perf_counter() - start)

    threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
    for thread in threads:
        thread.start()
    barrier.wait()
    start = time.perf_counter()
    for thread in threads:
        thread.join()
    return time.perf_counter() - start, sorted(t for per in latencies for t in per)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--writers", type=int, default=32)
    parser.add_argument("--per-writer", type=int, default=100)
    parser.add_argument("--memory", action="store_true", help="an in-memory store instead of a temporary file")
    args = parser.parse_args()
    rng = random.Random(0)

    with tempfile.TemporaryDirectory() as tmp:
        spec = ":memory:" if args.memory else Path(tmp) / "store.sqlite3"
        store = SQLiteStore(spec)
        records = [realistic_record(i, rng) for i in range(args.records)]
        start = time.perf_counter()
        for record in records:
            store.put(record)
        insert_s = time.perf_counter() - start
        stats = store.stats()
        ids = [record.id for record in records]
        deep = ids[len(ids) // 2]

        rows = [
            ("put (sequential)", f"{insert_s / args.records * 1e6:.0f} µs/record ({args.records / insert_s:,.0f}/s)"),
            ("get by id (median of 1,000 random)", f"{_median_get(store, ids, rng):.0f} µs"),
            ("list(limit=20), first page", f"{median_us(lambda: store.list(limit=20), 200):.0f} µs"),
            (
                f"list(limit=20, after=<record {len(ids) // 2:,}>)",
                f"{median_us(lambda: store.list(limit=20, after=deep), 200):.0f} µs",
            ),
            (
                "list(limit=20, metadata={'run': 'run-3'})",
                f"{median_us(lambda: store.list(limit=20, metadata={'run': 'run-3'}), 200):.0f} µs",
            ),
            (
                "list(limit=20, kind='chat.completion', visible=True)",
                f"{median_us(lambda: store.list(limit=20, kind='chat.completion', visible=True), 200):.0f} µs",
            ),
            ("count() (no filter)", f"{median_us(store.count, 200):.0f} µs"),
            ("count(visible=True)", f"{median_us(lambda: store.count(visible=True), 50) / 1e3:.2f} ms"),
            ("count(status='incomplete')", f"{median_us(lambda: store.count(status='incomplete'), 50) / 1e3:.2f} ms"),
            (
                "count(metadata={'run': 'run-3'})",
                f"{median_us(lambda: store.count(metadata={'run': 'run-3'}), 50) / 1e3:.2f} ms",
            ),
        ]
        start = time.perf_counter()
        exported = store.export_jsonl(Path(tmp) / "export.jsonl")
        export_s = time.perf_counter() - start
        rows.append((f"export_jsonl ({exported:,} records)", f"{export_s:.2f} s ({exported / export_s:,.0f}/s)"))
        start = time.perf_counter()
        iterated = sum(1 for _ in store.iterate())
        iterate_s = time.perf_counter() - start
        rows.append((f"iterate() parsing records ({iterated:,})", f"{iterate_s:.2f} s ({iterated / iterate_s:,.0f}/s)"))

        wall, latencies = concurrent_writers(store, args.writers, args.per_writer)
        total = args.writers * args.per_writer
        assert store.count() == args.records + total
        rows.append(
            (
                f"{args.writers} concurrent writers x {args.per_writer} puts",
                f"{total / wall:,.0f} puts/s; per put p50 {statistics.median(latencies) * 1e3:.2f} ms, "
                f"p99 {latencies[int(len(latencies) * 0.99)] * 1e3:.2f} ms",
            )
        )
        rows.append(recorder_row(store, args.per_writer * 10, rng))
        rows.append(burst_row(store, args.writers, rng))
        store.close()

    kind = "in memory" if args.memory else "SQLite file, WAL, synchronous=NORMAL"
    print(f"store: {kind}; python {sys.version.split()[0]}, SQLite {sqlite3.sqlite_version}")
    print(
        f"{args.records:,} records, {stats['bytes'] / args.records / 1e3:.1f} kB JSON each; "
        f"database {stats['file_bytes'] / 1e6:.1f} MB for {stats['bytes'] / 1e6:.1f} MB of records"
    )
    print()
    print("| operation | time |")
    print("|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")


def recorder_row(store: SQLiteStore, n: int, rng: random.Random) -> tuple[str, str]:
    """What the server's event loop pays per record (`record()` only queues), and the write rate."""
    records = [realistic_record(i, rng, "rec-") for i in range(n)]
    recorder = Recorder(store)
    calls = []
    start = time.perf_counter()
    for record in records:
        called = time.perf_counter()
        recorder.record(record)
        calls.append(time.perf_counter() - called)
    assert recorder.flush(timeout=600)
    wall = time.perf_counter() - start
    recorder.close()
    assert recorder.failed == 0
    return (
        f"Recorder: {n:,} x record(), then flush()",
        (
            f"record() p50 {statistics.median(calls) * 1e6:.1f} µs, max {max(calls) * 1e6:.0f} µs; "
            f"{n / wall:,.0f} records/s written"
        ),
    )


def burst_row(store: SQLiteStore, size: int, rng: random.Random, rounds: int = 20) -> tuple[str, str]:
    """A burst of `size` answers ending together (one engine step): recorded at once, how long until
    all are written, with the records queued meanwhile in one transaction (the default) and with a
    transaction per record (`max_batch=1`), in alternating rounds."""
    times: dict[int, list[float]] = {MAX_BATCH: [], 1: []}
    made = 0
    for _ in range(rounds):
        for max_batch, spent in times.items():
            records = [realistic_record(made + i, rng, "burst-") for i in range(size)]
            made += size
            recorder = Recorder(store, max_batch=max_batch)
            start = time.perf_counter()
            written = [recorder.record(record) for record in records]
            assert all(future.result(timeout=600) for future in written)
            spent.append(time.perf_counter() - start)
            recorder.close()
    batched, single = (statistics.median(times[key]) for key in (MAX_BATCH, 1))
    return (
        f"Recorder: a burst of {size} records, until all are written (median of {rounds})",
        f"{batched * 1e3:.1f} ms batched (max_batch={MAX_BATCH}) against {single * 1e3:.1f} ms a transaction "
        f"per record: {single / batched:.2f}x",
    )


def _median_get(store: SQLiteStore, ids: list[str], rng: random.Random) -> float:
    sample = [rng.choice(ids) for _ in range(1000)]
    times = []
    for record_id in sample:
        start = time.perf_counter()
        found = store.get(record_id)
        times.append(time.perf_counter() - start)
        assert found is not None
    return statistics.median(times) * 1e6


if __name__ == "__main__":
    main()
