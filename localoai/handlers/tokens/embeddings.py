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
from localoai.handlers.recording import RecordFields, record_generation, written
from localoai.protocol.embeddings import EmbeddingRequest
from localoai.served import LoadedModel, Services


@dataclass(frozen=True)
class PreparedEmbedding:
    request: EmbeddingRequest
    prompts: list[tuple[list[int], str]]
    """Each input's token ids and text."""
    episode: EpisodeTurn | None = None


class Embeddings:
    def __init__(self, model: LoadedModel, services: Services) -> None:
        self.model, self.services = model, services

    def prepare(self, request: EmbeddingRequest, episode: EpisodeRef | None = None) -> PreparedEmbedding:
        model, services = self.model, self.services
        model.check_model(request.model)
        size = model.hidden_size
        check_embeddings(services.engine.capabilities)
        if request.dimensions is not None and request.dimensions != size:
            raise UnsupportedFieldError(
                f"Unsupported value for 'dimensions': this model's embeddings have {size} dimensions and it was "
                "not trained to shorten them (truncating would not give a meaningful embedding).",
                param="dimensions")
        prompts = []
        for prompt in request.inputs:
            token_ids, text = prompt_ids(model, prompt, param="input")
            token_budget(model, len(token_ids), 0, param="input")
            prompts.append((token_ids, text))
        return PreparedEmbedding(request, prompts, services.episodes.turn(episode))

    async def create(self, prepared: PreparedEmbedding) -> CreateEmbeddingResponse | dict[str, Any]:
        """The SDK's response; with `encoding_format: base64`, its JSON form with each vector as
        base64 of little-endian float32 (what the `openai` SDK decodes; the SDK's type has no such
        variant). The store keeps the vectors as floats."""
        model, services = self.model, self.services
        pooling, normalize = model.embedding_pooling, model.embedding_normalize
        chunk = services.engine.max_batch_size
        ids = [token_ids for token_ids, _ in prepared.prompts]

        def embed(batch: list[list[int]]) -> tuple[torch.Tensor, int]:
            return services.engine.embed(batch, pooling, normalize).cpu(), services.policy_version

        created = int(time.time())
        parts = await asyncio.gather(*(on_engine(services, lambda b=ids[i:i + chunk]: embed(b))
                                       for i in range(0, len(ids), chunk)))
        data: list[Embedding] = []
        versions: list[int] = []
        for vectors, version in parts:
            for vector in vectors:
                data.append(Embedding(embedding=vector.tolist(), index=len(data), object="embedding"))
                versions.append(version)
        tokens = sum(len(token_ids) for token_ids in ids)
        response = CreateEmbeddingResponse(data=data, model=model.name, object="list",
                                           usage=Usage(prompt_tokens=tokens, total_tokens=tokens))
        record_id = new_id("embd-")
        writes = [
            record_generation(
                services, RecordFields(model=model.name, record_id=record_id if len(data) == 1 else f"{record_id}:{index}",
                                     kind="embedding", created=created, request=prepared.request, prompt_text=text,
                                     prompt_token_ids=token_ids, episode=prepared.episode),
                None, data[index], status="completed", policy_version=versions[index],
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

