"""The render endpoints over HTTP (vLLM's shapes): the ids a request would be given, which are the
ids the generating request records, nothing generated; a render posted to the token-in endpoint
generates what the original request does."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest


WEATHER_TOOL = {"type": "function", "function": {"name": "get_weather", "description": "Weather in a city.",
                                                 "parameters": {"type": "object",
                                                                "properties": {"city": {"type": "string"}},
                                                                "required": ["city"]}}}
MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Weather in Paris?"}]


def post(server: Any, path: str, body: dict[str, Any]) -> Any:
    response = httpx.post(f"{server.url}{path}", json=body, timeout=60)
    assert response.status_code == 200, response.text
    return response.json()


def test_chat_render_ids_are_what_the_generating_request_records(client: openai.OpenAI, server: Any) -> None:
    body = {"model": "tiny", "messages": MESSAGES, "tools": [WEATHER_TOOL], "max_tokens": 4,
            "chat_template_kwargs": {"custom_flag": True}}
    before = server.store.stats()["entries"]
    rendered = post(server, "/v1/chat/completions/render", body)
    assert server.store.stats()["entries"] == before  # nothing generated, nothing recorded
    assert rendered["model"] == "tiny" and rendered["request_id"].startswith("chatcmpl-")
    assert rendered["sampling_params"]["max_tokens"] == 4
    assert rendered["prompt"] == server.served.decode(rendered["token_ids"], skip_special_tokens=False)
    completion = client.chat.completions.create(**{k: v for k, v in body.items() if k != "chat_template_kwargs"},
                                                extra_body={"chat_template_kwargs": body["chat_template_kwargs"]})
    assert server.store.get(completion.id).prompt_token_ids == rendered["token_ids"]


def test_a_rendered_request_generates_what_the_original_does(client: openai.OpenAI, server: Any) -> None:
    body = {"model": "tiny", "messages": MESSAGES, "seed": 21, "n": 2, "max_tokens": 12,
            "response_format": {"type": "json_object"}}
    rendered = post(server, "/v1/chat/completions/render", body)
    assert "grammar" in rendered["sampling_params"]["structured_outputs"]
    generated = post(server, "/inference/v1/generate", rendered)
    completion = client.chat.completions.create(**body, extra_body={"return_token_ids": True})
    assert [c["token_ids"] for c in generated["choices"]] == [c.model_extra["token_ids"] for c in completion.choices]


def test_completions_render_gives_one_request_per_prompt(client: openai.OpenAI, server: Any) -> None:
    texts = ["first prompt", "second"]
    for prompts, expected in [(texts, [server.served.encode(text) for text in texts]),
                              ([[5, 6, 7], [8, 9]], [[5, 6, 7], [8, 9]])]:
        rendered = post(server, "/v1/completions/render", {"model": "tiny", "prompt": prompts, "max_tokens": 3})
        assert [item["token_ids"] for item in rendered] == expected
        completion = client.completions.create(model="tiny", prompt=prompts, max_tokens=3)
        assert [server.store.get(f"{completion.id}:{i}").prompt_token_ids for i in range(2)] == expected


def test_responses_render_ids_are_what_the_generating_request_records(client: openai.OpenAI, server: Any) -> None:
    body = {"model": "tiny", "instructions": "Answer in one word.", "max_output_tokens": 3,
            "input": [{"role": "user", "content": "Weather?"},
                      {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": "{}"},
                      {"type": "function_call_output", "call_id": "call_1", "output": "sunny"}],
            "tools": [{"type": "function", "name": "get_weather", "parameters": {"type": "object", "properties": {}}}]}
    rendered = post(server, "/v1/responses/render", body)
    assert rendered["request_id"].startswith("resp_")
    response = client.responses.create(**body)
    assert server.store.get(response.id).prompt_token_ids == rendered["token_ids"]


def test_reasoning_effort_reaches_the_template_as_for_generation(client: openai.OpenAI, server: Any) -> None:
    renders = {effort: post(server, "/v1/chat/completions/render", {
        "model": "tiny", "messages": MESSAGES, "reasoning_effort": effort})["token_ids"] for effort in ("none", "high")}
    assert renders["none"] != renders["high"]  # the template's thinking switch
    completion = client.chat.completions.create(model="tiny", messages=MESSAGES, reasoning_effort="none", max_tokens=2)
    assert server.store.get(completion.id).prompt_token_ids == renders["none"]


@pytest.mark.parametrize("path, body, status, param", [
    ("/v1/chat/completions/render", {"model": "other", "messages": MESSAGES}, 404, "model"),
    ("/v1/chat/completions/render", {"model": "tiny", "messages": MESSAGES, "n": 0}, 400, "n"),
    ("/v1/chat/completions/render", {"model": "tiny", "messages": MESSAGES, "max_tokens": 10**6}, 400, "max_tokens"),
    ("/v1/completions/render", {"model": "tiny", "prompt": [10**9]}, 400, "prompt"),
    ("/v1/completions/render", {"model": "tiny", "prompt": "x", "best_of": 3}, 400, "best_of"),
    ("/v1/responses/render", {"model": "tiny", "input": "x", "unknown_field": 1}, 400, "unknown_field"),
])
def test_render_refuses_what_generation_refuses(server: Any, path: str, body: dict[str, Any], status: int,
                                                param: str) -> None:
    response = httpx.post(f"{server.url}{path}", json=body)
    assert response.status_code == status, response.text
    assert response.json()["error"]["param"] == param


def test_inside_an_episode_render_gives_the_ledgers_prompt(server: Any) -> None:
    episode = openai.OpenAI(base_url=f"{server.url}/episodes/render-episode/v1", api_key="x", max_retries=0)
    first = episode.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=6, seed=2)
    follow_up = [*MESSAGES, {"role": "assistant", "content": first.choices[0].message.content},
                 {"role": "user", "content": "And tomorrow?"}]
    rendered = post(server, "/episodes/render-episode/v1/chat/completions/render",
                    {"model": "tiny", "messages": follow_up, "max_tokens": 2})
    second = episode.chat.completions.create(model="tiny", messages=follow_up, max_tokens=2)
    record = server.store.get(second.id)
    assert record.ledger is not None and record.ledger["extends"] == first.id
    assert record.prompt_token_ids == rendered["token_ids"]
