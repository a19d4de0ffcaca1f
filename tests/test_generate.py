"""`POST /inference/v1/generate` over HTTP (vLLM's shapes): the chat path's ids and logprobs for the same
prompt and seed, stop token ids, structured outputs, scoring against a direct forward pass,
streaming, episodes, errors and the API key."""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest
import torch

from localoai.testing import running_server

MESSAGES = [{"role": "user", "content": "Say something about the weather."}]


def generate(server: Any, body: dict[str, Any], path: str = "/inference/v1/generate") -> dict[str, Any]:
    response = httpx.post(f"{server.url}{path}", json=body, timeout=60)
    assert response.status_code == 200, response.text
    return response.json()


def test_ids_and_logprobs_equal_the_chat_paths_for_the_same_prompt_and_seed(client: openai.OpenAI, server: Any) -> None:
    chat = client.chat.completions.create(model="tiny", messages=MESSAGES, seed=11, temperature=1.0, n=2,
                                          max_tokens=12, logprobs=True, extra_body={"return_token_ids": True})
    prompt_ids = chat.model_extra["prompt_token_ids"]
    answer = generate(server, {"token_ids": prompt_ids, "model": "tiny", "sampling_params": {
        "n": 2, "seed": 11, "temperature": 1.0, "max_tokens": 12, "logprobs": 0}})
    assert len(answer["choices"]) == 2
    for ours, theirs in zip(answer["choices"], chat.choices):
        assert ours["token_ids"] == theirs.model_extra["token_ids"]
        # The generate request finds the chat's prompt in the prefix cache (KV computed in another forward
        # pass): its logprobs agree to float rounding, its ids exactly.
        assert [entry["logprob"] for entry in ours["logprobs"]["content"]] == \
            pytest.approx([entry.logprob for entry in theirs.logprobs.content], abs=1e-5)
        assert [entry["token"] for entry in ours["logprobs"]["content"]] == [f"token_id:{t}" for t in ours["token_ids"]]
        assert ours["finish_reason"] == theirs.finish_reason
    assert answer["usage"] == {"prompt_tokens": len(prompt_ids), "completion_tokens": 24,
                               "total_tokens": len(prompt_ids) + 24}
    record = server.store.get(answer["id"])
    assert record.kind == "generate" and record.prompt_token_ids == prompt_ids
    assert [trace["completion_token_ids"] for trace in record.completions] == \
        [choice["token_ids"] for choice in answer["choices"]]


def test_stop_token_ids_end_a_sample_with_vllms_stop_reason(server: Any) -> None:
    prompt = server.served.encode("one two three")
    free = generate(server, {"token_ids": prompt, "sampling_params": {"temperature": 0, "max_tokens": 6,
                                                                       "ignore_eos": True}})["choices"][0]
    stop = free["token_ids"][2]
    stopped = generate(server, {"token_ids": prompt, "sampling_params": {
        "temperature": 0, "max_tokens": 6, "ignore_eos": True, "stop_token_ids": [stop]}})["choices"][0]
    cut = free["token_ids"].index(stop) + 1
    assert stopped["token_ids"] == free["token_ids"][:cut]
    assert stopped["finish_reason"] == "stop" and stopped["stop_reason"] == stop


def test_structured_outputs_are_enforced(server: Any) -> None:
    prompt = server.served.encode("Answer:")
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"],
              "additionalProperties": False}
    for structured, check in [
        ({"json": schema}, lambda text: set(json.loads(text)) == {"ok"}),
        ({"choice": ["yes", "no"]}, lambda text: text in ("yes", "no")),
        ({"regex": "[0-9]{3}"}, lambda text: len(text) == 3 and text.isdigit()),
    ]:
        answer = generate(server, {"token_ids": prompt, "sampling_params": {
            "n": 3, "seed": 1, "max_tokens": 30, "structured_outputs": structured}})
        for choice in answer["choices"]:
            assert choice["finish_reason"] == "stop", structured
            assert check(server.served.decode(choice["token_ids"])), structured


def test_prompt_logprobs_and_candidates_equal_a_forward_pass(server: Any, tiny: tuple[Any, Any]) -> None:
    model, _ = tiny
    sequence = server.served.encode("the policy sampled this trajectory")
    candidates = [[3, 7] for _ in sequence]
    answer = generate(server, {"token_ids": sequence, "sampling_params": {
        "max_tokens": 0, "prompt_logprobs": 2, "prompt_logprob_token_ids": candidates}})
    assert answer["choices"][0]["token_ids"] == [] and answer["choices"][0]["finish_reason"] == "length"
    with torch.inference_mode():
        expected = torch.log_softmax(model(input_ids=torch.tensor([sequence])).logits[0].float(), dim=-1)
    scored = answer["prompt_logprobs"]
    assert scored[0] is None and len(scored) == len(sequence)
    for position in range(1, len(sequence)):
        row, entries = expected[position - 1], scored[position]
        token = sequence[position]
        assert entries[str(token)]["logprob"] == pytest.approx(row[token].item(), abs=1e-5)
        assert entries[str(token)]["rank"] == int((row > row[token]).sum()) + 1
        top = torch.topk(row, 2).indices.tolist()
        assert all(str(t) in entries for t in top + [3, 7])
        for candidate in (3, 7):
            assert entries[str(candidate)]["logprob"] == pytest.approx(row[candidate].item(), abs=1e-5)


