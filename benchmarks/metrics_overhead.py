"""What `/metrics` costs the decode loop: the engine's per-step observation and the per-generation
one, against one forward pass of the throughput benchmark's model (32 rows, one token each)
measured in the same run.

    python benchmarks/metrics_overhead.py
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ROWS, TOKENS, REPEATS = 32, 64, 7


def per_call(function: object, calls: int) -> float:
    """Median seconds per call over REPEATS runs of `calls` calls."""
    runs = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        for _ in range(calls):
            function()  # type: ignore[operator]
        runs.append((time.perf_counter() - start) / calls)
    return statistics.median(runs)


def main() -> None:
    import torch

    from localoai.metrics import ServingMetrics
    from localoai.testing import build_tiny_model

    torch.set_num_threads(2)
    model, _ = build_tiny_model(hidden_size=384, num_layers=4)
    ids = torch.randint(0, 1000, (ROWS, 1))
    with torch.inference_mode():
        forward = per_call(lambda: model(input_ids=ids), 20)
    metrics = ServingMetrics()
    step = per_call(lambda: metrics.step(ROWS), 20_000)
    spans = [[(TOKENS, 0)]]
    timings = {"queued": 0.01, "first_token": 0.05, "total": 1.0}
    generation = per_call(lambda: metrics.generation(status="completed", prompt_tokens=30, samples=spans,
                                                     timings=timings, current_version=1), 5_000)
    request = per_call(lambda: metrics.request("/v1/chat/completions", "POST", 200), 20_000)
    scrape = per_call(metrics.exposition, 200)
    print(f"one forward pass ({ROWS} rows x 1 token): {forward * 1e3:.2f} ms")
    print(f"per engine step: {step * 1e6:.2f} us = {step / forward:.5f}x a forward pass")
    print(f"per generation ({TOKENS} tokens) + its HTTP request: {(generation + request) * 1e6:.2f} us "
          f"= {(generation + request) / (forward * TOKENS / ROWS):.5f}x its share of {TOKENS} batched steps")
    print(f"a scrape (no store bound): {scrape * 1e3:.2f} ms")


if __name__ == "__main__":
    main()
