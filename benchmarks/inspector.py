"""How fast the inspector opens and filters over a store of 10,000 generations.

    python benchmarks/inspector.py [--records 10000] [--repeats 5]

Fills a SQLite store in a temporary directory with realistic records (agent episodes of chat
completions and Responses, a third of them calling a tool, some failed; ~200 prompt and ~100
completion token ids with logprobs each), then times, as medians: building the `Inspector`
(first page and the match count), each filter the list offers, turning a page, and opening a
record's episode and token views. The baseline, measured in the same run, is the store's own
`list(limit=25)` (one page of records, no count): the ratio says what the inspector adds.
Target: every list operation under one second at 10,000 records.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from localoai.store import GenerationRecord, SQLiteStore  # noqa: E402
from localoai.widgets.data import ListQuery  # noqa: E402
from localoai.app.routes.inspector import PLOTTED_RECORDS  # noqa: E402
from localoai.widgets import plots  # noqa: E402
from localoai.widgets.inspector import Inspector  # noqa: E402

TOOLS = ["get_weather", "search_docs", "run_python"]


def chat_record(i: int, rng: random.Random) -> GenerationRecord:
    prompt = [rng.randrange(151_000) for _ in range(rng.randint(180, 220))]
    completion = [rng.randrange(151_000) for _ in range(rng.randint(90, 110))]
    words = " ".join(f"word{t % 997}" for t in completion)
    tool = TOOLS[i % 3] if i % 3 == 0 else None
    message: dict = {"role": "assistant", "content": None if tool else words}
    if tool:
        message["tool_calls"] = [{"id": f"call_{i}", "type": "function",
                                  "function": {"name": tool, "arguments": json.dumps({"query": f"q{i}"})}}]
    kind = "response" if i % 4 == 1 else "chat.completion"
    if kind == "response":
        output_items = ([{"type": "function_call", "id": f"fc_{i}", "call_id": f"call_{i}", "name": tool,
                          "arguments": json.dumps({"query": f"q{i}"})}] if tool else
                        [{"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": words}]}])
        output: dict = {"id": f"resp_{i}", "object": "response", "output": output_items}
        request: dict = {"model": "qwen", "input": f"question {i}: tell me about topic {i % 50}"}
    else:
        output = {"id": f"chatcmpl-{i}", "object": "chat.completion",
                  "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls" if tool else "stop"}]}
        question = f"question {i}: tell me about topic {i % 50}"
        request = {"model": "qwen", "messages": [{"role": "system", "content": "You are an agent."},
                                                 {"role": "user", "content": question}]}
    return GenerationRecord(
        id=f"{'resp_' if kind == 'response' else 'chatcmpl-'}{i:08d}{rng.getrandbits(32):08x}",
        kind=kind,  # type: ignore[arg-type]
        model="qwen",
        policy_version=i // 1000,
        status="failed" if i % 50 == 7 else "completed",
        request=request,
        prompt_text="<|im_start|>system\nYou are an agent.<|im_end|>\n" + " ".join(f"tok{t % 991}" for t in prompt),
        prompt_token_ids=prompt,
        completions=[{"completion_token_ids": completion, "logprobs": [-rng.random() * 3 for _ in completion],
                      "text": words, "finish_reason": "stop"}],
        output=output,
        episode_id=f"ep-{i // 4}",
        group_id=f"group-{i // 16}",
        error={"message": "generation failed"} if i % 50 == 7 else None,
        created_at=1_800_000_000 + i * 0.05,
        timings={"queued": rng.random() * 0.05, "first_token": 0.05 + rng.random() * 0.1, "total": 0.5 + rng.random()},
    )


def median_ms(action: Callable[[], object], repeats: int) -> tuple[float, float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        action()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times), min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    rng = random.Random(0)
    with tempfile.TemporaryDirectory() as folder:
        store = SQLiteStore(Path(folder) / "store.sqlite3")
        fill = time.perf_counter()
        for i in range(args.records):
            store.put(chat_record(i, rng))
        for episode in range(args.records // 4):  # rewards, for the plots
            store.set_reward(f"ep-{episode}", rng.random())
        print(f"filled {store.count()} records ({store.stats()['bytes'] / 1e6:.1f} MB of JSON) in "
              f"{time.perf_counter() - fill:.1f} s")

        inspector = Inspector(store, live=False)
        reader = inspector.reader
        baseline, baseline_min = median_ms(lambda: store.list(limit=25), args.repeats)
        figures: list[tuple[str, float, float]] = []

        def measure(name: str, action: Callable[[], object]) -> None:
            figures.append((name, *median_ms(action, args.repeats)))

        measure("open: Inspector(store) (first page + count)", lambda: Inspector(store, live=False))
        queries = {
            "filter: status=failed": ListQuery(status="failed"),
            "filter: endpoint=responses": ListQuery(kind="response"),
            "filter: episode": ListQuery(episode_id="ep-1234"),
            "filter: policy version 7": ListQuery(policy_version=7),
            "filter: tool get_weather": ListQuery(tool="get_weather"),
            "filter: text 'topic 42'": ListQuery(text="topic 42"),
            "filter: text, no match": ListQuery(text="no such words anywhere"),
            "filter: all at once": ListQuery(kind="chat.completion", tool="get_weather", policy_version=3,
                                             text="question"),
        }
        for name, query in queries.items():
            measure(name, lambda query=query: reader.page(query))
        measure("page 200 of 400 (offset 4975)", lambda: reader.page(ListQuery(), offset=4975))

        def set_search() -> None:  # through the widget, as a user's typing would
            inspector.search.value = "topic 4" if inspector.search.value != "topic 4" else "topic 3"

        measure("widget: type a search (refresh of list)", set_search)
        inspector.search.value = ""
        record_id = inspector.listing.options[0][1]

        def open_views() -> None:
            inspector.show(record_id)
            for index in range(4):
                inspector._rendered.discard(index)
                inspector._render_tab(index)

        measure("widget: open a record's 4 views", open_views)
        # What `GET /ui/api/plots` does: read the 1,000 most recent records and draw every plot.
        measure("page: the plots over the 1,000 most recent records",
                lambda: plots.dashboard(reader.recent(PLOTTED_RECORDS), store.episodes(), 9))

        print(f"\nbaseline store.list(limit=25): {baseline:.1f} ms (min {baseline_min:.1f})\n")
        print(f"| operation, {args.records} records (median of {args.repeats}, min) | time | / baseline |")
        print("| --- | --- | --- |")
        for name, value, low in figures:
            print(f"| {name} | {value:.1f} ms ({low:.1f}) | {value / baseline:.1f}x |")
        slowest = max(figures, key=lambda f: f[1])
        print(f"\nslowest: {slowest[0]} at {slowest[1]:.0f} ms: target < 1000 ms "
              f"{'holds' if slowest[1] < 1000 else 'MISSED'}")
        store.close()


if __name__ == "__main__":
    main()