def test_a_streamed_generation_is_the_non_streamed_one_in_chunks(server: Any) -> None:
    body = {"token_ids": server.served.encode("stream me"), "sampling_params": {"seed": 4, "max_tokens": 5, "n": 2}}
    whole = generate(server, body)
    with httpx.stream("POST", f"{server.url}/inference/v1/generate", json={
            **body, "stream": True, "stream_options": {"include_usage": True}}) as response:
        lines = [line.removeprefix("data: ") for line in response.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    chunks = [json.loads(line) for line in lines[:-1]]
    ids: dict[int, list[int]] = {0: [], 1: []}
    for chunk in chunks:
        for choice in chunk["choices"]:
            ids[choice["index"]] += choice["token_ids"]
    assert [ids[0], ids[1]] == [choice["token_ids"] for choice in whole["choices"]]
    assert chunks[-1]["usage"] == whole["usage"]


def test_inside_an_episode_it_is_a_recorded_turn(server: Any) -> None:
    prompt = server.served.encode("episode turn")
    answer = generate(server, {"token_ids": prompt, "sampling_params": {"max_tokens": 3}},
                      path="/episodes/gen-episode-1/inference/v1/generate")
    record = server.store.get(answer["id"])
    assert record.episode_id == "gen-episode-1"
    [trajectory] = [t for t in server.trajectories() if t.episode_id == "gen-episode-1"]
    [turn] = trajectory.turns
    assert (turn.record_id, turn.kind, turn.prompt_token_ids) == (answer["id"], "generate", prompt)
    assert turn.completion_token_ids == answer["choices"][0]["token_ids"]


@pytest.mark.parametrize("body, status, param", [
    ({"token_ids": []}, 400, "token_ids"),
    ({"token_ids": [10**9]}, 400, "token_ids"),
    ({"token_ids": [5], "sampling_params": {"max_tokens": 10**6}}, 400, "sampling_params.max_tokens"),
    ({"token_ids": [5], "sampling_params": {"temperature": 3}}, 400, "sampling_params.temperature"),
    ({"token_ids": [5], "sampling_params": {"bad_words": ["x"]}}, 400, "sampling_params.bad_words"),
    ({"token_ids": [5], "sampling_params": {"beam_width": 2}}, 400, "sampling_params.beam_width"),
    ({"token_ids": [5], "sampling_params": {"prompt_logprob_token_ids": [[1], [2]]}}, 400,
     "sampling_params.prompt_logprob_token_ids"),
    ({"token_ids": [5], "sampling_params": {"structured_outputs": {"grammar": "start: ("}}}, 400,
     "sampling_params.structured_outputs.grammar"),
    ({"token_ids": [5], "sampling_params": {"structured_outputs": {"json": {"type": "object", "not": {}}}}}, 400,
     "sampling_params.structured_outputs.json"),
    ({"token_ids": [5], "priority": 2}, 400, "priority"),
    ({"token_ids": [5], "model": "other"}, 404, "model"),
])
def test_bad_requests_are_refused_before_generation(server: Any, body: dict[str, Any], status: int, param: str) -> None:
    response = httpx.post(f"{server.url}/inference/v1/generate", json=body)
    assert response.status_code == status, response.text
    assert response.json()["error"]["param"] == param


def test_new_endpoints_are_behind_the_api_key(tiny: tuple[Any, Any]) -> None:
    model, tokenizer = tiny
    with running_server(model, tokenizer, name="tiny", api_key="sekret") as keyed:
        routes = [("/inference/v1/generate", {"token_ids": [5], "sampling_params": {"max_tokens": 1}}),
                  ("/v1/embeddings", {"model": "tiny", "input": "x"}),
                  ("/v1/completions/render", {"model": "tiny", "prompt": "x"}),
                  ("/v1/chat/completions/render", {"model": "tiny", "messages": MESSAGES}),
                  ("/v1/responses/render", {"model": "tiny", "input": "x"})]
        for path, body in routes:
            assert httpx.post(f"{keyed.url}{path}", json=body).status_code == 401, path
            authorized = httpx.post(f"{keyed.url}{path}", json=body, headers={"Authorization": "Bearer sekret"})
            assert authorized.status_code == 200, (path, authorized.text)
