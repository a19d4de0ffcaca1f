"""Aggregate generation throughput of localoai under concurrent load, against two baselines
measured in the same run on the same model (same seed, same weights).

For 1, 8 and 32 concurrent chat completions (greedy, exactly `--tokens` tokens each, every
request a different prompt) it measures generated tokens per second of:

1. **localoai** (continuous batching, the default): the requests sent at once through HTTP
   with the official `openai` SDK (`AsyncOpenAI`, one event loop, all in flight together) from
   the server's own process, as a notebook drives it; over the SDK's aiohttp transport when
   `openai[aiohttp]` is installed (it takes about half the CPU per request of the default httpx
   one, and that CPU is the server's too: `--client httpx` measures with the default);
2. **raw batched `model.generate`** over the same prompts at the same batch size (left-padded,
   greedy, `min_new_tokens` = `max_new_tokens`): the ceiling for this model on this hardware;
3. **localoai with batching disabled** (`start(..., max_batch_size=1)`: one request at a time).

Targets at 32 concurrent requests: at least 0.8x the raw batched ceiling and at least 5x the
one-at-a-time server. One run: each side lives in a process of its own (as a server serving one
model would; see below), and after a warm-up round of each side the three take turns, one at a time
and in a rotated order each round so drift on a shared machine hits all alike, for `--repeats`
rounds; each figure is the median. Processes, because on CPU a second thread that has run torch ops
in the same process slows every other thread's ops by 25-35% for as long as it lives (each such
thread keeps an OpenMP team, and with more team threads than cores their workers stop spinning
between ops and sleep): two servers or `generate` sharing one process would measure that, not them.

    pip install "openai[aiohttp]"                         # or `-e ".[bench]"`
    python benchmarks/throughput.py                       # hidden 384, 4 layers, 64 tokens, 5 rounds
    python benchmarks/throughput.py --device cuda --json  # on a GPU, and a JSON object at the end
"""

from __future__ import annotations

import argparse
import contextlib
import asyncio
import datetime
import gc
import importlib.util
import json
import logging
import multiprocessing
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CONCURRENCY = (1, 8, 32)
WORDS = "the weather in paris london tokyo model policy reward agent answer question step".split()


def prompts(count: int) -> list[list[dict[str, str]]]:
    """Different prompts of different lengths, so batches mix lengths as real traffic does."""
    return [[{"role": "user", "content": " ".join(WORDS[(i + j) % len(WORDS)] for j in range(4 + (i * 7) % 29))}]
            for i in range(count)]


def timed(action: Callable[[], int]) -> float:
    """Generated tokens per second of one call of `action` (which returns its token count)."""
    started = time.perf_counter()
    tokens = action()
    return tokens / (time.perf_counter() - started)


class RawGenerate:
    def __init__(self, model: Any, tokenizer: Any, messages: list[list[dict[str, str]]], tokens: int) -> None:
        import torch

        self.model, self.tokens, self.torch = model, tokens, torch
        rows = [tokenizer.apply_chat_template(m, add_generation_prompt=True, tokenize=True,
                                              return_dict=True)["input_ids"] for m in messages]
        width = max(len(row) for row in rows)
        self.pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        device = next(model.parameters()).device
        self.input_ids = torch.tensor([[self.pad] * (width - len(r)) + r for r in rows], device=device)
        self.mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=device)

    def __call__(self, batch: int) -> int:
        with self.torch.inference_mode():
            out = self.model.generate(input_ids=self.input_ids[:batch], attention_mask=self.mask[:batch],
                                      max_new_tokens=self.tokens, min_new_tokens=self.tokens, do_sample=False,
                                      pad_token_id=self.pad)
        generated = out.shape[1] - self.input_ids.shape[1]
        assert generated == self.tokens
        return batch * generated


