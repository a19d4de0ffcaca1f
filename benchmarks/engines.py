"""The two engines side by side (issue #13): throughput of four sides on the same model and prompts,
and the time to push a weight update into vLLM.

Throughput: chat completions at each `--concurrency` level (default 1, 8, 32, 128; greedy, exactly
`--tokens` tokens each, every request a different prompt: `throughput.py`'s prompts and client),
generated tokens per second of

1. **native**: localoai on its own engine (`localoai.start(model, tokenizer)`);
2. **vllm_engine**: localoai on the vLLM engine (`engine="vllm"`);
3. **vllm_server**: vLLM's own OpenAI server (`python -m vllm.entrypoints.openai.api_server`);
4. **raw**: batched `model.generate` over the same prompts (`throughput.RawGenerate`).

Each side is a process of its own on one model directory (`build_tiny_model`, saved once), the
three servers on loopback; this process is every server's client (the `openai` SDK, one
`AsyncOpenAI` per server), so all three servers are measured alike. After a warm-up round each,
the sides take turns in a rotated order, `--repeats` rounds; each figure is the median. Ratios:
vllm_engine / vllm_server (target >= 0.9x at 32), and native against both vLLM sides at each level.

Weight push (`--push-sizes`): for models of a few sizes, localoai on the vLLM engine, the time from
`server.pause()` through a change of every parameter and `resume()` (which pushes the weights into
vLLM) to the first token of the next greedy answer, and the push alone (`push_weights()`).

    python benchmarks/engines.py --vllm-python /work/venv-vllm/bin/python
    python benchmarks/engines.py --vllm-python PY --concurrency 32 --sides vllm_engine vllm_server
    python benchmarks/engines.py --vllm-python PY --no-throughput --push-sizes 1m 10m 50m

On CPU vLLM's attention needs a head dimension of at least 32 (here 64), and vLLM's engine core
keeps its worker in its own process with `VLLM_ENABLE_V1_MULTIPROCESSING=0` (set for both vLLM sides).

`--pin` gives the model its own cores, as a GPU is its own device: the first core runs every frontend
(HTTP, handlers, vLLM's frontend, the recorder) and this client, the others run the model (vLLM's
engine-core process; the native engine's decode thread; raw `generate`), with as many OpenMP threads
as they have cores. Without it every process floats over every core, and on a small machine each
millisecond of frontend work then stalls the model's OpenMP team (vLLM's CPU build, with its worker
in the engine-core process, binds nothing). Each round also reads the CPU time each server's
frontend process and its model spent (`/proc`), per generated token: what each side costs, however
the cores are shared.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from multiturn import free_port, wait_ready
from throughput import HttpLoad, RawGenerate, prompts, rotated_rounds, timed

SIDES = ("native", "vllm_engine", "vllm_server", "raw")
SIZES: dict[str, dict[str, int]] = {
    "1m": {"hidden_size": 128, "num_layers": 4, "num_heads": 4},
    "10m": {"hidden_size": 512, "num_layers": 4, "num_heads": 8},
    "50m": {"hidden_size": 1024, "num_layers": 5, "num_heads": 16},
}
"""Model sizes for the weight push (head dimension 32 or more, as vLLM's CPU attention needs)."""


@dataclass
class Endpoint:
    """A server as `throughput.HttpLoad` reads one: its model id and an `AsyncOpenAI` for it."""

    url: str
    model: str

    def async_client(self, **options: Any) -> Any:
        import openai

        return openai.AsyncOpenAI(base_url=self.url + "/v1", api_key="none", **options)


def side_environment(pin: bool = False) -> dict[str, str]:
    """Every side's environment (`pin`: OpenMP threads as many as the model's cores)."""
    threads = {"OMP_NUM_THREADS": str(len(model_cores()))} if pin else {}
    return {**os.environ, "VLLM_ENABLE_V1_MULTIPROCESSING": "0", "PYTHONPATH": str(ROOT),
            "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", **threads}


# --- placement and CPU accounting (Linux `/proc`) ----------------------------------------------
CORES = sorted(os.sched_getaffinity(0))
"""The cores this process could use when it started (before `--pin` placed it)."""


def frontend_cores() -> set[int]:
    """`--pin`: the first usable core, for every frontend and the client."""
    return set(CORES[:1])


def model_cores() -> set[int]:
    """`--pin`: the other usable cores, for the model."""
    return set(CORES[1:])


def threads_of(pid: int) -> list[int]:
    return [int(tid) for tid in os.listdir(f"/proc/{pid}/task")]


def descendants(pid: int) -> list[int]:
    """The processes below `pid` (vLLM's engine core, its helpers)."""
    found: list[int] = []
    for tid in threads_of(pid):
        with contextlib.suppress(OSError):
            for child in map(int, Path(f"/proc/{pid}/task/{tid}/children").read_text().split()):
                found += [child, *descendants(child)]
    return found


def pin(pid: int, cores: set[int]) -> None:
    """Every thread of process `pid` onto `cores` (threads it starts later inherit their starter's)."""
    for tid in threads_of(pid):
        with contextlib.suppress(OSError):  # a thread that just ended
            os.sched_setaffinity(tid, cores)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process `pid` so far (all its threads, no child processes)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def vllm_options(args: argparse.Namespace) -> dict[str, Any]:
    return {"gpu_memory_utilization": args.vllm_memory, "max_model_len": args.context, "max_num_seqs": 256}


# --- the side processes -----------------------------------------------------------------------
def announce(args: argparse.Namespace, text: str) -> None:
    """Write `text` to `--ready-file` at once (written aside, then renamed: never read half-written)."""
    partial = Path(args.ready_file + ".partial")
    partial.write_text(text)
    partial.rename(args.ready_file)


def serve(args: argparse.Namespace) -> None:
    """`--serve native|vllm_engine`: localoai on the saved model, its port on stdout, until stdin ends."""
    import logging
    import warnings

    from transformers import AutoModelForCausalLM, AutoTokenizer

    import localoai

    logging.getLogger("localoai").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore")
    model = AutoModelForCausalLM.from_pretrained(args.model_dir, dtype="float32")
    tokenizer = AutoTokenizer.from_pretrained(args.model_dir)
    engine = {"engine": "vllm", "engine_options": vllm_options(args)} if args.serve == "vllm_engine" else {}
    with tempfile.TemporaryDirectory() as store_dir:
        server = localoai.start(model, tokenizer, port=0, name="m", store=os.path.join(store_dir, "store.sqlite3"),
                                **engine)
        try:
            if args.pin and args.serve == "native":  # its decode thread onto the model's cores, the rest
                pin(os.getpid(), frontend_cores())      # onto the frontend's (vllm_engine: `Side` pins it)
                os.sched_setaffinity(server.served.engine._thread.native_id, model_cores())
            announce(args, str(server.port))
            sys.stdin.read()
        finally:
            server.stop()


def raw(args: argparse.Namespace) -> None:
    """`--serve raw`: batched `generate`; reads a concurrency per line, answers its tokens/s."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(args.model_dir, dtype="float32")
    tokenizer = AutoTokenizer.from_pretrained(args.model_dir)
    generate = RawGenerate(model, tokenizer, prompts(max(args.concurrency)), args.tokens)
    if args.pin:
        pin(os.getpid(), model_cores())
    announce(args, "")
    for line in sys.stdin:
        concurrent = int(line)
        rate = timed(lambda rows=concurrent: generate(rows))
        announce(argparse.Namespace(ready_file=str(Path(args.ready_file).with_suffix(".rates"))), str(rate))


def first_token(server: Any) -> float:
    """Seconds to the first streamed token of a short greedy chat completion."""
    started = time.perf_counter()
    messages = [{"role": "user", "content": "hello, what is the weather in paris?"}]
    with server.client().chat.completions.create(model=server.model, messages=messages, max_tokens=4,
                                                 temperature=0, stream=True) as stream:
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                break
    return time.perf_counter() - started


def push(args: argparse.Namespace) -> None:
    """`--serve push`: for each size, pause -> change every parameter -> resume -> first token."""
    import logging
    import warnings

    import torch

    import localoai
    from localoai.testing import build_tiny_model

    logging.getLogger("localoai").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore")
    for size in args.push_sizes:
        model, tokenizer = build_tiny_model(**SIZES[size])
        parameters = sum(p.numel() for p in model.parameters())
        server = localoai.start(model, tokenizer, port=0, store=":memory:", engine="vllm",
                                engine_options=vllm_options(args))
        try:
            first_token(server)  # warm-up
            alone = []
            for _ in range(args.repeats):
                with server.pause(mode="keep"):  # leaving it pushes again: the push alone is timed inside
                    alone.append(server.served.engine.push_weights())
            cycles = []
            for seed in range(args.repeats):
                started = time.perf_counter()
                with server.pause(mode="keep"), torch.no_grad():
                    generator = torch.Generator().manual_seed(seed)
                    for parameter in model.parameters():
                        parameter.add_(torch.randn(parameter.shape, generator=generator) * 1e-3)
                resumed = time.perf_counter() - started
                cycles.append((resumed, resumed + first_token(server)))
            print("PUSH " + json.dumps({
                "size": size, "parameters": parameters, "push": statistics.median(alone),
                "to_resume": statistics.median(c[0] for c in cycles),
                "to_first_token": statistics.median(c[1] for c in cycles)}), flush=True)
        finally:
            server.stop()


# --- the orchestrator ---------------------------------------------------------------------------
class Side:
    """One side's process, and how a round of it is measured from here."""

    def __init__(self, label: str, args: argparse.Namespace, model_dir: str) -> None:
        self.label = label
        python = sys.executable if label in ("native", "raw") else args.vllm_python
        script = [python, str(Path(__file__).resolve()), "--model-dir", model_dir, "--tokens", str(args.tokens),
                  "--context", str(args.context), "--vllm-memory", str(args.vllm_memory),
                  "--concurrency", *map(str, args.concurrency), *(["--pin"] if args.pin else [])]
        environment = side_environment(args.pin)
        self.load: HttpLoad | None = None
        self.cpu: dict[int, list[tuple[float, float]]] = {}
        """Per concurrency, per round (the warm-up first): the frontend process's and its child processes'
        (vLLM's engine core) CPU seconds per generated token."""
        if label == "vllm_server":
            port = free_port()
            command = [python, "-m", "vllm.entrypoints.openai.api_server", "--model", model_dir,
                       "--served-model-name", "m", "--host", "127.0.0.1", "--port", str(port), "--dtype", "float32",
                       "--max-model-len", str(args.context), "--gpu-memory-utilization", str(args.vllm_memory),
                       "--max-num-seqs", "256", "--disable-log-stats"]
            self.process = subprocess.Popen(command, env=environment, stdin=subprocess.PIPE,
                                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True)
            url = f"http://127.0.0.1:{port}"
            wait_ready(url, self.process)
        else:
            ready = Path(model_dir) / f"{label}.ready"
            self.process = subprocess.Popen(script + ["--serve", label, "--ready-file", str(ready)],
                                            env=environment, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                            stderr=subprocess.DEVNULL, text=True)
            while not ready.exists():  # a benchmark waiting for a child process, not a test
                if self.process.poll() is not None:
                    raise RuntimeError(f"{label} exited with {self.process.returncode} before it was ready")
                time.sleep(0.5)
            if label == "raw":
                self.results = ready.with_suffix(".rates")
                return
            url = f"http://127.0.0.1:{int(ready.read_text())}"
        if args.pin and label != "native":  # native pins its own threads (`serve`)
            pin(self.process.pid, frontend_cores())
            for child in descendants(self.process.pid):
                pin(child, model_cores())
        self.load = HttpLoad(Endpoint(url, "m"), prompts(max(args.concurrency)), args.tokens, args.client,
                             logprobs=args.logprobs)

    def measure(self, concurrent: int) -> float:
        if self.load is not None:
            children = descendants(self.process.pid)
            before = cpu_seconds(self.process.pid), sum(map(cpu_seconds, children))
            rate = timed(lambda: self.load(concurrent))
            tokens = concurrent * self.load.tokens
            self.cpu.setdefault(concurrent, []).append(((cpu_seconds(self.process.pid) - before[0]) / tokens,
                                                        (sum(map(cpu_seconds, children)) - before[1]) / tokens))
            return rate
        self.process.stdin.write(f"{concurrent}\n")
        self.process.stdin.flush()
        while not self.results.exists():  # the answer comes as a file (its stdout is vLLM's log's)
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.label} exited with {self.process.returncode}")
            time.sleep(0.05)
        rate = float(self.results.read_text())
        self.results.unlink()
        return rate

    def close(self) -> None:
        if self.load is not None:
            self.load.close()
        if self.label == "vllm_server":
            self.process.terminate()
        else:
            self.process.stdin.close()
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()


