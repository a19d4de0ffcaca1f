"""Scoring given tokens under the live policy (vLLM's `prompt_logprobs` and `prompt_logprob_token_ids`
extras): every position's logprob equals a direct forward pass's `log_softmax`, alone or batched."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest
import torch


def forward_logprobs(model: Any, token_ids: list[int]) -> torch.Tensor:
    """Row t - 1 is the distribution of token t given the ones before it."""
    with torch.inference_mode():
        return torch.log_softmax(model(input_ids=torch.tensor([token_ids])).logits[0].float(), dim=-1)


def check_scored(scored: list[dict[str, Any] | None], token_ids: list[int], expected: torch.Tensor,
                 candidates: list[list[int]] | None = None) -> None:
    assert scored[0] is None and len(scored) == len(token_ids)
    for position in range(1, len(token_ids)):
        row, token, entries = expected[position - 1], token_ids[position], scored[position]
        assert entries is not None
        assert entries[str(token)]["logprob"] == pytest.approx(row[token].item(), abs=1e-5)
        assert entries[str(token)]["rank"] == int((row > row[token]).sum()) + 1
        for candidate in (candidates or [[]] * len(token_ids))[position]:
            assert entries[str(candidate)]["logprob"] == pytest.approx(row[candidate].item(), abs=1e-5)


def test_a_trajectory_is_scored_in_one_completions_call(client: openai.OpenAI, tiny: tuple[Any, Any]) -> None:
    model, tokenizer = tiny
    prompt = tokenizer("What is the weather like?")["input_ids"]
    continuation = client.completions.create(model="tiny", prompt=prompt, max_tokens=8, seed=3,
                                              extra_body={"return_token_ids": True}).choices[0].model_extra["token_ids"]
    sequence = prompt + continuation
    scored = client.completions.create(model="tiny", prompt=sequence, max_tokens=0, extra_body={"prompt_logprobs": 0})
    check_scored(scored.choices[0].model_extra["prompt_logprobs"], sequence, forward_logprobs(model, sequence))


def test_several_prompts_are_scored_together_each_as_alone(client: openai.OpenAI, tiny: tuple[Any, Any]) -> None:
    model, tokenizer = tiny
    prompts = [tokenizer(text)["input_ids"] for text in ("a", "two words", "a somewhat longer prompt to score here")]
    scored = client.completions.create(model="tiny", prompt=prompts, max_tokens=0, extra_body={"prompt_logprobs": 2})
    assert [choice.index for choice in scored.choices] == [0, 1, 2]
    for choice, token_ids in zip(scored.choices, prompts):
        entries = choice.model_extra["prompt_logprobs"]
        check_scored(entries, token_ids, forward_logprobs(model, token_ids))
        for position in range(1, len(token_ids)):  # the two most likely, ranked
            top = torch.topk(forward_logprobs(model, token_ids)[position - 1], 2).indices.tolist()
            assert [entries[position][str(t)]["rank"] for t in top if str(t) != str(token_ids[position])] == \
                [rank for rank, t in enumerate(top, start=1) if str(t) != str(token_ids[position])]


def test_candidate_ids_are_scored_at_each_position(client: openai.OpenAI, tiny: tuple[Any, Any]) -> None:
    model, tokenizer = tiny
    sequence = tokenizer("teacher logprobs for distillation")["input_ids"]
    candidates = [[position % 50 + 3, 11] for position in range(len(sequence))]
    scored = client.completions.create(model="tiny", prompt=sequence, max_tokens=0, echo=True, logprobs=1,
                                       extra_body={"prompt_logprob_token_ids": candidates})
    choice = scored.choices[0]
    check_scored(choice.model_extra["prompt_logprobs"], sequence, forward_logprobs(model, sequence), candidates)
    assert all(len(top) == 1 for top in choice.logprobs.top_logprobs[1:])  # echo's alternatives stay at logprobs=1


def test_chat_prompt_logprobs_stream_and_not(client: openai.OpenAI, tiny: tuple[Any, Any]) -> None:
    model, _ = tiny
    messages = [{"role": "user", "content": "score my prompt"}]
    answer = client.chat.completions.create(model="tiny", messages=messages, max_tokens=2,
                                            extra_body={"prompt_logprobs": 1, "return_token_ids": True})
    prompt_ids = answer.model_extra["prompt_token_ids"]
    check_scored(answer.model_extra["prompt_logprobs"], prompt_ids, forward_logprobs(model, prompt_ids))
    chunks = list(client.chat.completions.create(model="tiny", messages=messages, max_tokens=2, stream=True,
                                                 extra_body={"prompt_logprobs": 1}))
    streamed = [chunk.model_extra["prompt_logprobs"] for chunk in chunks if "prompt_logprobs" in chunk.model_extra]
    assert streamed == [answer.model_extra["prompt_logprobs"]]


@pytest.mark.parametrize("path, body, param", [
    ("/v1/completions", {"prompt": [5, 6], "prompt_logprob_token_ids": [[1]]}, "prompt_logprob_token_ids"),
    ("/v1/completions", {"prompt": [[5, 6], [7]], "prompt_logprob_token_ids": [[1], [2]]}, "prompt_logprob_token_ids"),
    ("/v1/completions", {"prompt": [5, 6], "prompt_logprob_token_ids": [[1], [10**9]]}, "prompt_logprob_token_ids"),
    ("/v1/completions", {"prompt": [5, 6], "prompt_logprobs": 21}, "prompt_logprobs"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}], "prompt_logprobs": -1},
     "prompt_logprobs"),
])
def test_bad_scoring_requests(server: Any, path: str, body: dict[str, Any], param: str) -> None:
    response = httpx.post(f"{server.url}{path}", json={"model": "tiny", **body})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param
