"""Multi-turn agent episodes with the prefix cache off and on (issue 14), and vLLM's own server.

An episode is 8 turns of a tool-using loop as a harness sends it: turn 1's prompt is the chat
template rendered with a few tool definitions, a system and a user message; every next turn's
prompt is the previous prompt + the tokens just sampled + a tool result (a few hundred tokens
of template and text), sent as token ids to `/v1/completions` (streamed, `max_tokens` fixed,
`ignore_eos`), so every server reads exactly the same prompts. 1 and 16 episodes run at once.

Sides, each its own server process on loopback, on the same model directory (saved here by
`build_tiny_model`): localoai with `--prefix-cache-bytes 0` (off) and with the default (on);
with `--vllm-python PY`, vLLM's OpenAI server run by that interpreter with automatic prefix
caching off and on. Every side's server is up from the start; the sides then take turns at each
concurrency, in the given order and reversed in every other round (`--repeats` rounds, other
episodes each round, figures the median over rounds), so no side gets a quieter slice of a shared
machine. Figures: time per episode (wall time of its 8 turns, mean), episode throughput (episodes per minute), prompt tokens computed per turn (`prompt_tokens` -
`usage.prompt_tokens_details.cached_tokens`) and time to first token of turn 8 (median), from the
request leaving the client: the requests go through the `openai` SDK's `post`, which sends the body
as given (`completions.create` first walks every item of the prompt in Python, ~60 ms for 3000 ids).
Targets: turn-8 TTFT >= 3x faster with the cache at 1 episode; episode throughput >= 1.5x at 16.

    python benchmarks/multiturn.py                                    # localoai off / on
    python benchmarks/multiturn.py --vllm-python /work/venv-vllm/bin/python --json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

TOOLS = [{"type": "function", "function": {
    "name": name, "description": f"{name.replace('_', ' ')}: use it when the task needs it.",
    "parameters": {"type": "object", "properties": {
        "path": {"type": "string", "description": "a path in the repository"},
        "pattern": {"type": "string", "description": "what to look for"},
        "limit": {"type": "integer", "description": "how many results at most"}}, "required": ["path"]}}}
    for name in ("read_file", "search_code", "run_tests", "apply_patch")]


@dataclass
class Turn:
    prompt_tokens: int
    cached_tokens: int
    ttft: float


@dataclass
class Episode:
    seconds: float = 0.0
    turns: list[Turn] = field(default_factory=list)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def first_prompt(tokenizer: Any, episode: int) -> list[int]:
    messages = [{"role": "system", "content": "You are a coding agent. Use the tools to fix the failing test."},
                {"role": "user", "content": f"Task {episode}: the test in tests/test_{episode}.py fails; fix it."}]
    return list(tokenizer.apply_chat_template(messages, tools=TOOLS, add_generation_prompt=True, tokenize=True,
                                              return_dict=False))


def tool_result(tokenizer: Any, rng: random.Random, tokens: int) -> list[int]:
    words = " ".join(rng.choice(["def", "return", "self", "assert", "import", "path", "line", "error", "value",
                                 "test", "=", "(", ")", ":", "0", "1"]) for _ in range(tokens))
    text = f"<|im_end|>\n<|im_start|>user\n<tool_response>\n{words}\n</tool_response><|im_end|>\n<|im_start|>assistant\n"
    return list(tokenizer(text, add_special_tokens=False).input_ids)


async def run_episode(client: Any, model: str, tokenizer: Any, number: int, args: argparse.Namespace) -> Episode:
    from openai import AsyncStream
    from openai.types import Completion

    rng = random.Random(number)
    prompt = first_prompt(tokenizer, number)
    episode = Episode()
    start = time.perf_counter()
    for _ in range(args.turns):
        sent = time.perf_counter()
        ttft, completion, usage = None, [], None
        # `post`, not `completions.create`: the same request and stream, without the SDK's per-item
        # transform of the body, which takes ~60 ms for a 3000-id prompt here (client time, not the server's)
        stream = await client.post("/completions", cast_to=Completion, stream=True, stream_cls=AsyncStream[Completion],
                                   body={"model": model, "prompt": prompt, "max_tokens": args.tokens, "temperature": 0,
                                         "stream": True, "stream_options": {"include_usage": True},
                                         "ignore_eos": True, "return_token_ids": True})
        async for chunk in stream:
            if chunk.choices:
                ttft = ttft if ttft is not None else time.perf_counter() - sent
                completion.extend(chunk.choices[0].model_extra.get("token_ids") or [])
            if chunk.usage is not None:
                usage = chunk.usage
        assert usage is not None and ttft is not None
        details = usage.prompt_tokens_details
        episode.turns.append(Turn(usage.prompt_tokens, (details.cached_tokens or 0) if details else 0, ttft))
        if len(completion) != args.tokens:  # a server that does not return token ids: re-tokenize the text
            raise RuntimeError(f"expected {args.tokens} completion token ids, got {len(completion)}")
        prompt = prompt + completion + tool_result(tokenizer, rng, args.result_words)
    episode.seconds = time.perf_counter() - start
    return episode


async def measure(base_url: str, model: str, tokenizer: Any, episodes: int, args: argparse.Namespace,
                  first: int) -> tuple[float, list[Episode]]:
    import openai

    async with openai.AsyncOpenAI(base_url=base_url, api_key="none", max_retries=0, timeout=3600) as client:
        start = time.perf_counter()
        done = await asyncio.gather(*[run_episode(client, model, tokenizer, first + i, args)
                                      for i in range(episodes)])
        return time.perf_counter() - start, list(done)


def wait_ready(url: str, process: subprocess.Popen[Any], timeout: float = 900.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode}")
        try:
            if httpx.get(url + "/v1/models", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)  # a benchmark polling a child process, not a test
    raise RuntimeError("the server did not answer in time")


def server_command(side: str, model_dir: str, port: int, args: argparse.Namespace) -> tuple[list[str], str]:
    engine, cache = side.split(":")
    if engine == "localoai":
        command = [sys.executable, "-m", "localoai", "serve", model_dir, "--port", str(port), "--name", "m",
                   "--store", ":memory:"]
        return command + (["--prefix-cache-bytes", "0"] if cache == "off" else []), "m"
    command = [args.vllm_python, "-m", "vllm.entrypoints.openai.api_server", "--model", model_dir,
               "--served-model-name", "m", "--host", "127.0.0.1", "--port", str(port), "--dtype", "float32",
               "--enable-prompt-tokens-details", "--max-model-len", str(args.context),
               "--gpu-memory-utilization", str(args.vllm_memory)]  # on CPU: the share of RAM it reserves
    return command + (["--no-enable-prefix-caching"] if cache == "off" else ["--enable-prefix-caching"]), "m"


def summarize(wall: float, episodes: list[Episode]) -> dict[str, Any]:
    turns = len(episodes[0].turns)
    return {
        "episode_seconds": statistics.mean(e.seconds for e in episodes),
        "episodes_per_minute": 60 * len(episodes) / wall,
        "computed_per_turn": [statistics.mean(e.turns[t].prompt_tokens - e.turns[t].cached_tokens
                                              for e in episodes) for t in range(turns)],
        "prompt_per_turn": [statistics.mean(e.turns[t].prompt_tokens for e in episodes) for t in range(turns)],
        "last_ttft": statistics.median(e.turns[-1].ttft for e in episodes),
    }


def median_of(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """One figure per field over the rounds of a configuration: the median (per turn for the lists),
    with each round's episodes per minute kept as `episodes_per_minute_rounds`."""
    merged: dict[str, Any] = {}
    for name, value in rounds[0].items():
        values = [figures[name] for figures in rounds]
        merged[name] = ([statistics.median(turn) for turn in zip(*values)] if isinstance(value, list)
                        else statistics.median(values))
    merged["episodes_per_minute_rounds"] = [figures["episodes_per_minute"] for figures in rounds]
    return merged


