"""`POST /v1/embeddings`: vectors pooled from the live model's last hidden states.

The forward passes run on the engine thread between decode steps (`on_engine`), so an embedding
is never computed on half-updated weights: while the server is paused it waits, like a generation.
Inputs are read in padded batches of up to `max_batch_size` prompts. Each input is recorded in the
store (kind `embedding`) with its token ids and the policy version of the weights that made it.
"""

from __future__ import annotations

import asyncio
import base64
import struct
import time
from dataclasses import dataclass
from typing import Any

import torch
from openai.types import CreateEmbeddingResponse, Embedding
from openai.types.create_embedding_response import Usage

from localoai.engine.interface import check_embeddings
from localoai.episodes.ledger import EpisodeTurn
from localoai.episodes.routing import EpisodeRef
from localoai.errors import UnsupportedFieldError
from localoai.handlers.common import new_id, on_engine, prompt_ids, token_budget
from localoai.handlers.recording import record_generation, written
from localoai.protocol.embeddings import EmbeddingRequest
from localoai.served import ServedModel


@dataclass(frozen=True)
class PreparedEmbedding:
    request: EmbeddingRequest
    prompts: list[tuple[list[int], str]]
    """Each input's token ids and text."""
    episode: EpisodeTurn | None = None


class Embeddings:
    def __init__(self, served: ServedModel) -> None:
        self.served = served

    def prepare(self, request: EmbeddingRequest, episode: EpisodeRef | None = None) -> PreparedEmbedding:
        served = self.served
        served.check_model(request.model)
        check_embeddings(served.engine.capabilities)
        size = served.hidden_size
        if request.dimensions is not None and request.dimensions != size:
            raise UnsupportedFieldError(
                f"Unsupported value for 'dimensions': this model's embeddings have {size} dimensions and it was "
                "not trained to shorten them (truncating would not give a meaningful embedding).",
                param="dimensions")
        prompts = []
        for prompt in request.inputs:
            token_ids, text = prompt_ids(served, prompt, param="input")
            token_budget(served, len(token_ids), 0, param="input")
            prompts.append((token_ids, text))
        return PreparedEmbedding(request, prompts, served.episodes.turn(episode))

    async def create(self, prepared: PreparedEmbedding) -> CreateEmbeddingResponse | dict[str, Any]:
        """The SDK's response; with `encoding_format: base64`, its JSON form with each vector as
        base64 of little-endian float32 (what the `openai` SDK decodes; the SDK's type has no such
        variant). The store keeps the vectors as floats."""
        served = self.served
        pooling, normalize = served.embedding_pooling, served.embedding_normalize
        chunk = served.engine.max_batch_size
        ids = [token_ids for token_ids, _ in prepared.prompts]

        def embed(batch: list[list[int]]) -> tuple[torch.Tensor, int]:
            return served.engine.embed(batch, pooling, normalize).cpu(), served.policy_version

        created = int(time.time())
        parts = await asyncio.gather(*(on_engine(served, lambda b=ids[i:i + chunk]: embed(b))
                                       for i in range(0, len(ids), chunk)))
        data: list[Embedding] = []
        versions: list[int] = []
        for vectors, version in parts:
            for vector in vectors:
                data.append(Embedding(embedding=vector.tolist(), index=len(data), object="embedding"))
                versions.append(version)
        tokens = sum(len(token_ids) for token_ids in ids)
        response = CreateEmbeddingResponse(data=data, model=served.name, object="list",
                                           usage=Usage(prompt_tokens=tokens, total_tokens=tokens))
        record_id = new_id("embd-")
        writes = [
            record_generation(
                served, record_id=record_id if len(data) == 1 else f"{record_id}:{index}", kind="embedding",
                created=created, request=prepared.request, prompt_text=text, prompt_token_ids=token_ids,
                generation=None, output=data[index], status="completed", episode=prepared.episode,
                policy_version=versions[index],
            )
            for index, (token_ids, text) in enumerate(prepared.prompts)
        ]
        await asyncio.gather(*(written(write) for write in writes))
        if prepared.request.encoding_format == "base64":
            return _as_base64(response, [vector for vectors, _ in parts for vector in vectors])
        return response


def _as_base64(response: CreateEmbeddingResponse, vectors: list[torch.Tensor]) -> dict[str, Any]:
    body = response.model_dump(mode="json")
    for item, vector in zip(body["data"], vectors):
        values = vector.tolist()
        item["embedding"] = base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode()
    return body

