"""`GET /metrics`: Prometheus' text format, parsed by `prometheus_client`'s own parser, and the
counters moving as they should under real traffic (streamed, non-streamed, a 429, a pause)."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from localoai.testing import running_server, wait_until

KEY = "sekret"
PROMPT = "the weather in paris is"


@pytest.fixture(scope="module")
def served(tiny: tuple[Any, Any]) -> Iterator[Any]:
    model, tokenizer = tiny
    with running_server(model, tokenizer, name="tiny", api_key=KEY, reasoning_parser="none",
                        max_queued_requests=1) as server:
        yield server


def scrape(server: Any) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of `/metrics`, by name and labels."""
    reply = httpx.get(f"{server.url}/metrics", headers={"Authorization": f"Bearer {KEY}"}, timeout=30)
    assert reply.status_code == 200 and reply.headers["content-type"].startswith("text/plain")
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(reply.text) for sample in family.samples}


def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def requests_of(samples: dict[Any, float], endpoint: str, status: str, method: str = "POST") -> float:
    return value(samples, "localoai_requests_total", endpoint=endpoint, method=method, status=status)


def test_counters_move_with_streamed_and_non_streamed_requests(served: Any) -> None:
    client = served.client(max_retries=0)
    before = scrape(served)
    answer = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}],
                                            max_tokens=5, extra_body={"ignore_eos": True})
    streamed = list(client.completions.create(model="tiny", prompt=PROMPT, max_tokens=4, n=2, stream=True,
                                              stream_options={"include_usage": True}, extra_body={"ignore_eos": True}))
    assert streamed
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="tiny", messages=[], max_tokens=1)
    after = scrape(served)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("localoai_requests_total", endpoint="/v1/chat/completions", method="POST", status="200") == 1
    assert moved("localoai_requests_total", endpoint="/v1/chat/completions", method="POST", status="400") == 1
    assert moved("localoai_requests_total", endpoint="/v1/completions", method="POST", status="200") == 1
    assert moved("localoai_requests_total", endpoint="/metrics", method="GET", status="200") == 1
    prompt_tokens = answer.usage.prompt_tokens + len(served.served.encode(PROMPT))
    assert moved("localoai_prompt_tokens_total") == prompt_tokens
    assert moved("localoai_generation_tokens_total") == 5 + 2 * 4
    assert moved("localoai_generations_total", status="completed") == 2
    for histogram in ("localoai_time_to_first_token_seconds", "localoai_e2e_request_latency_seconds",
                      "localoai_inter_token_latency_seconds", "localoai_request_queue_time_seconds"):
        assert moved(f"{histogram}_count") == 2, histogram
        assert moved(f"{histogram}_sum") > 0, histogram
    assert moved("localoai_batch_rows_count") >= 4 + 3  # a decode step per token after the first
    assert value(after, "localoai_batch_rows_bucket", le="1.0") >= 1
    details = [usage.prompt_tokens_details for usage in (answer.usage, streamed[-1].usage)]
    cached = sum((detail.cached_tokens or 0) if detail is not None else 0 for detail in details)
    assert moved("localoai_prompt_tokens_cached_total") == cached
    assert value(after, "localoai_requests_running") == 0 and value(after, "localoai_requests_waiting") == 0
    served.served.recorder.flush()
    stats = served.store.stats()
    final = scrape(served)
    assert value(final, "localoai_store_entries") == stats["entries"] >= 2
    assert value(final, "localoai_store_bytes") == stats["bytes"] > 0
    assert value(final, "localoai_store_evictions_total") == stats["evicted"]
    assert value(final, "localoai_recorder_queue") == 0


