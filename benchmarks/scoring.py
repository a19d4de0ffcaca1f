"""Scoring given tokens through the server vs a direct batched forward pass, in the same run.

One legacy completions request with N token-id prompts, `prompt_logprobs: 0`, `max_tokens: 0` (what a
trainer sends to score N trajectories under the live policy) against one padded forward pass of the
same sequences plus `log_softmax` and a gather; and against N such requests sent one after the other.
Prints medians (minimum in brackets) and ratios; checks the logprobs agree.

    python benchmarks/scoring.py [--sequences 16] [--length 128] [--repeats 7] [--hidden-size 256] [--layers 4]
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

import localoai
from localoai.testing import build_tiny_model


def timed(run: Callable[[], Any]) -> tuple[float, Any]:
    gc.collect()
    start = time.perf_counter()
    result = run()
    return time.perf_counter() - start, result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sequences", type=int, default=16)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--hidden-size", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    args = parser.parse_args()
    model, tokenizer = build_tiny_model(hidden_size=args.hidden_size, num_layers=args.layers)
    generator = torch.Generator().manual_seed(0)
    sequences = torch.randint(3, model.config.vocab_size, (args.sequences, args.length), generator=generator).tolist()
    server = localoai.start(model, tokenizer, port=0, store=":memory:", name="bench")
    client = server.client(max_retries=0)

    def served() -> list[list[float]]:
        answer = client.completions.create(model="bench", prompt=sequences, max_tokens=0,
                                           extra_body={"prompt_logprobs": 0})
        return [[entries[str(token)]["logprob"]
                 for entries, token in zip(choice.model_extra["prompt_logprobs"][1:], sequence[1:])]
                for choice, sequence in zip(answer.choices, sequences)]

    def one_by_one() -> None:
        for sequence in sequences:
            client.completions.create(model="bench", prompt=sequence, max_tokens=0, extra_body={"prompt_logprobs": 0})

    def direct() -> list[list[float]]:
        ids = torch.tensor(sequences)
        with torch.inference_mode():
            logprobs = torch.log_softmax(model(input_ids=ids).logits[:, :-1].float(), dim=-1)
        return logprobs.gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1).tolist()

    try:
        for run in (served, one_by_one, direct):  # warm-up
            run()
        times: dict[str, list[float]] = {"served": [], "one_by_one": [], "direct": []}
        for repeat in range(args.repeats):
            order = [served, one_by_one, direct] if repeat % 2 == 0 else [direct, one_by_one, served]
            for run in order:
                elapsed, result = timed(run)
                times[run.__name__].append(elapsed)
                if run is served:
                    ours = result
                elif run is direct:
                    reference = result
        worst = max(abs(a - b) for x, y in zip(ours, reference) for a, b in zip(x, y))
        median = {name: statistics.median(values) for name, values in times.items()}
        size = sum(p.numel() for p in model.parameters()) / 1e6
        print(f"{args.sequences} sequences x {args.length} tokens, {size:.1f}M "
              f"parameters, {torch.get_num_threads()} threads; largest logprob difference {worst:.2e}")
        for name, values in times.items():
            print(f"  {name:>10}: {median[name] * 1000:8.1f} ms ({min(values) * 1000:.1f})")
        print(f"  served / direct: {median['served'] / median['direct']:.2f}x; "
              f"one by one / served: {median['one_by_one'] / median['served']:.2f}x")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
