"""Command line: `localoai demo` and `localoai serve PATH`.

`serve` checks what it can before loading a model (the directory, the port), so a typo costs a
second, not a model load, and every error a user can fix is one line (`localoai: error: ...`,
exit status 2), never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

DTYPES = ("auto", "float32", "bfloat16", "float16")


class CommandError(Exception):
    """A problem the user can fix, printed as one line."""


def pick_device(device: str) -> str:
    """`auto`: the first CUDA GPU when there is one, else Apple's MPS, else the CPU."""
    if device != "auto":
        return device
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def pick_dtype(dtype: str, device: str) -> Any:
    """`auto`: bfloat16 on a GPU that supports it (float16 on other GPUs), float32 on the CPU."""
    import torch

    if dtype != "auto":
        return getattr(torch, dtype)
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float16 if device == "mps" else torch.float32


def check_model_directory(path: str) -> Path:
    directory = Path(path).expanduser()
    if not directory.exists():
        raise CommandError(f"{path}: no such directory (serve takes a local model directory; no model hub is used)")
    if not directory.is_dir():
        raise CommandError(f"{path}: not a directory (serve takes a local model directory)")
    if not (directory / "config.json").is_file():
        raise CommandError(f"{path}: not a transformers model directory (no config.json)")
    return directory


def check_port_free(host: str, port: int | None) -> None:
    """Fail before the model loads when the port is taken (`start` binds it again, for real, after)."""
    if port is None or port == 0:
        return
    from localoai.server.sockets import bind

    try:
        bind(host, port).close()
    except OSError as exc:
        raise CommandError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def _serve(args: argparse.Namespace) -> int:
    from localoai.server import start

    directory = check_model_directory(args.path)
    check_port_free(args.host, args.port)
    device = pick_device(args.device)
    dtype = pick_dtype(args.dtype, device)
    model, tokenizer = _load(directory, device, dtype)
    limits = {name: getattr(args, name) for name in ("max_batch_size", "max_queued_requests")
              if getattr(args, name) is not None}  # else start()'s own defaults
    try:
        server = start(model, tokenizer, host=args.host, port=args.port, api_key=args.api_key,
                       name=args.name or directory.resolve().name, store=args.store, tool_parser=args.tool_parser,
                       reasoning_parser=args.reasoning_parser, token_ledger=not args.no_token_ledger,
                       prefix_cache=True if args.prefix_cache_bytes is None else args.prefix_cache_bytes, **limits)
    except (OSError, ValueError) as exc:
        raise CommandError(str(exc)) from None
    print(f"localoai serving {server.model!r} on {device} ({str(dtype).removeprefix('torch.')}) at {server.base_url}\n"
          f"  inspector: {server.url}/ui/\n  store: {server.store_location}\n  Ctrl+C to stop", flush=True)
    _wait_for_interrupt()
    server.stop()
    return 0


def _load(directory: Path, device: str, dtype: Any) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        model = AutoModelForCausalLM.from_pretrained(directory, dtype=dtype).to(device)
        tokenizer = AutoTokenizer.from_pretrained(directory)
    except (OSError, ValueError, KeyError) as exc:  # no weights, an unknown architecture, a broken config
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CommandError(f"{directory}: could not load a model: {first}") from None
    return model, tokenizer


def _wait_for_interrupt() -> None:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass


def _demo(args: argparse.Namespace) -> int:
    from localoai.demo import run_demo

    run_demo(port=args.port, keep_running=args.keep_running)
    if args.keep_running:
        _wait_for_interrupt()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    from localoai import __version__

    parser = argparse.ArgumentParser(prog="localoai", description="Serve a transformers model over the OpenAI API.")
    parser.add_argument("--version", action="version", version=f"localoai {__version__}")
    # Accepted before or after the subcommand (`localoai serve PATH --log-level info`).
    log_level = argparse.ArgumentParser(add_help=False)
    log_level.add_argument("--log-level", default=argparse.SUPPRESS,
                           help="Python logging level: debug, info (one line per request), warning (default)")
    parser.add_argument("--log-level", default="WARNING", help=argparse.SUPPRESS)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", parents=[log_level], help="serve a local model directory over the OpenAI API")
    serve.add_argument("path", help="a local directory holding a transformers model and its tokenizer")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=None, help="default: 8000 or the next free port")
    serve.add_argument("--api-key", default=None, help="require `Authorization: Bearer KEY` on every route but /health")
    serve.add_argument("--name", default=None, help="the model id clients send (default: the directory name)")
    serve.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, mps (default auto: the GPU when there is one)")
    serve.add_argument("--dtype", default="auto", choices=DTYPES,
                       help="weights' dtype (default auto: bfloat16 on a GPU, float32 on the CPU)")
    serve.add_argument("--store", default=None,
                       help="SQLite file keeping every generation, or ':memory:' "
                            "(default: a new localoai-store/run-<time>-<id>.sqlite3 per start)")
    serve.add_argument("--tool-parser", default=None, help="tool-call format (hermes, llama3_json, ...; 'none')"
                                                            " (default: chosen from the chat template)")
    serve.add_argument("--reasoning-parser", default=None, help="reasoning format (qwen3, deepseek_r1, harmony; "
                                                                "'none') (default: chosen from the chat template)")
    serve.add_argument("--max-batch-size", type=int, default=None, help="rows decoded together (default: start()'s)")
    serve.add_argument("--max-queued-requests", type=int, default=None,
                       help="requests waiting beyond this get a 429 (default: start()'s)")
    serve.add_argument("--no-token-ledger", action="store_true", help="do not splice earlier turns' exact tokens")
    serve.add_argument("--prefix-cache-bytes", type=int, default=None,
                       help="byte budget of the prefix cache (default: sized to the device; 0 turns it off)")
    serve.set_defaults(run=_serve)

    demo = commands.add_parser("demo", parents=[log_level],
                               help="build a tiny model locally, serve it and drive it with the openai SDK")
    demo.add_argument("--port", type=int, default=None)
    demo.add_argument("--keep-running", action="store_true", help="keep serving after the demo until Ctrl+C")
    demo.set_defaults(run=_demo)

    args = parser.parse_args(argv)
    level = getattr(logging, str(args.log_level).upper(), None)
    if not isinstance(level, int):
        parser.error(f"unknown log level {args.log_level!r}")
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return int(args.run(args))
    except CommandError as exc:
        print(f"localoai: error: {exc}", file=sys.stderr)
        return 2