class HttpLoad:
    """The client side: one `AsyncOpenAI` client on one event loop for the whole run, so its
    connections are kept alive from round to round, as an agent framework keeps its client."""

    def __init__(self, server: Any, messages: list[list[dict[str, str]]], tokens: int, transport: str, *,
                 logprobs: bool = False) -> None:
        """`logprobs`: every request asks for its tokens' logprobs, as an RL rollout's client does."""
        self.server, self.messages, self.tokens = server, messages, tokens
        self.extra = {"logprobs": True} if logprobs else {}
        self.loop = asyncio.new_event_loop()
        self.client = self.loop.run_until_complete(self._client(transport))

    async def _client(self, transport: str) -> Any:
        import openai

        extra = {"http_client": openai.DefaultAioHttpClient()} if transport == "aiohttp" else {}
        # Retries: a kept-alive connection the server closes as the next round sends on it fails
        # before the server reads the request; every other failure still fails the run.
        return self.server.async_client(max_retries=2, timeout=600, **extra)

    def __call__(self, concurrent: int) -> int:
        return self.loop.run_until_complete(self._round(concurrent))

    def close(self) -> None:
        self.loop.run_until_complete(self.client.close())
        self.loop.close()

    async def _round(self, concurrent: int) -> int:
        answers = await asyncio.gather(*[
            self.client.chat.completions.create(
                model=self.server.model, messages=self.messages[i], temperature=0, max_tokens=self.tokens,
                extra_body={"ignore_eos": True, "min_tokens": self.tokens}, **self.extra,
            )
            for i in range(concurrent)
        ])
        generated = sum(answer.usage.completion_tokens for answer in answers)
        assert generated == concurrent * self.tokens
        return generated


SIDES = ("localoai", "raw_generate", "one_at_a_time")


def rotated_rounds(labels: Sequence[str], measure: Callable[[str, int], float], concurrent: int, repeats: int,
                   figures: dict[str, dict[int, float]], rounds: dict[str, dict[int, list[float]]]) -> None:
    """A warm-up round of each side at this shape, then `repeats` rounds of all of them, in a rotated
    order each round so drift on a shared machine hits every side alike; the rates go to `rounds`,
    their medians to `figures` (keyed by side, then `concurrent`)."""
    rates: dict[str, list[float]] = {label: [] for label in labels}
    for label in labels:
        measure(label, concurrent)
    for repeat in range(repeats):
        shift = repeat % len(labels)
        for label in [*labels[shift:], *labels[:shift]]:
            rates[label].append(measure(label, concurrent))
    for label, values in rates.items():
        figures[label][concurrent] = statistics.median(values)
        rounds[label][concurrent] = values
    print(f"{concurrent} concurrent, tok/s medians: " + ", ".join(
        f"{label} {figures[label][concurrent]:.1f}" for label in labels), file=sys.stderr, flush=True)


def _has_aiohttp() -> bool:
    """Whether `openai.DefaultAioHttpClient` can work (`pip install "openai[aiohttp]"`)."""
    return importlib.util.find_spec("aiohttp") is not None


