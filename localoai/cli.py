"""Command line: `localoai demo` and `localoai serve PATH`."""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from collections.abc import Sequence


def _serve(args: argparse.Namespace) -> int:
    from localoai.server import start

    server = start(args.path, host=args.host, port=args.port, api_key=args.api_key, name=args.name, store=args.store,
                   prefix_cache=True if args.prefix_cache_bytes is None else args.prefix_cache_bytes)
    print(f"localoai serving {server.model!r} at {server.base_url} (Ctrl+C to stop)", flush=True)
    _wait_for_interrupt()
    server.stop()
    return 0


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
    parser = argparse.ArgumentParser(prog="localoai", description=__doc__)
    parser.add_argument("--log-level", default="WARNING", help="Python logging level (default: WARNING)")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="serve a local model directory over the OpenAI API")
    serve.add_argument("path", help="a local directory holding a transformers model and its tokenizer")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=None, help="default: 8000 or the next free port")
    serve.add_argument("--api-key", default=None, help="require `Authorization: Bearer KEY` on every route but /health")
    serve.add_argument("--name", default=None, help="the model id clients send (default: the directory name)")
    serve.add_argument("--store", default=None,
                       help="SQLite file keeping every generation (default: localoai-store/store.sqlite3; ':memory:')")
    serve.add_argument("--prefix-cache-bytes", type=int, default=None,
                       help="byte budget of the prefix cache (default: sized to the device; 0 turns it off)")
    serve.set_defaults(run=_serve)

    demo = commands.add_parser("demo", help="build a tiny model locally, serve it and drive it with the openai SDK")
    demo.add_argument("--port", type=int, default=None)
    demo.add_argument("--keep-running", action="store_true", help="keep serving after the demo until Ctrl+C")
    demo.set_defaults(run=_demo)

    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    return int(args.run(args))
