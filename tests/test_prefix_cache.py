"""The prefix cache (issue 14): reused prompt KV gives the logits a full read gives, batched and
alone; `cached_tokens` is exact in usage and trace; a weight update under `pause()` makes the next
turn a miss; eviction under a small budget keeps results right; mixed hits and misses run together."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from typing import Any

import openai
import pytest
import torch

from localoai.engine.backend import TransformersBackend
from localoai.engine.prefix_cache import BLOCK_TOKENS, PrefixCache
from localoai.testing import build_tiny_model, running_server

BLOCK_BYTES = 2 * 2 * 2 * BLOCK_TOKENS * 16 * 4  # tiny model: 2 layers x (K, V) x 2 kv heads x 16 dims, float32


@pytest.fixture(scope="module")
def model() -> tuple[Any, Any]:
    return build_tiny_model(initializer_range=0.2)


@pytest.fixture(scope="module")
def server(model: tuple[Any, Any]) -> Iterator[Any]:
    with running_server(*model, name="tiny") as running:
        yield running


def tokens(count: int, seed: int) -> list[int]:
    rng = random.Random(seed)
    return [rng.randrange(10, 900) for _ in range(count)]


def complete(client: openai.OpenAI, prompt: list[int], max_tokens: int, n: int = 1, seed: int = 1) -> Any:
    return client.completions.create(model="tiny", prompt=prompt, max_tokens=max_tokens, n=n, seed=seed,
                                     logprobs=1, extra_body={"return_token_ids": True, "ignore_eos": True})


def reference_logprobs(model: Any, prompt: list[int], completion: list[int]) -> list[float]:
    """The logprob of each completion token, from one full forward pass without any cache."""
    with torch.inference_mode():
        logits = model(input_ids=torch.tensor([prompt + completion])).logits[0].float()
    picked = torch.log_softmax(logits[len(prompt) - 1:-1], dim=-1)
    return picked.gather(-1, torch.tensor(completion).unsqueeze(-1)).squeeze(-1).tolist()


def assert_matches_full_read(model: Any, prompt: list[int], choice: Any) -> None:
    completion = list(choice.model_extra["token_ids"])
    assert choice.logprobs.token_logprobs == pytest.approx(reference_logprobs(model, prompt, completion), abs=1e-4)


# --- the backend: cached prefill against a full read ----------------------------------------------


def test_cached_prefill_agrees_with_a_full_read_alone_and_batched(model: tuple[Any, Any]) -> None:
    backend = TransformersBackend(model[0])
    shared = tokens(70, seed=1)
    prompts = [shared[:40], shared + [7, 8, 9], shared[:33] + tokens(9, seed=2), tokens(25, seed=3), shared[:56],
               tokens(60, seed=4)]
    samples = [1, 2, 1, 1, 3, 2]
    cache = PrefixCache(1 << 30)
    with backend.generation_mode():
        cache.insert(shared, *backend.row_kv(backend.prefill(shared, 1).state, 0))
        prefixes = [cache.lookup(prompt) for prompt in prompts]
        assert [p.length if p else 0 for p in prefixes] == [32, 64, 32, 0, 48, 0]
        # Batched: with a miss, unequal prefixes and suffixes; unequal prefixes, equal suffixes; a miss
        # longer than any hit's prefix and suffix (its prompt the whole width). Alone.
        for group in ([0, 1, 2, 3], [0, 4], [2, 5], [1]):
            full = backend.prefill_many([prompts[i] for i in group], [samples[i] for i in group])
            cached = backend.prefill_cached([prompts[i] for i in group], [samples[i] for i in group],
                                            [prefixes[i] for i in group])
            assert cached.state.lengths == full.state.lengths
            torch.testing.assert_close(cached.next_logits, full.next_logits, atol=1e-4, rtol=1e-4)
            fed = torch.arange(5, 5 + len(full.state.lengths))
            for _ in range(3):  # and decoding on from either state agrees
                torch.testing.assert_close(backend.decode(cached.state, fed), backend.decode(full.state, fed),
                                           atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_in_place_decode_through_joins_drops_and_regrowth_agrees_with_full_reads(model: tuple[Any, Any],
                                                                                 attention: str) -> None:
    # Decode writes each step into spare columns (GrowingLayer); joins, drops of a run of rows (a
    # view) or of scattered rows (a copy), and running out of room must leave every row's logits
    # those of a full read of its tokens. The decode mask is kept across steps (4D under SDPA, 2D
    # under other attentions) and must follow every change of rows.
    model[0].set_attn_implementation(attention)
    try:
        _decode_through_joins_drops_and_regrowth(model)
    finally:
        model[0].set_attn_implementation("sdpa")


def _decode_through_joins_drops_and_regrowth(model: tuple[Any, Any]) -> None:
    backend = TransformersBackend(model[0])
    rows = [tokens(length, seed=60 + i) for i, length in enumerate((9, 30, 17, 4, 22))]
    with backend.generation_mode():
        state = backend.prefill_many(rows[:3], [1, 1, 1]).state
        state = backend.join(state, backend.prefill_many(rows[3:], [1, 1]).state)

        def step(count: int) -> None:
            for _ in range(count):
                fed = [random.Random(len(row)).randrange(10, 900) for row in rows]
                logits = backend.decode(state, torch.tensor(fed))
                for row, token in zip(rows, fed):
                    row.append(token)
            for row, got in zip(rows, logits):
                with torch.inference_mode():
                    torch.testing.assert_close(got, model[0](input_ids=torch.tensor([row])).logits[0, -1],
                                               atol=1e-4, rtol=1e-4)

        step(3)
        state = backend.keep(state, [0, 2, 3, 4])  # scattered rows: copied
        del rows[1]
        step(2)
        state = backend.keep(state, [1, 2, 3])  # a run of rows, the longest gone: a view, columns trimmed
        del rows[0]
        step(70)  # past the spare room: re-allocated once, in place otherwise
        state = backend.join(state, backend.prefill(tokens(5, seed=70), 2).state)
        rows += [tokens(5, seed=70), tokens(5, seed=70)]
        step(4)
    assert state.lengths == [len(row) for row in rows]


def test_only_exact_tokens_and_version_hit_and_lru_evicts_leaves_first() -> None:
    cache = PrefixCache(3 * BLOCK_BYTES)
    kv = [torch.randn(2, 64, 16) for _ in range(2)]
    first = tokens(48, seed=4)
    cache.insert(first, kv, kv)
    assert cache.lookup(first + [1]).length == 48  # type: ignore[union-attr]
    assert cache.lookup(first).length == 32  # type: ignore[union-attr]  # one token is always left to read
    changed = [first[0] + 1, *first[1:]]
    assert cache.lookup(changed + [1]) is None
    torch.testing.assert_close(cache.lookup(first + [1]).layer(0)[0], kv[0][:, :48])  # type: ignore[union-attr]
    cache.insert(tokens(20, seed=5), kv, kv)  # one block more than the budget: the oldest leaf goes
    assert cache.lookup(first + [1]).length == 32  # type: ignore[union-attr]
    assert cache.stats()["bytes"] <= 3 * BLOCK_BYTES and cache.stats()["evicted_blocks"] == 1
    cache.reset(version=1)
    assert cache.lookup(first + [1]) is None and cache.stats()["bytes"] == 0


def test_models_without_a_plain_kv_cache_run_without_it() -> None:
    sliding, tokenizer = build_tiny_model(use_sliding_window=True, sliding_window=8, max_window_layers=0)
    assert not TransformersBackend(sliding).prefix_cacheable
    with running_server(sliding, tokenizer, name="tiny") as running:
        assert running.served.engine.prefix_cache is None
        reply = complete(running.client(max_retries=0), tokens(40, seed=6), 4)
        assert reply.usage.prompt_tokens_details.cached_tokens == 0


# --- the server -----------------------------------------------------------------------------------


def test_cached_tokens_exact_in_usage_and_trace_and_logits_agree(server: Any, model: tuple[Any, Any]) -> None:
    client = server.client(max_retries=0)
    prompt = tokens(40, seed=7)
    first = complete(client, prompt, max_tokens=16)
    assert first.usage.prompt_tokens_details.cached_tokens == 0
    # The next turn extends the first turn's prompt and its 16 sampled tokens: the KV of prompt +
    # the 15 tokens fed back (55) is kept, whole blocks of it are reused (48).
    turn = prompt + list(first.choices[0].model_extra["token_ids"]) + tokens(5, seed=8)
    second = complete(client, turn, max_tokens=8)
    assert second.usage.prompt_tokens_details.cached_tokens == 48
    assert server.store.get(second.id).cached_tokens == 48
    assert server.store.get(first.id).cached_tokens == 0
    assert_matches_full_read(model[0], turn, second.choices[0])
    chat = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi " * 40}],
                                          max_tokens=2)
    again = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi " * 40}],
                                           max_tokens=2)
    assert chat.usage.prompt_tokens_details.cached_tokens == 0
    cached = again.usage.prompt_tokens_details.cached_tokens
    assert cached == (again.usage.prompt_tokens - 1) // BLOCK_TOKENS * BLOCK_TOKENS > 0
    assert server.store.get(again.id).cached_tokens == cached
    response = client.responses.create(model="tiny", input="hi " * 40, max_output_tokens=16)
    assert response.usage.input_tokens_details.cached_tokens == cached  # the same rendered prompt


def test_a_weight_update_under_pause_makes_the_next_turn_a_miss(model: tuple[Any, Any]) -> None:
    policy, tokenizer = build_tiny_model(initializer_range=0.2)
    with running_server(policy, tokenizer, name="tiny") as running:
        client = running.client(max_retries=0)
        prompt = tokens(50, seed=9)
        complete(client, prompt, max_tokens=2)
        assert complete(client, prompt, max_tokens=2).usage.prompt_tokens_details.cached_tokens == 48
        with running.pause("abort"), torch.no_grad():
            for parameter in policy.parameters():
                parameter.mul_(1.5)
        after = complete(client, prompt, max_tokens=4)
        assert after.usage.prompt_tokens_details.cached_tokens == 0
        assert_matches_full_read(policy, prompt, after.choices[0])  # computed by the new weights
        assert complete(client, prompt, max_tokens=2).usage.prompt_tokens_details.cached_tokens == 48


def test_eviction_under_a_small_budget_keeps_results_right(model: tuple[Any, Any]) -> None:
    with running_server(*model, name="tiny", prefix_cache=4 * BLOCK_BYTES) as running:
        client = running.client(max_retries=0)
        prompts = [tokens(40, seed=10 + i) for i in range(4)]  # 2 whole blocks each: two prompts fit
        cached = []
        for prompt in prompts + prompts[::-1]:
            reply = complete(client, prompt, max_tokens=4)
            cached.append(reply.usage.prompt_tokens_details.cached_tokens)
            assert_matches_full_read(model[0], prompt, reply.choices[0])
        assert cached == [0, 0, 0, 0, 32, 32, 0, 0]  # the two most recent hit; the others were evicted
        stats = running.served.engine.prefix_cache_stats()
        assert stats["evicted_blocks"] > 0 and stats["bytes"] <= 4 * BLOCK_BYTES


def test_mixed_hits_and_misses_concurrently(server: Any, model: tuple[Any, Any]) -> None:
    client = server.client(max_retries=0)
    shared = tokens(60, seed=20)
    complete(client, shared, max_tokens=1)  # caches 48 tokens of it (3 whole blocks of 60)
    hits = [shared + tokens(6, seed=30 + i) for i in range(4)]
    misses = [tokens(30 + 7 * i, seed=40 + i) for i in range(4)]

    async def run_all() -> list[Any]:
        async with server.async_client(max_retries=0) as aclient:
            return await asyncio.gather(*[
                aclient.completions.create(model="tiny", prompt=prompt, max_tokens=6, n=1 + i % 2, seed=i,
                                           logprobs=1, extra_body={"return_token_ids": True, "ignore_eos": True})
                for i, prompt in enumerate(hits + misses)])

    replies = asyncio.run(run_all())
    cached = [reply.usage.prompt_tokens_details.cached_tokens for reply in replies]
    assert cached == [48] * 4 + [0] * 4
    for prompt, reply in zip(hits + misses, replies):
        for choice in reply.choices:
            assert_matches_full_read(model[0], prompt, choice)


def test_prefix_cache_off(model: tuple[Any, Any]) -> None:
    with running_server(*model, name="tiny", prefix_cache=False) as running:
        client = running.client(max_retries=0)
        prompt = tokens(40, seed=50)
        complete(client, prompt, max_tokens=2)
        assert complete(client, prompt, max_tokens=2).usage.prompt_tokens_details.cached_tokens == 0
        assert running.served.engine.prefix_cache is None
        assert running.served.engine.prefix_cache_stats() == {}