def round_order(sides: list[str], number: int) -> list[str]:
    """The sides in the order of round `number`: as given, then reversed, and so on (A B C D, D C B A),
    so a drift in the machine's load over a run weighs on every side alike, and an engine's off and
    on sides run next to each other."""
    return list(sides) if number % 2 == 0 else list(reversed(sides))


def start_servers(sides: list[str], model_dir: str, args: argparse.Namespace,
                  stack: contextlib.ExitStack) -> dict[str, tuple[str, str]]:
    """Every side's server, started at once and warmed up (a 2-turn episode on other prompts): its
    base URL and model name by side. A side whose server fails is reported and left out."""
    started: dict[str, tuple[str, str, subprocess.Popen[Any]]] = {}
    for side in sides:
        port = free_port()
        command, model = server_command(side, model_dir, port, args)
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        stack.callback(stop, process)
        started[side] = (f"http://127.0.0.1:{port}", model, process)
    ready: dict[str, tuple[str, str]] = {}
    for side, (url, model, process) in started.items():
        try:
            wait_ready(url, process)
            ready[side] = (url + "/v1", model)
        except Exception as exc:  # noqa: BLE001 - the other sides still run
            process.terminate()
            print(f"{side}: failed: {exc}\n{process.communicate(timeout=60)[1][-3000:]}", flush=True)
    return ready