def test_a_full_queue_and_a_pause_are_counted(served: Any) -> None:
    client = served.client(max_retries=0)
    engine = served.served.engine
    version = served.policy_version
    before = scrape(served)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        with served.pause("wait"):
            waiting = pool.submit(client.completions.create, model="tiny", prompt=PROMPT, max_tokens=2)
            wait_until(lambda: engine.stats()["waiting"] == 1)
            during = scrape(served)
            with pytest.raises(openai.RateLimitError):  # max_queued_requests=1
                client.completions.create(model="tiny", prompt=PROMPT, max_tokens=2)
        assert waiting.result().choices[0].finish_reason == "length"
    after = scrape(served)
    assert value(during, "localoai_paused") == 1 and value(after, "localoai_paused") == 0
    assert value(during, "localoai_requests_waiting") == 1
    assert value(after, "localoai_policy_version") == version + 1 == served.policy_version

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("localoai_pauses_total", mode="wait") == 1
    assert moved("localoai_pause_duration_seconds_count") == 1
    assert moved("localoai_queue_rejections_total") == 1
    assert requests_of(after, "/v1/completions", "429") - requests_of(before, "/v1/completions", "429") == 1


def test_tokens_made_by_older_weights_are_counted_stale(served: Any) -> None:
    client = served.client(max_retries=0)
    before = scrape(served)
    chunks = iter(client.completions.create(model="tiny", prompt=PROMPT, max_tokens=200, temperature=0, stream=True,
                                            extra_body={"ignore_eos": True}))
    next(chunks)
    next(chunks)
    with served.pause("keep"):
        pass
    with served.pause("keep"):
        pass
    assert sum(1 for _ in chunks) > 0
    after = scrape(served)
    served.served.recorder.flush()
    record = served.store.list(kind="text_completion", limit=1)[0]
    spans = record.completions[0]["policy_versions"]
    ends = [start for start, _ in spans[1:]] + [200]
    current = served.policy_version
    stale = sum(end - start for (start, version), end in zip(spans, ends) if version < current)
    assert stale >= 2  # at least the two tokens read before the first pause
    assert value(after, "localoai_stale_tokens_total") - value(before, "localoai_stale_tokens_total") == stale
    behind = current - spans[0][1]
    assert behind >= 1
    bucket = f"{float(behind)}"
    below = f"{float(behind - 1)}"
    assert value(after, "localoai_generation_versions_behind_bucket", le=bucket) - \
        value(before, "localoai_generation_versions_behind_bucket", le=bucket) == 1
    assert value(after, "localoai_generation_versions_behind_bucket", le=below) - \
        value(before, "localoai_generation_versions_behind_bucket", le=below) == 0


def test_behind_the_api_key_unless_public(served: Any, tiny: tuple[Any, Any]) -> None:
    assert httpx.get(f"{served.url}/metrics", timeout=30).status_code == 401
    model, tokenizer = tiny
    with running_server(model, tokenizer, name="tiny-public", api_key=KEY, public_metrics=True) as public:
        reply = httpx.get(f"{public.url}/metrics", timeout=30)
        assert reply.status_code == 200
        assert any(family.name == "localoai_requests" for family in text_string_to_metric_families(reply.text))
        assert httpx.get(f"{public.url}/v1/models", timeout=30).status_code == 401  # only /metrics is open


def test_each_server_has_its_own_registry(tiny: tuple[Any, Any]) -> None:
    model, tokenizer = tiny
    with running_server(model, tokenizer, name="tiny-a") as first, running_server(model, tokenizer, name="tiny-a",
                                                                                   port=first.port) as again:
        # Started again on the same port (a re-run notebook cell): no "Duplicated timeseries", counts anew.
        assert not first.running and again.running
        text = httpx.get(f"{again.url}/metrics", timeout=30).text
        samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
                   for family in text_string_to_metric_families(text) for s in family.samples}
        assert value(samples, "localoai_requests_total", endpoint="/health", method="GET", status="200") == 1
        assert value(samples, "localoai_generation_tokens_total") == 0


def test_prompt_tokens_from_the_prefix_cache_are_counted(served: Any) -> None:
    client = served.client(max_retries=0)
    messages = [{"role": "system", "content": " ".join(["the policy answers the question"] * 12)},
                {"role": "user", "content": "hello"}]
    client.chat.completions.create(model="tiny", messages=messages, max_tokens=1)
    before = scrape(served)
    again = client.chat.completions.create(model="tiny", messages=messages, max_tokens=1)
    after = scrape(served)
    cached = again.usage.prompt_tokens_details.cached_tokens
    assert cached > 0
    assert value(after, "localoai_prompt_tokens_cached_total") - value(before, "localoai_prompt_tokens_cached_total") \
        == cached
