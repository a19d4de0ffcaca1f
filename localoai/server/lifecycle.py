"""`localoai.start(model)`: serve a model in this process, on a background thread.

Hypercorn runs the Quart app on a daemon thread with its own event loop, so the notebook's
main thread and loop stay free (a cell may call the server with the synchronous `openai`
client) and a `KeyboardInterrupt` in the notebook does not reach it. Servers are kept in a
registry by port: starting again on the same port (re-running a cell) stops the old one
first. Shutdown is triggered on the server's own loop, never from a foreign thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import logging
import socket
import threading
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from localoai.engine.interface import DEFAULT_MAX_BATCH_SIZE, DEFAULT_MAX_QUEUED_REQUESTS, GenerationEngine, PauseMode
from localoai.handlers.responses.hosted_tools import HostedTools
from localoai.server import registry
from localoai.server.heap import heap_freeze
from localoai.server.sockets import (
    DEFAULT_MAX_CONNECTIONS,
    CappedListener,
    bind,
    bind_first_free,
    connection_cap,
    raise_descriptor_limit,
)

if TYPE_CHECKING:
    import openai
    from quart import Quart

    from localoai.episodes.handles import Episode, Group
    from localoai.episodes.trajectory import Trajectory
    from localoai.served import ServedModel
    from localoai.store import Store

logger = logging.getLogger("localoai.server")

START_TIMEOUT = 30.0




class Server:
    """A running server. Use `url`/`base_url`, `client()`, and `stop()` (or a `with` block)."""

    def __init__(self, served: ServedModel, app: Quart, sock: socket.socket, *, api_key: str | None,
                 gc_freeze: bool = False, max_connections: int = DEFAULT_MAX_CONNECTIONS) -> None:
        self.served = served
        self.listener = CappedListener(sock, connection_cap(max_connections, raise_descriptor_limit()))
        """The socket hypercorn accepts on: `listener.open` connections now, `listener.refused` so far."""
        self._gc_freeze = gc_freeze
        self._holds_freeze = False
        self.app = app
        self.api_key = api_key
        self._socket = sock
        host, port = sock.getsockname()[:2]
        self.host: str = host
        self.port: int = port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._shutdown: asyncio.Event | None = None
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._serve, name=f"localoai-server-{port}", daemon=True)
        self._stopped = False

    # --- addresses and clients -------------------------------------------------------
    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    @property
    def model(self) -> str:
        """The model id clients send as `model`."""
        return self.served.name

    @property
    def store(self) -> Store:
        """Every generation this server made, with its trace (see `localoai.store.Store`)."""
        return self.served.store

    @property
    def running(self) -> bool:
        return self._thread.is_alive() and not self._stopped

    def client(self, **kwargs: Any) -> openai.OpenAI:
        import openai

        return openai.OpenAI(base_url=self.base_url, api_key=self.api_key or "localoai", **kwargs)

    def async_client(self, **kwargs: Any) -> openai.AsyncOpenAI:
        import openai

        return openai.AsyncOpenAI(base_url=self.base_url, api_key=self.api_key or "localoai", **kwargs)

    # --- weight updates while serving -------------------------------------------------
    @property
    def policy_version(self) -> int:
        """The weights' version: every token is tagged with it, `system_fingerprint` shows it.
        Leaving `pause()` bumps it by one; a trainer may also set it."""
        return self.served.policy_version

    @policy_version.setter
    def policy_version(self, version: int) -> None:
        self.served.policy_version = version

    @contextlib.contextmanager
    def pause(
        self, mode: PauseMode = "abort", *, bump_version: bool = True, timeout: float | None = None
    ) -> Iterator[Server]:
        """Stop generating at a step boundary so the model's weights can change, then resume.

        Inside the block no forward pass runs and the model is back in the mode it was in (train
        mode for a policy in training), so an optimizer step may run on the very model object.
        `keep`: running requests freeze and continue on the new weights (their KV caches are
        recomputed); `wait`: running requests finish first; `abort`: running and queued requests
        end with their partial output (finish reason `abort`). Requests arriving meanwhile wait.
        Leaving the block bumps `policy_version` by one unless `bump_version=False`.
        `timeout`: seconds to wait for the pause to take effect (`TimeoutError` past it).
        """
        self.served.engine.pause(mode, timeout=timeout)
        try:
            yield self
        finally:
            self.served.engine.resume(bump_version=bump_version)

    @property
    def paused(self) -> bool:
        return self.served.engine.paused

    # --- episodes and trajectories (see localoai.episodes) ------------------------------
    def episode(self, group: str | Group | None = None, *, id: str | None = None, token_ledger: bool | None = None,
                **metadata: Any) -> Episode:
        """A new episode: `ep.base_url` / `ep.client()` trace an agent's requests into it; `ep.reward = r`.
        `group`: a group id or `Group` (GRPO); `token_ledger`: this episode's choice (default: the server's)."""
        from localoai.episodes.handles import Episode, Group

        if isinstance(group, Group):
            return group.episode(id, **metadata)
        return Episode(self, id, group, token_ledger, **metadata)

    def group(self, n: int = 0, *, id: str | None = None, token_ledger: bool | None = None, **metadata: Any) -> Group:
        """A GRPO group with `n` episodes made up front (`for ep in group`); `group.episode()` adds one."""
        from localoai.episodes.handles import Group

        return Group(self, n, id, token_ledger, **metadata)

    def trajectories(self, group: str | None = None) -> list[Trajectory]:
        """Every episode's trajectory (or `group`'s), once the records queued so far are written."""
        from localoai.episodes.trajectory import trajectories

        self.flush_records()
        return trajectories(self.store, group)

    # The session episodes use (`localoai.episodes.handles.EpisodeSession`).
    def open_episode(self, episode_id: str, group: str | None, token_ledger: bool | None) -> None:
        self.served.episodes.open(episode_id, group, token_ledger)

    def close_episode(self, episode_id: str) -> None:
        self.served.episodes.close(episode_id)

    def flush_records(self) -> None:
        """Wait until the records queued so far are in the store."""
        self.served.recorder.flush()

    # --- lifecycle -------------------------------------------------------------------
    def _start(self, timeout: float = START_TIMEOUT) -> None:
        if self._gc_freeze:
            heap_freeze.hold()
            self._holds_freeze = True
        self.served.engine.start()
        self._thread.start()
        if not self._ready.wait(timeout) or self._failure is not None:
            failure = self._failure
            self.stop()
            raise RuntimeError(f"localoai server failed to start on {self.url}") from failure
        self._check_answering(timeout)

    def _serve(self) -> None:
        from hypercorn.asyncio import serve

        from localoai.server.hypercorn_config import hypercorn_config

        config = hypercorn_config(self.listener)

        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._shutdown = asyncio.Event()
            self.app.before_serving(self._mark_ready)
            await serve(self.app, config, shutdown_trigger=self._shutdown.wait)

        try:
            asyncio.run(main())
        except BaseException as exc:  # surfaced in the caller's thread by _start
            self._failure = exc
            logger.exception("server thread ended with an error")
        finally:
            self._ready.set()

    async def _mark_ready(self) -> None:
        self._ready.set()

    def _check_answering(self, timeout: float) -> None:
        with urllib.request.urlopen(f"{self.url}/health", timeout=timeout) as reply:
            if reply.status != 200:
                raise RuntimeError(f"localoai server on {self.url} answered {reply.status} to /health")

    def stop(self, timeout: float = 10.0) -> None:
        """Stop serving and release the port and threads. Safe to call more than once."""
        if self._stopped:
            return
        self._stopped = True
        if self._loop is not None and self._shutdown is not None and not self._loop.is_closed():
            from localoai.app.http import open_streams

            try:
                # Streams in flight first get an error event and their end, then hypercorn shuts down.
                self._loop.call_soon_threadsafe(open_streams(self.app).stop_all)
                self._loop.call_soon_threadsafe(self._shutdown.set)
            except RuntimeError:
                pass  # the loop closed in between
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout)
        self.served.close()
        self._socket.close()
        self.listener.close()
        if self._holds_freeze:
            self._holds_freeze = False
            heap_freeze.release()
        registry.forget(self)

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def store_location(self) -> str:
        """Where this server keeps its generations: the SQLite file, `:memory:`, or the store's repr."""
        from localoai.store import store_location

        return store_location(self.store)

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<localoai.Server {self.model!r} at {self.base_url}, store {self.store_location} ({state})>"

    def inspect(self, *, widget: bool = False, proxy: bool | str | None = None, page_size: int = 25,
                **options: Any) -> Any:
        """The inspector over this server's generations: the page the server serves at `/ui/`, shown
        as an iframe when it is a cell's last expression (`.open()` opens it in a browser, `.show(id)`
        opens one record). It stays interactive while a cell runs, since the server answers it, not
        the kernel. `proxy=True` loads it through `jupyter-server-proxy` (remote kernels);
        `widget=True` returns the ipywidgets `Inspector` instead (`options` go to it), which the
        kernel drives. Needs `ipywidgets` only for `widget=True`."""
        if widget:
            from localoai.widgets import Inspector

            return Inspector(self.store, tokenizer=self.served.tokenizer, title=f"localoai · {self.model}",
                             page_size=page_size, **options)
        if options:
            raise TypeError(f"options {sorted(options)} apply only to the widget (widget=True)")
        from localoai.widgets.page import InspectorPage, page_url

        return InspectorPage(page_url(self.url, self.port, proxy), api_key=self.api_key, page_size=page_size)

    def _repr_html_(self) -> str:
        state = "running" if self.running else "stopped"
        return (
            f"<div><b>localoai</b> serving <code>{html.escape(self.model)}</code> "
            f"({state}, policy version {self.served.policy_version})<br>"
            f"base_url: <code>{html.escape(self.base_url)}</code><br>"
            f"store: <code>{html.escape(self.store_location)}</code></div>"
        )


