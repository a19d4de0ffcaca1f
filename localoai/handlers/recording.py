"""Every generation becomes a `GenerationRecord` in the store, whatever the request's `store`
flag says (that flag only decides what the HTTP API may return later).

Records are handed to the server's `Recorder`, which writes them on its own thread, so the
event loop never blocks on SQLite; a completed request awaits its write before its last byte,
so whatever a client received is durable and retrievable. A request that fails or is cancelled
is recorded too, with its status and the tokens produced so far. A record the store could not
take fails its request (`written`): a 500, or an error event in a stream, never a silent success.
"""

from __future__ import annotations

import asyncio
import dataclasses
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from localoai.episodes.ledger import EpisodeTurn
from localoai.errors import ServerError
from localoai.handlers.answers import answers
from localoai.protocol.base import RequestModel
from localoai.served import Services
from localoai.store.records import GenerationRecord, RecordKind, RecordStatus

if TYPE_CHECKING:
    from localoai.handlers.generation import Generation


@dataclass(frozen=True)
class RecordFields:
    """What a record says besides its generation and output, known once the request is prepared."""

    model: str
    """The served model's name."""
    record_id: str
    kind: RecordKind
    created: float
    request: RequestModel
    prompt_text: str
    prompt_token_ids: list[int]
    first_index: int = 0
    """The first sample's index among the request's choices (completions: the Nth prompt's)."""
    metadata: dict[str, str] | None = None
    visible: bool = False
    """Whether the HTTP API may return it later (the request's `store`)."""
    previous_response_id: str | None = None
    input_items: list[dict[str, Any]] | None = None
    """Responses: the resolved input items, replayed chain first, each with its id. Kept in the
    record's `request["input_items"]` (not an OpenAI request field): what
    `GET /v1/responses/{id}/input_items` lists and what a later `previous_response_id` replays."""
    tools_not_offered: list[str] | None = None
    """Responses: hosted tool types offered that the model never saw, in `request["tools_not_offered"]`."""
    episode: EpisodeTurn | None = None
    """The request's episode turn; a finished one joins the episode's token ledger."""


async def written(write: Future[bool], *, required: bool = True) -> None:
    """Await a record's write. Shielded: a disconnect while waiting must not cancel the write (the
    recorder's future would be resolved twice). A `required` record that was not written raises."""
    if not await asyncio.shield(asyncio.wrap_future(write)) and required:
        raise ServerError("The generation finished but its record could not be written to the store "
                          "(see the server log); its trace is lost.", code="record_not_written")


def record_generation(
    services: Services, fields: RecordFields, generation: Generation | None, output: BaseModel | None, *,
    status: RecordStatus | None = None, policy_version: int | None = None,
) -> Future[bool]:
    """Queue the record (and, for a finished episode turn, join the episode's ledger); the future
    resolves once it is written (see `Recorder.record`). `status`: the record's when it is not the
    generation's; `policy_version`: the weights' when there is no generation (embeddings)."""
    if status is None:
        status = generation.status if generation is not None else "cancelled"
        status = "failed" if status == "in_progress" else status
    body = fields.request.model_dump(mode="json", exclude_unset=True)
    if fields.input_items is not None:
        body["input_items"] = fields.input_items
    if fields.tools_not_offered:
        body["tools_not_offered"] = fields.tools_not_offered
    episode = fields.episode
    record = GenerationRecord(
        id=fields.record_id,
        kind=fields.kind,
        model=fields.model,
        created_at=fields.created,
        policy_version=(generation.policy_version if generation is not None
                        else policy_version if policy_version is not None else services.policy_version),
        status=status,
        request=body,
        prompt_text=fields.prompt_text,
        prompt_token_ids=list(fields.prompt_token_ids),
        completions=generation.traces(fields.first_index) if generation is not None else [],
        output=output.model_dump(mode="json", exclude_unset=True, by_alias=True) if output is not None else {},
        sampling=dataclasses.asdict(generation.params) if generation is not None else {},
        timings=generation.timings if generation is not None else {},
        cached_tokens=generation.cached_tokens if generation is not None else 0,
        error=generation.error if generation is not None else None,
        metadata=dict(fields.metadata or {}),
        store_visible=fields.visible,
        previous_response_id=fields.previous_response_id,
        episode_id=episode.episode.id if episode is not None else None,
        group_id=episode.episode.group if episode is not None else None,
        ledger=episode.ledger if episode is not None else None,
    )
    if episode is not None and generation is not None and status in ("completed", "incomplete"):
        services.episodes.finish(episode, fields.record_id, record.prompt_token_ids,
                               [(answer, list(sample["completion_token_ids"]))
                                for answer, sample in zip(answers(output), record.completions)])
    return services.recorder.record(record)
