"""A server's Prometheus metrics (`GET /metrics`), in a registry of its own.

One `CollectorRegistry` per server: several servers may run in one process, and re-running
`start()` in a notebook makes a new one instead of raising "Duplicated timeseries" in a global
registry. Counters and histograms are observed once per request when it ends (a generation's
timings and token counts) or once per engine step (batch rows), never per token; what the
engine, the store and the recorder hold is read when the metrics are scraped.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

CONTENT_TYPE = CONTENT_TYPE_LATEST

# Seconds; vLLM's buckets, which suit a CPU model and a GPU one alike.
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
                20.0, 40.0, 80.0, 160.0, 640.0, 2560.0)
ITL_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5,
               5.0, 7.5, 10.0, 20.0, 40.0, 80.0)
E2E_BUCKETS = (0.01, 0.05, 0.1, 0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0,
               120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0)
ROW_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
VERSION_BUCKETS = (0, 1, 2, 3, 4, 8, 16, 32)

Stats = Callable[[], dict[str, int]]


class ServingMetrics:
    """The metrics of one server. `engine_stats`, `store_stats`, `recorder_stats`, `versions` are
    read at scrape time (`engine_stats` with `waiting` / `running` / `rows`; `store_stats` with
    `entries` / `bytes` / `evicted`; `recorder_stats` with `pending` / `failed`; `versions`: the
    policy version and whether the engine is paused)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        registry = self.registry
        self.requests = Counter("localoai_requests", "HTTP requests answered, by route, method and status.",
                                ["endpoint", "method", "status"], registry=registry)
        self.prompt_tokens = Counter("localoai_prompt_tokens", "Prompt tokens of finished generations.",
                                     registry=registry)
        self.generation_tokens = Counter("localoai_generation_tokens", "Tokens generated (every sample).",
                                         registry=registry)
        self.cached_tokens = Counter(
            "localoai_prompt_tokens_cached", "Prompt tokens whose KV the prefix cache gave instead of a "
            "prefill (usage's cached_tokens).", registry=registry)
        self.generations = Counter("localoai_generations", "Generations that ended, by how they ended.",
                                   ["status"], registry=registry)
        self.queue_time = Histogram("localoai_request_queue_time_seconds", "Time from submission to admission.",
                                    buckets=E2E_BUCKETS, registry=registry)
        self.ttft = Histogram("localoai_time_to_first_token_seconds", "Time from submission to the first token.",
                              buckets=TTFT_BUCKETS, registry=registry)
        self.itl = Histogram(
            "localoai_inter_token_latency_seconds",
            "Mean time between a request's consecutive tokens (one observation per request).",
            buckets=ITL_BUCKETS, registry=registry)
        self.e2e = Histogram("localoai_e2e_request_latency_seconds", "Time from submission to the last token.",
                             buckets=E2E_BUCKETS, registry=registry)
        self.batch_rows = Histogram("localoai_batch_rows", "Rows (samples) decoded together, one observation "
                                    "per engine step.", buckets=ROW_BUCKETS, registry=registry)
        self.queue_rejections = Counter("localoai_queue_rejections", "Requests refused with a 429: the "
                                        "engine's queue was full.", registry=registry)
        self.pauses = Counter("localoai_pauses", "Pauses for weight updates, by mode.", ["mode"],
                              registry=registry)
        self.pause_duration = Histogram("localoai_pause_duration_seconds", "Time from pause() to resume().",
                                        buckets=E2E_BUCKETS, registry=registry)
        self.stale_tokens = Counter(
            "localoai_stale_tokens", "Tokens of finished generations made by weights older than the policy "
            "version current when the generation ended.", registry=registry)
        self.versions_behind = Histogram(
            "localoai_generation_versions_behind", "Per finished generation: how many policy versions its "
            "oldest token is behind the current one.", buckets=VERSION_BUCKETS, registry=registry)
        self._paused_at: float | None = None

    def bind(self, *, engine_stats: Stats, store_stats: Stats, recorder_stats: Stats, versions: Stats) -> None:
        """Read these at scrape time (see the class docstring)."""
        self.registry.register(_Snapshot(engine_stats, store_stats, recorder_stats, versions))

    def exposition(self) -> bytes:
        """The metrics in Prometheus' text format (reads the store: call it off the event loop)."""
        return generate_latest(self.registry)

    # --- observations ------------------------------------------------------------------------
    def request(self, endpoint: str, method: str, status: int) -> None:
        self.requests.labels(endpoint, method, str(status)).inc()

    def generation(self, *, status: str, prompt_tokens: int, samples: Sequence[Sequence[tuple[int, int]]],
                   timings: dict[str, float], current_version: int, cached_tokens: int = 0) -> None:
        """One generation ended. `samples`: per sample, its `(tokens, policy_version)` spans."""
        self.generations.labels(status).inc()
        self.prompt_tokens.inc(prompt_tokens)
        if cached_tokens:
            self.cached_tokens.inc(cached_tokens)
        counts = [sum(tokens for tokens, _ in spans) for spans in samples]
        generated = sum(counts)
        self.generation_tokens.inc(generated)
        stale = sum(tokens for spans in samples for tokens, version in spans if version < current_version)
        if stale:
            self.stale_tokens.inc(stale)
        versions = [version for spans in samples for tokens, version in spans if tokens]
        if versions:
            self.versions_behind.observe(max(current_version - min(versions), 0))
        if "queued" in timings:
            self.queue_time.observe(timings["queued"])
        first, total = timings.get("first_token"), timings.get("total")
        if first is not None:
            self.ttft.observe(first)
            longest = max(counts, default=0)
            if total is not None and longest > 1:
                self.itl.observe(max(total - first, 0.0) / (longest - 1))
        if total is not None and generated:
            self.e2e.observe(total)

    def step(self, rows: int) -> None:
        self.batch_rows.observe(rows)

    def paused(self, mode: str) -> None:
        self.pauses.labels(mode).inc()
        self._paused_at = time.perf_counter()

    def resumed(self) -> None:
        if self._paused_at is not None:
            self.pause_duration.observe(time.perf_counter() - self._paused_at)
            self._paused_at = None

    def queue_rejected(self) -> None:
        self.queue_rejections.inc()


