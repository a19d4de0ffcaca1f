"""Continuous batching: requests decoded together give what they give alone, token for token.

Batches are made deterministic without timing: the engine is paused (`keep`, nothing running)
while requests queue up, so resuming admits them all in the same step; joins mid-flight are
made by reading a running stream's first chunk before submitting the others.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable, Iterator
from typing import Any

import openai
import pytest
import torch

from localoai.testing import build_tiny_model, running_server, wait_until

PROMPTS = [
    "the weather in paris is",
    "hello",
    "first think step by step because the answer is",
    "tool call function city london tokyo",
    "a reward for the agent",
    "then finally therefore",
    "question answer model policy",
    "world",
    "reason think answer the question about the weather in tokyo and paris",
]


@pytest.fixture(scope="module")
def server() -> Iterator[Any]:
    # Larger initial weights than the default tiny model, so greedy outputs differ from prompt to prompt.
    model, tokenizer = build_tiny_model(initializer_range=0.2)
    with running_server(model, tokenizer, name="tiny") as running:
        yield running


def complete(client: openai.OpenAI, prompt: str, **fields: Any) -> Any:
    fields.setdefault("max_tokens", 8)
    extra = {"return_token_ids": True, "ignore_eos": True, **fields.pop("extra_body", {})}
    return client.completions.create(model="tiny", prompt=prompt, extra_body=extra, **fields)


def token_ids(completion: Any) -> list[list[int]]:
    return [choice.model_extra["token_ids"] for choice in completion.choices]


def together(server: Any, calls: list[Callable[[], Any]]) -> list[Any]:
    """Run the calls so that they are all admitted in the same step."""
    engine = server.served.engine
    with concurrent.futures.ThreadPoolExecutor(len(calls)) as pool:
        with server.pause("keep", bump_version=False):
            futures = [pool.submit(call) for call in calls]
            wait_until(lambda: engine.stats()["waiting"] == len(calls))
        return [future.result() for future in futures]


def test_greedy_alone_equals_greedy_among_eight_others(server: Any) -> None:
    client = server.client(max_retries=0)
    alone = [token_ids(complete(client, prompt, temperature=0)) for prompt in PROMPTS]
    batched = together(server, [lambda p=p: complete(client, p, temperature=0) for p in PROMPTS])
    assert [token_ids(result) for result in batched] == alone
    assert len({tuple(ids[0]) for ids in alone}) > 1  # the prompts do lead to different outputs


def test_mixed_parameters_and_n_in_one_batch(server: Any) -> None:
    client = server.client(max_retries=0)
    requests: list[dict[str, Any]] = [
        {"prompt": PROMPTS[0], "temperature": 0},
        {"prompt": PROMPTS[1], "temperature": 1.0, "seed": 7, "n": 3},
        {"prompt": PROMPTS[2], "temperature": 0.8, "top_p": 0.9, "seed": 3, "logprobs": 2},
        {"prompt": PROMPTS[3], "temperature": 0, "frequency_penalty": 1.5, "presence_penalty": 0.5},
        {"prompt": PROMPTS[4], "temperature": 1.2, "seed": 11, "extra_body": {"top_k": 5, "min_p": 0.05,
                                                                              "repetition_penalty": 1.3}},
        {"prompt": PROMPTS[5], "temperature": 0, "max_tokens": 3},
        {"prompt": PROMPTS[6], "temperature": 0, "logit_bias": {"50": 5}},
    ]
    alone = [complete(client, **request) for request in requests]
    batched = together(server, [lambda r=r: complete(client, **r) for r in requests])
    for single, mixed in zip(alone, batched):
        assert token_ids(mixed) == token_ids(single)
        assert [c.finish_reason for c in mixed.choices] == [c.finish_reason for c in single.choices]
    n_samples = token_ids(batched[1])
    assert len(n_samples) == 3 and len({tuple(ids) for ids in n_samples}) > 1  # n rows, each its own draw
    assert batched[2].choices[0].logprobs.token_logprobs == pytest.approx(alone[2].choices[0].logprobs.token_logprobs,
                                                                         abs=1e-4)


def test_stop_strings_inside_a_batch(server: Any) -> None:
    client = server.client(max_retries=0)
    free = complete(client, PROMPTS[0], temperature=0, max_tokens=16)
    text = free.choices[0].text
    stop = text[len(text) // 2:len(text) // 2 + 2]
    assert stop.strip()
    alone = complete(client, PROMPTS[0], temperature=0, max_tokens=16, stop=[stop])
    calls = [lambda: complete(client, PROMPTS[0], temperature=0, max_tokens=16, stop=[stop])]
    calls += [lambda p=p: complete(client, p, temperature=0, max_tokens=16) for p in PROMPTS[1:6]]
    batched = together(server, calls)
    assert batched[0].choices[0].text == alone.choices[0].text == text[:text.index(stop)]
    assert batched[0].choices[0].finish_reason == "stop"
    assert token_ids(batched[0]) == token_ids(alone)


def test_requests_join_and_leave_mid_flight(server: Any) -> None:
    client = server.client(max_retries=0)
    long_alone = token_ids(complete(client, PROMPTS[8], temperature=0, max_tokens=24))
    short_alone = [token_ids(complete(client, p, temperature=0, max_tokens=3 + i)) for i, p in enumerate(PROMPTS[:6])]
    stream = client.completions.create(model="tiny", prompt=PROMPTS[8], temperature=0, max_tokens=24, stream=True,
                                       extra_body={"return_token_ids": True, "ignore_eos": True})
    chunks = iter(stream)
    first = next(chunks)  # the long request is running: the others join it mid-flight and leave before it
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        shorts = list(pool.map(lambda ip: complete(client, ip[1], temperature=0, max_tokens=3 + ip[0]),
                               enumerate(PROMPTS[:6])))
    long_ids = list(first.choices[0].model_extra["token_ids"])
    for chunk in chunks:
        long_ids.extend(chunk.choices[0].model_extra["token_ids"])
    assert long_ids == long_alone[0]
    assert [token_ids(result) for result in shorts] == short_alone


def test_a_list_of_prompts_is_decoded_together(server: Any) -> None:
    """The prompts of one completions request are submitted at once, as separate requests would be
    (not one after another), and each gives what it gives alone."""
    client = server.client(max_retries=0)
    alone = [token_ids(complete(client, prompt, temperature=0))[0] for prompt in PROMPTS[:4]]
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        with server.pause("keep", bump_version=False):
            future = pool.submit(complete, client, PROMPTS[:4], temperature=0)
            wait_until(lambda: server.served.engine.stats()["waiting"] == 4)  # all four queued at once
        listed = future.result()
    assert token_ids(listed) == alone
    assert [choice.index for choice in listed.choices] == [0, 1, 2, 3]


def test_a_streamed_list_of_prompts_interleaves_and_cancels_together(server: Any) -> None:
    client = server.client(max_retries=0)
    engine = server.served.engine
    cancelled_before = len(server.store.list(kind="text_completion", status="cancelled", limit=100))
    stream = client.completions.create(model="tiny", prompt=PROMPTS[:3], temperature=0, max_tokens=500, stream=True,
                                       extra_body={"ignore_eos": True})
    chunks = iter(stream)
    seen: set[int] = set()
    while seen != {0, 1, 2}:  # every prompt streams before any has finished its 500 tokens
        seen.update(choice.index for choice in next(chunks).choices)
    assert engine.stats()["running"] == 3
    stream.close()  # the client goes away: every prompt's generation ends, each recorded as cancelled
    wait_until(lambda: engine.stats() == {"waiting": 0, "running": 0, "jobs": 0, "rows": 0})
    wait_until(lambda: len(server.store.list(kind="text_completion", status="cancelled", limit=100)) == cancelled_before + 3)


def test_n_samples_share_one_prefill_and_decode_as_rows(server: Any) -> None:
    client = server.client(max_retries=0)
    stream = client.completions.create(model="tiny", prompt=PROMPTS[0], temperature=1.0, seed=5, n=4,
                                       max_tokens=30, stream=True, extra_body={"ignore_eos": True})
    chunks = iter(stream)
    next(chunks)
    with server.pause("keep", bump_version=False):
        assert server.served.engine.stats() == {"waiting": 0, "running": 1, "jobs": 0, "rows": 4}
    assert sum(1 for _ in chunks) > 0


def test_cancellation_frees_the_slot(tiny: Any) -> None:
    model, tokenizer = tiny
    with running_server(model, tokenizer, name="tiny", max_batch_size=1) as one_at_a_time:
        client = one_at_a_time.client(max_retries=0)
        engine = one_at_a_time.served.engine
        stream = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}],
                                                max_tokens=100_000 // 100, stream=True, extra_body={"ignore_eos": True})
        next(iter(stream))
        stream.close()  # the client goes away mid-generation
        wait_until(lambda: engine.stats()["running"] == 0)
        answer = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}],
                                                max_tokens=3)
        assert answer.choices[0].finish_reason in ("stop", "length")
        record = one_at_a_time.store.list(kind="chat.completion", status="cancelled")
        assert len(record) == 1

        background = client.responses.create(model="tiny", input="hi", max_output_tokens=1000, background=True,
                                             temperature=0)  # greedy: no early end on this model
        wait_until(lambda: engine.stats()["running"] == 1)
        assert client.responses.cancel(background.id).status == "cancelled"
        wait_until(lambda: engine.stats() == {"waiting": 0, "running": 0, "jobs": 0, "rows": 0})


def test_queue_limit_answers_429_with_retry_after(tiny: Any) -> None:
    model, tokenizer = tiny
    with running_server(model, tokenizer, name="tiny", max_queued_requests=2) as server:
        client = server.client(max_retries=0)
        engine = server.served.engine
        messages = [{"role": "user", "content": "hi"}]
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            with server.pause("keep"):
                waiting = [pool.submit(client.chat.completions.create, model="tiny", messages=messages, max_tokens=2)
                           for _ in range(2)]
                wait_until(lambda: engine.stats()["waiting"] == 2)
                with pytest.raises(openai.RateLimitError) as refused:
                    client.chat.completions.create(model="tiny", messages=messages, max_tokens=2)
                assert refused.value.response.headers["retry-after"] == "1"
                assert refused.value.code == "rate_limit_exceeded"
                with pytest.raises(openai.RateLimitError):  # a stream is refused before it starts
                    client.chat.completions.create(model="tiny", messages=messages, max_tokens=2, stream=True)
                with pytest.raises(openai.RateLimitError):
                    client.responses.create(model="tiny", input="hi", max_output_tokens=16)
            assert all(future.result().choices[0].finish_reason for future in waiting)
        assert engine.stats() == {"waiting": 0, "running": 0, "jobs": 0, "rows": 0}


def test_seeded_sampling_is_reproducible_in_any_company(server: Any) -> None:
    client = server.client(max_retries=0)
    alone = token_ids(complete(client, PROMPTS[2], temperature=1.0, seed=42, n=2))
    assert token_ids(complete(client, PROMPTS[2], temperature=1.0, seed=42, n=2)) == alone
    batched = together(server, [lambda: complete(client, PROMPTS[2], temperature=1.0, seed=42, n=2)]
                       + [lambda p=p: complete(client, p, temperature=1.0, seed=1) for p in PROMPTS[3:7]])
    assert token_ids(batched[0]) == alone


def test_unseeded_sampling_together_reports_the_tempered_distribution(server: Any) -> None:
    """Unseeded temperature-only requests are sampled in one batched draw: each sampled token's
    logprob is still that of its own request's tempered distribution, whatever the others ask."""
    client = server.client()
    temperatures = [0.5, 1.0, 1.7, 0, 0.8, 1.3]
    replies = together(server, [lambda p=p, t=t: complete(client, p, temperature=t, logprobs=0, max_tokens=5)
                                for p, t in zip(PROMPTS, temperatures)])
    model, tokenizer = server.served.model, server.served.tokenizer
    for prompt, temperature, reply in zip(PROMPTS, temperatures, replies):
        prompt_ids = tokenizer(prompt)["input_ids"]
        sampled = token_ids(reply)[0]
        with torch.no_grad():
            logits = model(torch.tensor([prompt_ids + sampled])).logits[0, len(prompt_ids) - 1:-1].float()
        expected = torch.log_softmax(logits / (temperature or 1.0), dim=-1)
        assert reply.choices[0].logprobs.token_logprobs == pytest.approx(
            [float(expected[i, token]) for i, token in enumerate(sampled)], abs=1e-4)
        if temperature == 0:
            assert sampled == logits.argmax(dim=-1).tolist()
