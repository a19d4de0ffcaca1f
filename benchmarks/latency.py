"""Latency of localoai against calling the same model directly, in one process, side by side.

Two questions, each answered by timing the server and a direct reference on the *same*
model object with the *same* prompt token ids:

1. **Whole completion.** A 64-token greedy chat completion through HTTP with the official
   `openai` SDK (`temperature=0`, `max_tokens=64`, `ignore_eos` + `min_tokens=64` so exactly
   64 tokens are generated) against `model.generate(input_ids, max_new_tokens=64,
   min_new_tokens=64, do_sample=False)`. Every HTTP request also asks for `return_token_ids`,
   and its 64 ids are compared with the ids `generate` produced, so the two sides are known
   to do the same work. Reported: the medians and HTTP / direct.
2. **Streaming.** Time to first token of a streamed chat completion (from just before the
   request is sent until the first chunk whose delta carries text) against one direct forward
   pass over the prompt (prefill) plus one decode step, and the median interval between
   consecutive token chunks against one direct decode step.

Method. The two sides of each comparison are *interleaved*: pair i runs A then B, pair i+1
runs B then A (A B B A A B ...). On a small, shared CPU the speed drifts during a run
(frequency scaling, caches, other tenants, allocator warm-up); interleaving spreads the drift
evenly over both sides instead of charging it to whichever ran second, and alternating the
order cancels any effect of "running right after the other one". Both sides get the same
warm-up runs first (the first calls pay for lazy initialisation). Figures are *medians*, with
the minimum beside them (and the quartiles in `--json`): a latency distribution has a long
right tail (a GC pause, a context switch, a noisy neighbour), and a mean would let one such
outlier move the result, while the median describes the typical request. The garbage
collector runs before every measurement, never inside one; so every request arrives after a
short idle gap, as an interactive request would, not hard on the heels of the previous one.

`torch.set_num_threads` is set once, before the model is built and the server starts; the
server's engine thread inherits it, so both sides use the same number of intra-op threads.
The server records every generation (its default); `--store disk` (the default here) gives it
a SQLite file in a temporary directory, as the default `localoai-store/` would be, without
leaving one behind. On Linux the run also reports how much CPU *other* processes took while it
measured, since on a shared 2-core machine that skews both sides.

Run it from the repository root:

    python benchmarks/latency.py                      # defaults: hidden 512, 8 layers, 15 repeats
    python benchmarks/latency.py --repeats 20 --json  # more runs, and a JSON object at the end
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Benchmark this checkout, whether or not a (possibly different) localoai is installed.
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

TOKENS = 64
TARGET_RATIO = 1.10
MESSAGES: list[dict[str, str]] = [
    {"role": "system", "content": "You are a helpful assistant. Answer the question step by step."},
    {"role": "user", "content": "What is the weather in paris today, and will it be the same in london and tokyo?"},
]
EXTRA_BODY: dict[str, Any] = {"ignore_eos": True, "min_tokens": TOKENS, "return_token_ids": True}


# --- statistics --------------------------------------------------------------------------


@dataclass(frozen=True)
class Summary:
    """A sample of durations in seconds, summarised robustly."""

    median: float
    minimum: float
    q1: float
    q3: float
    count: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Summary:
        if not values:
            raise ValueError("no measurements")
        ordered = sorted(values)
        if len(ordered) >= 2:
            q1, _, q3 = statistics.quantiles(ordered, n=4, method="inclusive")
        else:
            q1 = q3 = ordered[0]
        return cls(statistics.median(ordered), ordered[0], q1, q3, len(ordered))

    def as_ms(self) -> dict[str, float | int]:
        return {
            "median_ms": round(self.median * 1e3, 3),
            "min_ms": round(self.minimum * 1e3, 3),
            "q1_ms": round(self.q1 * 1e3, 3),
            "q3_ms": round(self.q3 * 1e3, 3),
            "n": self.count,
        }


def interleaved(repeats: int, first: Callable[[], None], second: Callable[[], None]) -> None:
    """Run `first` and `second` `repeats` times each, alternating the order of each pair."""
    for i in range(repeats):
        pair = (first, second) if i % 2 == 0 else (second, first)
        for run in pair:
            gc.collect()
            run()


# --- the two sides -----------------------------------------------------------------------


def prompt_token_ids(tokenizer: Any, messages: list[dict[str, str]]) -> list[int]:
    """`apply_chat_template(..., add_generation_prompt=True)` as ids (transformers 5 returns a mapping)."""
    rendered = tokenizer.apply_chat_template(messages, add_generation_prompt=True)
    if not isinstance(rendered, list):
        rendered = rendered["input_ids"]
    return [int(token) for token in rendered]


class Direct:
    """The reference: the same model object, called directly on this thread."""

    def __init__(self, model: Any, prompt_ids: list[int]) -> None:
        import torch
        from transformers import DynamicCache

        self.torch = torch
        self.model = model
        self.cache_class = DynamicCache
        self.input_ids = torch.tensor([prompt_ids], dtype=torch.long)
        self.generate_times: list[float] = []
        self.generated: list[list[int]] = []
        self.prefill_times: list[float] = []
        self.prefill_decode_times: list[float] = []
        self.decode_step_times: list[float] = []

    def generate(self) -> None:
        started = time.perf_counter()
        output = self.model.generate(self.input_ids, max_new_tokens=TOKENS, min_new_tokens=TOKENS, do_sample=False)
        self.generate_times.append(time.perf_counter() - started)
        self.generated.append(output[0, self.input_ids.shape[1] :].tolist())

    def prefill_and_decode(self) -> None:
        """One forward pass over the prompt into a fresh KV cache, then one decode step."""
        torch = self.torch
        with torch.inference_mode():
            started = time.perf_counter()
            cache = self.cache_class(config=self.model.config)
            output = self.model(input_ids=self.input_ids, past_key_values=cache, use_cache=True)
            token = output.logits[:, -1, :].argmax(dim=-1)
            token.item()  # the first token is known here: the earliest a server could send it
            prefilled = time.perf_counter()
            output = self.model(input_ids=token.view(1, 1), past_key_values=cache, use_cache=True)
            output.logits[:, -1, :].argmax(dim=-1).item()
            done = time.perf_counter()
        self.prefill_times.append(prefilled - started)
        self.prefill_decode_times.append(done - started)
        self.decode_step_times.append(done - prefilled)


class Http:
    """The server side: the official `openai` SDK against localoai over loopback HTTP."""

    def __init__(self, client: Any, model_name: str) -> None:
        self.client = client
        self.model_name = model_name
        self.completion_times: list[float] = []
        self.generated: list[list[int]] = []
        self.prompt_ids: list[int] | None = None
        self.ttft_text: list[float] = []
        self.ttft_token: list[float] = []
        self.intervals: list[float] = []
        self.stream_totals: list[float] = []

    def complete(self) -> None:
        started = time.perf_counter()
        response = self.client.chat.completions.create(
            model=self.model_name,
            messages=MESSAGES,
            temperature=0,
            max_tokens=TOKENS,
            extra_body=EXTRA_BODY,
        )
        self.completion_times.append(time.perf_counter() - started)
        assert response.usage is not None and response.usage.completion_tokens == TOKENS, response.usage
        choice = response.choices[0]
        assert choice.finish_reason == "length", choice.finish_reason
        self.generated.append(list(getattr(choice, "token_ids", None) or []))
        self.prompt_ids = list(getattr(response, "prompt_token_ids", None) or [])

    def stream(self) -> None:
        """A streamed completion; every token has its own chunk (`return_token_ids`)."""
        started = time.perf_counter()
        stream = self.client.chat.completions.create(
            model=self.model_name,
            messages=MESSAGES,
            temperature=0,
            max_tokens=TOKENS,
            stream=True,
            extra_body=EXTRA_BODY,
        )
        first_text: float | None = None
        token_times: list[float] = []
        tokens = 0
        for chunk in stream:
            now = time.perf_counter()
            for choice in chunk.choices:
                ids = getattr(choice, "token_ids", None) or []
                if ids:
                    token_times.append(now)
                    tokens += len(ids)
                if first_text is None and choice.delta.content:
                    first_text = now
        finished = time.perf_counter()
        assert tokens == TOKENS, f"streamed {tokens} tokens"
        assert first_text is not None, "no chunk carried text"
        self.ttft_text.append(first_text - started)
        self.ttft_token.append(token_times[0] - started)
        self.intervals.extend(later - earlier for earlier, later in zip(token_times, token_times[1:]))
        self.stream_totals.append(finished - started)


# --- running and reporting ---------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=15, help="timed runs of each side of each comparison")
    parser.add_argument("--warmup", type=int, default=2, help="untimed runs of each side first")
    parser.add_argument("--hidden-size", type=int, default=512)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--heads", type=int, default=None, help="attention heads (default: hidden size / 64)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: usable cores)")
    parser.add_argument(
        "--store", choices=("disk", "memory"), default="disk",
        help="where the server records generations: a SQLite file as by default, but in a temporary "
             "directory (disk), or ':memory:' (memory)",
    )
    parser.add_argument("--json", action="store_true", help="print a JSON object of the figures at the end")
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.warmup < 0:
        parser.error("--repeats must be >= 1 and --warmup >= 0")
    return args


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class OtherLoad:
    """How much CPU other processes took while this run measured (Linux; `None` elsewhere).

    Both sides are timed on a shared machine: the busy time of every CPU (`/proc/stat`) minus
    this process's own CPU time, as a share of all the CPU time there was. Near 0 means the
    figures describe this process alone; a large share means both sides were slowed.
    """

    def __init__(self) -> None:
        self._start = self._sample()

    @staticmethod
    def _sample() -> tuple[float, float, float] | None:
        try:
            with open("/proc/stat") as stat:
                ticks = [int(value) for value in stat.readline().split()[1:9]]
        except (OSError, ValueError):
            return None
        busy = (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")  # all but idle and iowait
        own = sum(os.times()[:2])
        return time.perf_counter(), busy, own

    def share(self) -> float | None:
        end = self._sample()
        if self._start is None or end is None or end[0] <= self._start[0]:
            return None
        wall = end[0] - self._start[0]
        other = (end[1] - self._start[1]) - (end[2] - self._start[2])
        return max(0.0, other / (wall * (os.cpu_count() or 1)))


def ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator > 0 else float("inf")


def table(rows: list[tuple[str, str, str, str]]) -> str:
    header = ("", "localoai (HTTP)", "direct", "ratio")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(4)]
    lines = ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths)))
             for row in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    threads = args.threads or usable_cores()
    heads = args.heads or max(1, args.hidden_size // 64)

    warnings.filterwarnings("ignore")
    logging.getLogger("localoai").setLevel(logging.WARNING)
    import torch
    import transformers

    transformers.logging.set_verbosity_error()
    torch.set_num_threads(threads)

    import localoai
    from localoai.testing import build_tiny_model

    began = time.perf_counter()
    model, tokenizer = build_tiny_model(hidden_size=args.hidden_size, num_layers=args.layers, num_heads=heads)
    parameters = sum(p.numel() for p in model.parameters())
    prompt_ids = prompt_token_ids(tokenizer, MESSAGES)
    print(
        f"model: Qwen2-style, hidden {args.hidden_size}, {args.layers} layers, {heads} heads, "
        f"{parameters / 1e6:.1f}M parameters, float32; prompt {len(prompt_ids)} tokens, {TOKENS} generated"
    )
    print(
        f"machine: {platform.machine()}, {usable_cores()} usable cores, torch {torch.__version__} "
        f"({threads} threads), transformers {transformers.__version__}, python {platform.python_version()}"
    )
    print(f"server: localoai.start(model, tokenizer, port=0), generations recorded to a {args.store} store")

    scratch = tempfile.TemporaryDirectory(prefix="localoai-latency-", ignore_cleanup_errors=True)
    store = str(Path(scratch.name) / "store.sqlite3") if args.store == "disk" else ":memory:"
    server = localoai.start(model, tokenizer, port=0, store=store)
    other_load = OtherLoad()
    try:
        direct = Direct(model, prompt_ids)
        http = Http(server.client(max_retries=0), server.model)

        # 1. Whole completion.
        for _ in range(args.warmup):
            http.complete()
            direct.generate()
        http.completion_times.clear()
        direct.generate_times.clear()
        interleaved(args.repeats, http.complete, direct.generate)

        # 2. Streaming: time to first token and per-token interval.
        for _ in range(args.warmup):
            http.stream()
            direct.prefill_and_decode()
        for sample in (http.ttft_text, http.ttft_token, http.intervals, http.stream_totals,
                       direct.prefill_times, direct.prefill_decode_times, direct.decode_step_times):
            sample.clear()
        interleaved(args.repeats, http.stream, direct.prefill_and_decode)
    finally:
        server.stop()
        scratch.cleanup()
    other_share = other_load.share()

    reference = direct.generated[0]
    ids_match = all(ids == reference for ids in direct.generated) and all(ids == reference for ids in http.generated)
    prompt_match = http.prompt_ids == prompt_ids

    completion_http = Summary.of(http.completion_times)
    completion_direct = Summary.of(direct.generate_times)
    ttft_text = Summary.of(http.ttft_text)
    ttft_token = Summary.of(http.ttft_token)
    prefill = Summary.of(direct.prefill_times)
    prefill_decode = Summary.of(direct.prefill_decode_times)
    interval = Summary.of(http.intervals)
    decode_step = Summary.of(direct.decode_step_times)
    completion_ratio = ratio(completion_http.median, completion_direct.median)
    ttft_ratio = ratio(ttft_text.median, prefill_decode.median)
    interval_ratio = ratio(interval.median, decode_step.median)

    def row(label: str, served: Summary, reference: Summary, scale: float = 1.0) -> tuple[str, str, str, str]:
        def cell(summary: Summary) -> str:
            return f"{summary.median * scale * 1e3:.2f} ms ({summary.minimum * scale * 1e3:.2f})"

        return label, cell(served), cell(reference), f"{ratio(served.median, reference.median):.3f}x"

    print()
    print(f"median (minimum) of {args.repeats} interleaved runs per side, after {args.warmup} warm-up runs each")
    print(table([
        row(f"{TOKENS}-token greedy completion / generate()", completion_http, completion_direct),
        row("  the same, per generated token", completion_http, completion_direct, 1 / TOKENS),
        row("time to first text (stream) / prefill + 1 decode", ttft_text, prefill_decode),
        row("time to first token chunk / prefill only", ttft_token, prefill),
        row("per-token interval (stream) / 1 decode step", interval, decode_step),
    ]))
    print()
    print(f"token ids: HTTP and generate() {'MATCH' if ids_match else 'DIFFER'} "
          f"({len(http.generated) + len(direct.generated)} runs compared); server prompt ids "
          f"{'match' if prompt_match else 'DIFFER from'} apply_chat_template")
    verdict = "holds" if completion_ratio <= TARGET_RATIO else "does NOT hold"
    print(f"target HTTP/direct <= {TARGET_RATIO:.2f}x {verdict} ({completion_ratio:.3f}x)")
    contention = "unknown" if other_share is None else f"{other_share:.1%}"
    print(f"total run time {time.perf_counter() - began:.1f} s; CPU taken by other processes while measuring: "
          f"{contention} of the machine")
    if other_share is not None and other_share > 0.05:
        print("warning: the machine was busy with other work during this run; both sides were slowed by it")

    if args.json:
        figures = {
            "date": datetime.date.today().isoformat(),
            "config": {
                "hidden_size": args.hidden_size, "layers": args.layers, "heads": heads, "parameters": parameters,
                "prompt_tokens": len(prompt_ids), "generated_tokens": TOKENS, "repeats": args.repeats,
                "warmup": args.warmup, "store": args.store, "threads": threads, "usable_cores": usable_cores(),
                "torch": torch.__version__, "transformers": transformers.__version__,
                "python": platform.python_version(),
                "other_processes_cpu_share": None if other_share is None else round(other_share, 4),
            },
            "completion": {
                "http": completion_http.as_ms(), "direct_generate": completion_direct.as_ms(),
                "ratio": round(completion_ratio, 4), "target": TARGET_RATIO,
                "target_holds": completion_ratio <= TARGET_RATIO,
                "token_ids_match": ids_match, "prompt_ids_match": prompt_match,
            },
            "stream": {
                "ttft_first_text": ttft_text.as_ms(), "ttft_first_token_chunk": ttft_token.as_ms(),
                "direct_prefill": prefill.as_ms(), "direct_prefill_plus_decode": prefill_decode.as_ms(),
                "ttft_ratio": round(ttft_ratio, 4),
                "interval": interval.as_ms(), "direct_decode_step": decode_step.as_ms(),
                "interval_ratio": round(interval_ratio, 4),
            },
        }
        print(json.dumps(figures, indent=2))
    return 0 if ids_match else 1


if __name__ == "__main__":
    sys.exit(main())
