"""`POST /v1/embeddings` through the `openai` SDK: equal to a pooled forward pass of the same model,
every input shape, base64, `dimensions`, errors, the store, and the pause semantics of generation."""

from __future__ import annotations

import base64
import concurrent.futures
from typing import Any

import httpx
import openai
import pytest
import torch

from localoai.testing import build_tiny_model, running_server, wait_until


def pooled(model: Any, token_ids: list[int], pooling: str = "last", normalize: bool = True) -> torch.Tensor:
    """The reference: one prompt alone through the model, its last hidden states pooled."""
    with torch.inference_mode():
        hidden = model(input_ids=torch.tensor([token_ids]), output_hidden_states=True).hidden_states[-1][0].float()
    vector = hidden[-1] if pooling == "last" else hidden.mean(0)
    return torch.nn.functional.normalize(vector, dim=-1) if normalize else vector


def test_every_input_shape_equals_a_pooled_forward_pass(client: openai.OpenAI, tiny: tuple[Any, Any]) -> None:
    model, tokenizer = tiny
    texts = ["hello world", "the weather in Paris is", "a"]
    ids = [tokenizer(text)["input_ids"] for text in texts]
    for given, expected_ids in [(texts[0], ids[:1]), (texts, ids), (ids[1], ids[1:2]), (ids, ids)]:
        response = client.embeddings.create(model="tiny", input=given, encoding_format="float")
        assert [item.index for item in response.data] == list(range(len(expected_ids)))
        assert response.usage.prompt_tokens == response.usage.total_tokens == sum(map(len, expected_ids))
        for item, token_ids in zip(response.data, expected_ids):
            assert len(item.embedding) == model.config.hidden_size
            # Batched with padding: equal up to float rounding.
            torch.testing.assert_close(torch.tensor(item.embedding), pooled(model, token_ids), atol=1e-5, rtol=1e-4)


def test_base64_is_little_endian_float32_of_the_same_vectors(client: openai.OpenAI, server: Any) -> None:
    texts = ["one", "two words"]
    floats = client.embeddings.create(model="tiny", input=texts, encoding_format="float")
    raw = httpx.post(f"{server.base_url}/embeddings",
                     json={"model": "tiny", "input": texts, "encoding_format": "base64"})
    assert raw.status_code == 200
    for item, expected in zip(raw.json()["data"], floats.data):
        decoded = torch.frombuffer(bytearray(base64.b64decode(item["embedding"])), dtype=torch.float32)
        assert decoded.tolist() == torch.tensor(expected.embedding, dtype=torch.float32).tolist()
    # The SDK asks for base64 by default and decodes it.
    default = client.embeddings.create(model="tiny", input=texts)
    assert [item.embedding for item in default.data] == [item.embedding for item in floats.data]


def test_dimensions_are_honoured_when_they_are_the_models_and_refused_otherwise(
        client: openai.OpenAI, tiny: tuple[Any, Any]) -> None:
    size = tiny[0].config.hidden_size
    assert len(client.embeddings.create(model="tiny", input="x", dimensions=size).data[0].embedding) == size
    with pytest.raises(openai.BadRequestError) as error:
        client.embeddings.create(model="tiny", input="x", dimensions=size // 2)
    assert error.value.body["param"] == "dimensions" and error.value.body["code"] == "unsupported_parameter"


@pytest.mark.parametrize("body, status, param", [
    ({"model": "tiny", "input": ""}, 400, "input"),
    ({"model": "tiny", "input": []}, 400, "input"),
    ({"model": "tiny", "input": [[]]}, 400, "input[0]"),
    ({"model": "tiny", "input": [10**9]}, 400, "input"),
    ({"model": "tiny", "input": "x", "encoding_format": "int8"}, 400, "encoding_format"),
    ({"model": "tiny", "input": "x", "pooling": "cls"}, 400, "pooling"),
    ({"model": "nope", "input": "x"}, 404, "model"),
    ({"input": "x"}, 400, "model"),
])
def test_bad_requests_are_openai_shaped(server: Any, body: dict[str, Any], status: int, param: str | None) -> None:
    response = httpx.post(f"{server.base_url}/embeddings", json=body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["param"] == param and error["message"]


def test_an_input_longer_than_the_context_window_is_refused(server: Any) -> None:
    window = server.served.context_length
    response = httpx.post(f"{server.base_url}/embeddings", json={"model": "tiny", "input": [[5] * (window + 1)]})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "context_length_exceeded"


def test_each_input_is_recorded(client: openai.OpenAI, server: Any) -> None:
    client.embeddings.create(model="tiny", input=["first input", "second"], encoding_format="float")
    records = server.store.list(kind="embedding", limit=2)
    assert sorted(record.prompt_text for record in records) == ["first input", "second"]
    for record in records:
        assert record.status == "completed" and record.policy_version == server.policy_version
        assert record.output["object"] == "embedding" and len(record.output["embedding"]) == 64
        assert record.prompt_token_ids == server.served.encode(record.prompt_text)


def test_an_embedding_asked_for_during_a_pause_reads_the_updated_weights() -> None:
    model, tokenizer = build_tiny_model()
    with running_server(model, tokenizer, name="tiny", embedding_pooling="mean", embedding_normalize=False) as server:
        client = server.client(max_retries=0)
        token_ids = tokenizer("the weights change")["input_ids"]
        before = client.embeddings.create(model="tiny", input=token_ids, encoding_format="float").data[0].embedding
        torch.testing.assert_close(torch.tensor(before), pooled(model, token_ids, "mean", False), atol=1e-5, rtol=1e-4)
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            with server.pause("keep"):
                later = pool.submit(client.embeddings.create, model="tiny", input=token_ids, encoding_format="float")
                wait_until(lambda: server.served.engine.stats()["jobs"] == 1, message="the job never queued")
                with torch.no_grad():
                    model.model.norm.weight.mul_(2.0)  # the update: every hidden state doubles
            after = later.result().data[0].embedding
        torch.testing.assert_close(torch.tensor(after), 2 * torch.tensor(before), atol=1e-5, rtol=1e-4)
        assert server.store.list(kind="embedding", limit=1)[0].policy_version == server.policy_version == 1


def test_inside_an_episode_embeddings_are_recorded_in_it(server: Any) -> None:
    episode = openai.OpenAI(base_url=f"{server.url}/episodes/embedding-episode/v1", api_key="x", max_retries=0)
    episode.embeddings.create(model="tiny", input="in an episode", encoding_format="float")
    [record] = server.store.list(kind="embedding", episode_id="embedding-episode")
    assert record.prompt_text == "in an episode"