def stop(process: subprocess.Popen[Any]) -> None:
    if process.poll() is None:
        process.terminate()
        process.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hidden-size", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4, help="head dim = hidden / heads; vLLM's CPU needs >= 32")
    parser.add_argument("--turns", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=32, help="sampled tokens per turn")
    parser.add_argument("--result-words", type=int, default=80, help="words of each tool result")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--context", type=int, default=8192)
    parser.add_argument("--vllm-python", default=None, help="a Python with vllm installed: adds vLLM's server")
    parser.add_argument("--vllm-memory", type=float, default=0.15,
                        help="vLLM's --gpu-memory-utilization, on CPU the share of RAM for its KV cache")
    parser.add_argument("--sides", nargs="+", default=None,
                        help="only these of localoai:off localoai:on vllm:off vllm:on (e.g. to profile one)")
    parser.add_argument("--repeats", type=int, default=1,
                        help="rounds of every side at every concurrency, in alternating order; figures are medians")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    from localoai.testing import build_tiny_model

    sides = ["localoai:off", "localoai:on"] + (["vllm:off", "vllm:on"] if args.vllm_python else [])
    sides = [side for side in sides if args.sides is None or side in args.sides]
    rounds: dict[str, list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory() as model_dir, contextlib.ExitStack() as stack:
        _, tokenizer = build_tiny_model(model_dir, hidden_size=args.hidden_size, num_layers=args.layers,
                                        num_heads=args.heads, max_position_embeddings=args.context)
        servers = start_servers(sides, model_dir, args, stack)
        warm_up = argparse.Namespace(**{**vars(args), "turns": 2})
        for side, (base_url, model) in servers.items():
            asyncio.run(measure(base_url, model, tokenizer, 1, warm_up, first=10_000))
        for number in range(args.repeats):
            for count in args.concurrency:
                for side in round_order(list(servers), number):
                    base_url, model = servers[side]
                    # Other episodes every round (a cache must not serve one round from another's)
                    first = count * 100 + number * 100_000
                    try:
                        wall, episodes = asyncio.run(measure(base_url, model, tokenizer, count, args, first=first))
                    except Exception as exc:  # noqa: BLE001 - the other sides still run
                        print(f"round {number + 1} {side} {count} episodes: failed: {exc}", flush=True)
                        continue
                    figures = summarize(wall, episodes)
                    rounds.setdefault(f"{side}@{count}", []).append(figures)
                    print(f"round {number + 1} {side:14} {count:2} episodes: {json.dumps(figures, default=round)}",
                          flush=True)
    results = {key: median_of(figures) for key, figures in rounds.items()}
    report(results, args)


def report(results: dict[str, dict[str, Any]], args: argparse.Namespace) -> None:
    print("\n| engine | episodes at once | cache | time per episode | episodes / min | prompt tokens computed per "
          "turn (1..8) | turn-8 TTFT |\n| --- | --- | --- | --- | --- | --- | --- |")
    for key, figures in results.items():
        side, count = key.split("@")
        engine, cache = side.split(":")
        computed = " / ".join(str(round(x)) for x in figures["computed_per_turn"])
        print(f"| {engine} | {count} | {cache} | {figures['episode_seconds']:.2f} s | "
              f"{figures['episodes_per_minute']:.1f} | {computed} | {1000 * figures['last_ttft']:.0f} ms |")
    for engine in ("localoai", "vllm"):
        for count in args.concurrency:
            off, on = results.get(f"{engine}:off@{count}"), results.get(f"{engine}:on@{count}")
            if off and on:
                print(f"{engine} at {count}: turn-8 TTFT off/on {off['last_ttft'] / on['last_ttft']:.2f}x, "
                      f"episode throughput on/off {on['episodes_per_minute'] / off['episodes_per_minute']:.2f}x")
    if args.json:
        print(json.dumps(results))


if __name__ == "__main__":
    main()