def throughput(args: argparse.Namespace, model_dir: str) -> dict[str, Any]:
    sides: list[Side] = []
    figures: dict[str, dict[int, float]] = {label: {} for label in args.sides}
    rounds: dict[str, dict[int, list[float]]] = {label: {} for label in args.sides}
    try:
        for label in args.sides:
            sides.append(Side(label, args, model_dir))
            print(f"{label} ready", file=sys.stderr, flush=True)
        if args.pin:  # the client with the frontends (the sides took this process's cores when they started)
            pin(os.getpid(), frontend_cores())
        by_label = {side.label: side for side in sides}
        for concurrent in args.concurrency:
            rotated_rounds(list(by_label), lambda label, c: by_label[label].measure(c), concurrent, args.repeats,
                           figures, rounds)
    finally:
        for side in sides:
            side.close()
    cpu = {side.label: {concurrent: [statistics.median(part) for part in zip(*per_round[1:])]
                        for concurrent, per_round in side.cpu.items()} for side in sides if side.cpu}
    return {"figures": figures, "rounds": rounds, "cpu": cpu}


def report(results: dict[str, Any], args: argparse.Namespace, parameters: int) -> None:
    import torch

    print(f"load average over the last 1/5/15 minutes: {' '.join(f'{x:.1f}' for x in os.getloadavg())} on "
          f"{os.cpu_count()} cores; {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC")
    print(f"model: Qwen2-style, hidden {args.hidden_size}, {args.layers} layers, head dim 64, "
          f"{parameters / 1e6:.1f}M parameters, float32, CPU; {args.tokens} tokens per request"
          f"{', logprobs asked' if args.logprobs else ''}"
          f"{f'; pinned: frontends and client on {CORES[:1]}, model on {CORES[1:]}' if args.pin else ''}; SDK over "
          f"{args.client}; {platform.machine()}, torch {torch.__version__}")
    figures = results.get("figures")
    if figures:
        labels = list(figures)
        ratios = [("vllm_engine", "vllm_server"), ("native", "vllm_engine"), ("native", "vllm_server"),
                  ("native", "raw")]
        ratios = [(a, b) for a, b in ratios if a in figures and b in figures]
        print("| concurrent | " + " | ".join(f"{label} tok/s" for label in labels) + " | "
              + " | ".join(f"{a} / {b}" for a, b in ratios) + " |")
        print("| --- " * (1 + len(labels) + len(ratios)) + "|")
        for concurrent in args.concurrency:
            cells = [f"{figures[label][concurrent]:.0f}" for label in labels]
            cells += [f"{figures[a][concurrent] / figures[b][concurrent]:.2f}x" for a, b in ratios]
            print(f"| {concurrent} | " + " | ".join(cells) + " |")
        if 32 in args.concurrency and {"vllm_engine", "vllm_server"} <= set(figures):
            ratio = figures["vllm_engine"][32] / figures["vllm_server"][32]
            print(f"target at 32: vllm_engine >= 0.9x vllm_server ({ratio:.2f}x: {'met' if ratio >= 0.9 else 'NOT met'})")
        cpu = results.get("cpu", {})
        if cpu:
            print("server CPU per generated token, ms (medians of the measured rounds): frontend process / its "
                  "child processes (vLLM's engine core; native runs its model in its frontend process)")
            print("| concurrent | " + " | ".join(cpu) + " |")
            print("| --- " * (1 + len(cpu)) + "|")
            for concurrent in args.concurrency:
                print(f"| {concurrent} | " + " | ".join(
                    f"{cpu[label][concurrent][0] * 1e3:.3f} / {cpu[label][concurrent][1] * 1e3:.3f}" for label in cpu)
                    + " |")
        for concurrent in args.concurrency:
            print(f"rounds at {concurrent} (tok/s, in the order run): " + "; ".join(
                f"{label} {' '.join(f'{v:.0f}' for v in results['rounds'][label][concurrent])}" for label in labels))
    if results.get("push"):
        print("| model | parameters | push alone | pause -> change -> resume | ... -> first token |")
        print("| --- | --- | --- | --- | --- |")
        for row in results["push"]:
            print(f"| {row['size']} | {row['parameters'] / 1e6:.1f}M | {row['push']:.2f} s | {row['to_resume']:.2f} s "
                  f"| {row['to_first_token']:.2f} s |")