def side_process(label: str, args: argparse.Namespace, connection: Connection) -> None:
    """One side of the comparison in a process of its own: build the model (same seed, same weights
    in every process), set the side up, then run a round for each concurrency it is sent (None ends)
    and send back its tokens/s. Idle, it waits on the pipe and takes no CPU."""
    import torch

    import localoai
    from localoai.testing import build_tiny_model

    logging.getLogger("localoai").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    model, tokenizer = build_tiny_model(hidden_size=args.hidden_size, num_layers=args.layers,
                                        num_heads=max(1, args.hidden_size // 64))
    model.to(args.device)
    messages = prompts(max(CONCURRENCY))
    with tempfile.TemporaryDirectory() as store_dir:
        server = load = None
        if label == "raw_generate":
            side: Callable[[int], int] = RawGenerate(model, tokenizer, messages, args.tokens)
        else:
            server = localoai.start(model, tokenizer, port=0, name="bench", store=os.path.join(store_dir, "store.sqlite3"),
                                    prefix_cache=args.prefix_cache == "on",
                                    **({"max_batch_size": 1} if label == "one_at_a_time" else {}))
            side = load = HttpLoad(server, messages, args.tokens, args.client)
        if server is None:  # as `start()` does for the servers (`gc_freeze`), so all three sides alike
            gc.collect()
            gc.freeze()
        try:
            connection.send(sum(p.numel() for p in model.parameters()))
            while (concurrent := connection.recv()) is not None:
                connection.send(timed(lambda: side(concurrent)))
        finally:
            if load is not None:
                load.close()
            if server is not None:
                server.stop()
            else:
                gc.unfreeze()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hidden-size", type=int, default=384)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--prefix-cache", choices=("on", "off"), default="on", help="the servers' prefix cache")
    parser.add_argument("--client", choices=("aiohttp", "httpx"), default="aiohttp" if _has_aiohttp() else "httpx",
                        help="the openai SDK's HTTP transport (default: aiohttp when `openai[aiohttp]` is installed)")
    args = parser.parse_args()

    import torch

    context = multiprocessing.get_context("spawn")
    pipes: dict[str, Connection] = {}
    workers = []
    for label in SIDES:
        ours, theirs = context.Pipe()
        worker = context.Process(target=side_process, args=(label, args, theirs), name=f"throughput-{label}")
        worker.start()
        pipes[label] = ours
        workers.append(worker)
    figures: dict[str, dict[int, float]] = {label: {} for label in SIDES}
    rounds: dict[str, dict[int, list[float]]] = {label: {} for label in SIDES}
    try:
        parameters = [pipes[label].recv() for label in SIDES][0]

        def measure(label: str, concurrent: int) -> float:
            pipes[label].send(concurrent)
            return pipes[label].recv()

        for concurrent in CONCURRENCY:
            rotated_rounds(SIDES, measure, concurrent, args.repeats, figures, rounds)
    finally:
        for label, worker in zip(SIDES, workers):
            with contextlib.suppress(OSError):
                pipes[label].send(None)
            worker.join(30)

    print(f"load average over the last 5 minutes: {os.getloadavg()[1]:.1f} on {os.cpu_count()} cores")
    print(f"model: Qwen2-style, hidden {args.hidden_size}, {args.layers} layers, {parameters / 1e6:.1f}M parameters, "
          f"{args.device}; {args.tokens} tokens per request; torch threads {args.threads}; SDK over {args.client}; "
          f"{platform.machine()}, torch {torch.__version__}; {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC")
    print(f"{'concurrent':>10} | {'localoai tok/s':>14} | {'raw generate':>12} | {'one at a time':>13} | "
          f"{'vs raw':>7} | {'vs 1-at-a-time':>14}")
    ratios: dict[int, dict[str, float]] = {}
    for concurrent in CONCURRENCY:
        served, ceiling, serial = (figures[k][concurrent] for k in ("localoai", "raw_generate", "one_at_a_time"))
        ratios[concurrent] = {"vs_raw": served / ceiling, "vs_one_at_a_time": served / serial}
        print(f"{concurrent:>10} | {served:>14.1f} | {ceiling:>12.1f} | {serial:>13.1f} | "
              f"{served / ceiling:>6.2f}x | {served / serial:>13.2f}x")
    print("rounds at 32 (tok/s, in the order run): " + "; ".join(
        f"{label} {' '.join(f'{value:.0f}' for value in rounds[label][32])}" for label in SIDES))
    at_32 = ratios[32]
    print(f"targets at 32: >= 0.8x raw ({at_32['vs_raw']:.2f}x: {'met' if at_32['vs_raw'] >= 0.8 else 'NOT met'}), "
          f">= 5x one at a time ({at_32['vs_one_at_a_time']:.2f}x: "
          f"{'met' if at_32['vs_one_at_a_time'] >= 5 else 'NOT met'})")
    if args.json:
        print(json.dumps({"figures": figures, "rounds": rounds, "ratios": ratios, "parameters": parameters, "args": vars(args)}))


if __name__ == "__main__":
    main()