class _Snapshot(Collector):
    """What the engine, the store and the recorder hold at scrape time."""

    def __init__(self, engine: Stats, store: Stats, recorder: Stats, versions: Stats) -> None:
        self._engine, self._store, self._recorder, self._versions = engine, store, recorder, versions

    def describe(self) -> Iterable[Metric]:
        return []  # gathered at scrape time only (their names cannot clash: this registry is ours)

    def collect(self) -> Iterable[Metric]:
        engine, versions = self._engine(), self._versions()
        yield GaugeMetricFamily("localoai_requests_running", "Requests being decoded.", engine["running"])
        yield GaugeMetricFamily("localoai_requests_waiting", "Requests queued for the engine.", engine["waiting"])
        yield GaugeMetricFamily("localoai_batch_rows_running", "Rows (samples) in the running batch.",
                                engine["rows"])
        yield GaugeMetricFamily("localoai_policy_version", "The weights' version.", versions["policy_version"])
        yield GaugeMetricFamily("localoai_paused", "1 while generation is paused for a weight update.",
                                versions["paused"])
        store = self._store()
        yield GaugeMetricFamily("localoai_store_entries", "Records in the store.", store["entries"])
        yield GaugeMetricFamily("localoai_store_bytes", "Bytes of the stored records' JSON.", store["bytes"])
        yield CounterMetricFamily("localoai_store_evictions", "Records evicted from the store over its life.",
                                  store["evicted"])
        recorder = self._recorder()
        yield GaugeMetricFamily("localoai_recorder_queue", "Records waiting to be written to the store.",
                                recorder["pending"])
        yield CounterMetricFamily("localoai_recorder_failures", "Records that could not be written.",
                                  recorder["failed"])