def positive(text: str) -> int:
    """An argument that must be a whole number of at least 1 (every figure is a median of rounds)."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vllm-python", default=sys.executable, help="a Python with vLLM (for both vLLM sides)")
    parser.add_argument("--sides", nargs="+", choices=SIDES, default=list(SIDES))
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32, 128])
    parser.add_argument("--hidden-size", type=int, default=384)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--repeats", type=positive, default=3)
    parser.add_argument("--context", type=int, default=1024)
    parser.add_argument("--vllm-memory", type=float, default=0.1,
                        help="vLLM's gpu_memory_utilization; on CPU the share of RAM for its KV cache")
    parser.add_argument("--client", choices=("aiohttp", "httpx"), default="aiohttp")
    parser.add_argument("--push-sizes", nargs="*", choices=list(SIZES), default=[])
    parser.add_argument("--no-throughput", action="store_true")
    parser.add_argument("--logprobs", action="store_true",
                        help="every request asks for its tokens' logprobs (an RL rollout's request)")
    parser.add_argument("--pin", action="store_true",
                        help="the model on its own cores, frontends and client on the first (see the docstring)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--serve", choices=("native", "vllm_engine", "raw", "push"), help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)
    parser.add_argument("--ready-file", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        {"raw": raw, "push": push}.get(args.serve, serve)(args)
        return

    from localoai.testing import build_tiny_model

    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as model_dir:
        model, _ = build_tiny_model(model_dir, hidden_size=args.hidden_size, num_layers=args.layers,
                                    num_heads=args.hidden_size // 64, max_position_embeddings=args.context)
        parameters = sum(p.numel() for p in model.parameters())
        del model
        if not args.no_throughput:
            results.update(throughput(args, model_dir))
    if args.push_sizes:
        command = [args.vllm_python, str(Path(__file__).resolve()), "--serve", "push", "--repeats", str(args.repeats),
                   "--context", str(args.context), "--vllm-memory", str(args.vllm_memory),
                   "--push-sizes", *args.push_sizes]
        # check=False: a failed push run still leaves the throughput figures to report (its error is on stderr)
        output = subprocess.run(command, env=side_environment(), stdout=subprocess.PIPE, text=True, check=False).stdout
        results["push"] = [json.loads(line[5:]) for line in output.splitlines() if line.startswith("PUSH ")]
    report(results, args, parameters)
    if args.json:
        print(json.dumps(results))


if __name__ == "__main__":
    main()
