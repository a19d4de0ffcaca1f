"""Legacy completions through the official `openai` SDK: prompt shapes, echo, logprobs, n, best_of, streaming."""

from __future__ import annotations

from typing import Any

import openai
import pytest


@pytest.fixture(scope="module")
def server(scripted_server: Any) -> Any:
    """This module's protocol tests run on the scripted engine (tests/conftest.py), not random weights."""
    return scripted_server



def create(client: openai.OpenAI, server: Any, **kwargs: Any) -> Any:
    kwargs.setdefault("prompt", "the model said")
    return client.completions.create(model=server.model, **kwargs)


def test_default_max_tokens_is_sixteen(client: openai.OpenAI, server: Any) -> None:
    reply = create(client, server, temperature=0, extra_body={"ignore_eos": True})
    assert reply.object == "text_completion" and reply.id.startswith("cmpl-")
    assert reply.usage.completion_tokens == 16
    assert reply.choices[0].finish_reason == "length"


def test_prompt_shapes(client: openai.OpenAI, server: Any, tiny: Any) -> None:
    _, tokenizer = tiny
    ids = tokenizer("the model said")["input_ids"]
    as_text = create(client, server, temperature=0, max_tokens=4)
    as_ids = create(client, server, prompt=ids, temperature=0, max_tokens=4)
    assert as_ids.choices[0].text == as_text.choices[0].text
    many = create(client, server, prompt=["the model said", "a reward"], temperature=0, max_tokens=4, n=2)
    assert [c.index for c in many.choices] == [0, 1, 2, 3]
    assert many.choices[0].text == many.choices[1].text == as_text.choices[0].text  # greedy: samples agree
    assert many.usage.prompt_tokens == len(ids) + len(tokenizer("a reward")["input_ids"])
    nested = create(client, server, prompt=[ids, ids], temperature=0, max_tokens=4)
    assert [c.text for c in nested.choices] == [as_text.choices[0].text] * 2


def test_echo_and_logprobs(model_client: openai.OpenAI, model_server: Any, tiny: Any) -> None:
    _, tokenizer = tiny
    prompt = "the model said"
    prompt_ids = tokenizer(prompt)["input_ids"]
    plain = create(model_client, model_server, prompt=prompt, temperature=0, max_tokens=5)
    echoed = create(model_client, model_server, prompt=prompt, temperature=0, max_tokens=5, echo=True, logprobs=2,
                    extra_body={"return_token_ids": True})
    choice = echoed.choices[0]
    assert choice.text == prompt + plain.choices[0].text
    logprobs = choice.logprobs
    assert len(logprobs.tokens) == len(prompt_ids) + 5
    assert logprobs.token_logprobs[0] is None and logprobs.top_logprobs[0] is None
    assert all(v <= 0 for v in logprobs.token_logprobs[1:])
    assert all(len(top) <= 2 for top in logprobs.top_logprobs[1:])
    assert "".join(logprobs.tokens) == choice.text
    assert logprobs.text_offset == [sum(len(t) for t in logprobs.tokens[:i]) for i in range(len(logprobs.tokens))]
    assert choice.model_extra["prompt_token_ids"] == prompt_ids
    assert len(choice.model_extra["token_ids"]) == 5


def test_streaming_equals_non_streaming(client: openai.OpenAI, server: Any) -> None:
    options: dict[str, Any] = {"seed": 21, "temperature": 1.0, "max_tokens": 6, "n": 2, "logprobs": 1}
    full = create(client, server, **options)
    chunks = list(create(client, server, stream=True, stream_options={"include_usage": True}, **options))
    assert chunks[-1].usage == full.usage and chunks[-1].choices == []
    for choice in full.choices:
        parts = [c for chunk in chunks for c in chunk.choices if c.index == choice.index]
        assert "".join(p.text for p in parts) == choice.text
        assert [v for p in parts for v in p.logprobs.token_logprobs] == choice.logprobs.token_logprobs
        assert [p.finish_reason for p in parts if p.finish_reason] == [choice.finish_reason]


def test_best_of_returns_the_most_likely_samples(client: openai.OpenAI, server: Any) -> None:
    best = create(client, server, best_of=4, n=2, seed=3, temperature=1.0, max_tokens=5, logprobs=0)
    assert [c.index for c in best.choices] == [0, 1]
    assert best.usage.completion_tokens == 4 * 5  # every decoded sample is counted, as OpenAI bills best_of
    totals = [sum(c.logprobs.token_logprobs) for c in best.choices]
    assert totals == sorted(totals, reverse=True)
    candidates = create(client, server, n=4, seed=3, temperature=1.0, max_tokens=5, logprobs=0)
    ranked = sorted((sum(c.logprobs.token_logprobs) for c in candidates.choices), reverse=True)
    assert totals == pytest.approx(ranked[:2])
    without = create(client, server, best_of=3, seed=3, temperature=1.0, max_tokens=5)
    assert len(without.choices) == 1 and without.choices[0].logprobs is None


def test_max_tokens_zero_with_echo_returns_the_prompt(client: openai.OpenAI, server: Any) -> None:
    reply = create(client, server, prompt="a reward", max_tokens=0, echo=True)
    assert reply.choices[0].text == "a reward"
    assert reply.usage.completion_tokens == 0


def test_stop_on_completions(client: openai.OpenAI, server: Any) -> None:
    sampling: dict[str, Any] = {"seed": 5, "temperature": 1.0, "max_tokens": 20}
    text = create(client, server, **sampling).choices[0].text
    stop = next(text[i : i + 2] for i in range(len(text) // 2, len(text) - 2) if text[i : i + 2].strip())
    stopped = create(client, server, stop=stop, **sampling)
    assert stopped.choices[0].text == text[: text.index(stop)]
    assert stopped.choices[0].finish_reason == "stop"