def start(
    model: Any,
    tokenizer: Any = None,
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    api_key: str | None = None,
    name: str | None = None,
    max_body_bytes: int | None = None,
    store: Any = None,
    tool_parser: str | None = None,
    reasoning_parser: str | None = None,
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
    max_queued_requests: int = DEFAULT_MAX_QUEUED_REQUESTS,
    token_ledger: bool = True,
    gc_freeze: bool = True,
    public_metrics: bool = False,
    embedding_pooling: str = "last",
    embedding_normalize: bool = True,
    hosted_tools: Mapping[str, Callable[..., str]] | None = None,
    prefix_cache: bool | int = True,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
    allow_client_chat_template: bool = False,
    engine: GenerationEngine | str | None = None,
    engine_options: Mapping[str, Any] | None = None,
) -> Server:
    """Serve `model` (a loaded `transformers` model, PEFT-wrapped or not, or a local model directory)
    over the OpenAI API on a background thread, and return once it answers.

    `port=None` takes 8000 or the next free port (re-using the port of a server this process
    already runs for the same model name, which is replaced); `port=0` takes any free port; a
    given port held by a server of this process is taken over from it.

    Every generation is stored with its token-exact trace in `store`: a SQLite path, `":memory:"`,
    a `localoai.store.Store`, or None for a new file per start under `localoai-store/` in the
    working directory (`localoai.store.run_path`): runs never read each other's records by default.
    `tool_parser` names the model's tool-call format (`"hermes"`), `"none"` returns tool-call markup
    as plain text; None chooses from the chat template. `reasoning_parser` likewise names how the
    model writes its reasoning (`"qwen3"`, `"deepseek_r1"`, `"harmony"`), `"none"` leaves it in the
    content; None chooses from the chat template.
    `max_batch_size`: rows (samples) decoded together in one forward pass (1: one request at a
    time). `max_queued_requests`: requests waiting beyond it get a 429 with `Retry-After`.
    `token_ledger`: inside episodes, splice the earlier turns' exact token ids into a prompt that
    extends them (see `localoai.episodes.ledger`); an episode may choose otherwise.
    `gc_freeze`: `gc.freeze()` the objects alive at start (the model, torch, transformers) while
    the server runs, so that Python's full garbage collections, which stop every thread, the
    engine's included, stay short; thawed at `stop()`. False leaves the collector alone.
    `public_metrics`: serve `GET /metrics` (Prometheus) without `api_key`; by default it needs it.
    `embedding_pooling`: how `/v1/embeddings` pools the last hidden states, `"last"` (the last
    token's) or `"mean"`; `embedding_normalize`: scale embeddings to unit length.
    `hosted_tools`: Python implementations of OpenAI-hosted tools, by family (`{"web_search": fn}`,
    `fn(query=...) -> str`), run server-side when the model calls them; a hosted tool without one is
    not offered to the model (see `localoai.handlers.responses.hosted_tools`).
    `prefix_cache`: reuse the KV of prompt prefixes read before by the same weights (an episode's
    earlier turns, a shared system prompt or tool list; see `localoai.engine.prefix_cache`): True
    sizes its byte budget to the device, an int is the budget in bytes, False (or 0) reads every
    prompt in full. Models whose KV cache is not a plain per-layer one never use it.
    `max_connections`: open connections beyond it are answered a 503 and closed; it is also kept
    under the open-file limit (whose soft value is raised towards the hard one first).
    `allow_client_chat_template`: let requests replace the chat template through
    `chat_template_kwargs.chat_template` (refused by default: a template is code the server runs).
    `engine`: a `localoai.engine.interface.GenerationEngine` to generate with instead of the local one
    (tests use `localoai.testing.ScriptedEngine`); the batching and prefix-cache options are then its own.
    Or an engine's name: `"local"` (the default) or `"vllm"`: vLLM's `AsyncLLM` with its own copy of the
    weights, pushed from `model` when they change under `pause()` (README, "vLLM engine"); `engine_options`
    are then vLLM's engine arguments (`gpu_memory_utilization`, `max_model_len`, `tensor_parallel_size`, ...).
    """
    from localoai.app import DEFAULT_MAX_BODY_BYTES, create_app
    from localoai.engine.interface import POOLINGS
    from localoai.served import ServedModel, load_model

    if embedding_pooling not in POOLINGS:
        raise ValueError(f"embedding_pooling must be one of {POOLINGS}, not {embedding_pooling!r}")
    model, tokenizer = load_model(model, tokenizer)
    served = ServedModel.create(model, tokenizer, name, store, tool_parser, reasoning_parser,
                                max_batch_size=max_batch_size, max_queued_requests=max_queued_requests,
                                prefix_cache=prefix_cache, engine=engine, engine_options=engine_options)
    served.episodes.enabled = token_ledger
    served.embedding_pooling = embedding_pooling  # type: ignore[assignment]  # checked above
    served.embedding_normalize = embedding_normalize
    served.hosted_tools = HostedTools(dict(hosted_tools or {}))
    served.allow_client_chat_template = allow_client_chat_template
    from localoai.handlers.responses.stored import close_orphans

    if orphans := close_orphans(served.store):
        logger.warning("closed %d background responses left in_progress by a server that stopped first", orphans)
    if host not in ("127.0.0.1", "localhost", "::1") and not api_key:
        logger.warning("serving on %s without an api_key: anyone who can reach it can use the model", host)
    registry.stop_previous(port, served.name)
    sock = bind_first_free(host) if port is None else bind(host, port)
    app = create_app(served, api_key=api_key, max_body_bytes=max_body_bytes or DEFAULT_MAX_BODY_BYTES,
                     public_metrics=public_metrics)
    server = Server(served, app, sock, api_key=api_key, gc_freeze=gc_freeze, max_connections=max_connections)
    server._start()
    registry.add(server)
    logger.info("serving %r at %s (inspector: %s/ui/); storing generations in %s", server.model, server.base_url,
                server.url, server.store_location)
    return server
