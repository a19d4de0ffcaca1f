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
from typing import Any

from pydantic import BaseModel

from localoai.episodes.ledger import EpisodeTurn
from localoai.errors import ServerError
from localoai.handlers.answers import answers
from localoai.handlers.common import Generation
from localoai.protocol.base import RequestModel
from localoai.served import ServedModel
from localoai.store.records import GenerationRecord, RecordKind, RecordStatus


async def written(write: Future[bool], *, required: bool = True) -> None:
    """Await a record's write. Shielded: a disconnect while waiting must not cancel the write (the
    recorder's future would be resolved twice). A `required` record that was not written raises."""
    if not await asyncio.shield(asyncio.wrap_future(write)) and required:
        raise ServerError("The generation finished but its record could not be written to the store "
                          "(see the server log); its trace is lost.", code="record_not_written")


def record_generation(
    served: ServedModel,
    *,
    record_id: str,
    kind: RecordKind,
    created: float,
    request: RequestModel,
    prompt_text: str,
    prompt_token_ids: list[int],
    generation: Generation | None,
    output: BaseModel | None,
    first_index: int = 0,
    metadata: dict[str, str] | None = None,
    visible: bool = False,
    previous_response_id: str | None = None,
    input_items: list[dict[str, Any]] | None = None,
    tools_not_offered: list[str] | None = None,
    status: RecordStatus | None = None,
    episode: EpisodeTurn | None = None,
    policy_version: int | None = None,
) -> Future[bool]:
    """Queue the record; the future resolves once it is written (see `Recorder.record`).

    `input_items` (responses): the resolved input items, replayed chain first, each with its id.
    They are kept in the record's `request["input_items"]` (not an OpenAI request field), which is
    what `GET /v1/responses/{id}/input_items` lists and what a later `previous_response_id` replays.

    `tools_not_offered` (responses): hosted tool types the request offered that the model never saw
    (no implementation here), kept in `request["tools_not_offered"]`.

    `status`: the record's status when it is not the generation's (a background response is
    recorded "in_progress" before its generation starts).

    `episode`: the request's episode turn; a finished one joins the episode's token ledger.

    `policy_version`: the weights' version when there is no generation to take it from (embeddings).
    """
    if status is None:
        status = generation.status if generation is not None else "cancelled"
        status = "failed" if status == "in_progress" else status
    body = request.model_dump(mode="json", exclude_unset=True)
    if input_items is not None:
        body["input_items"] = input_items
    if tools_not_offered:
        body["tools_not_offered"] = tools_not_offered
    record = GenerationRecord(
        id=record_id,
        kind=kind,
        model=served.name,
        created_at=created,
        policy_version=(generation.policy_version if generation is not None
                        else policy_version if policy_version is not None else served.policy_version),
        status=status,
        request=body,
        prompt_text=prompt_text,
        prompt_token_ids=list(prompt_token_ids),
        completions=generation.traces(first_index) if generation is not None else [],
        output=output.model_dump(mode="json", exclude_unset=True, by_alias=True) if output is not None else {},
        sampling=_sampling(generation),
        timings=generation.timings if generation is not None else {},
        cached_tokens=generation.cached_tokens if generation is not None else 0,
        error=generation.error if generation is not None else None,
        metadata=dict(metadata or {}),
        store_visible=visible,
        previous_response_id=previous_response_id,
        episode_id=episode.episode.id if episode is not None else None,
        group_id=episode.episode.group if episode is not None else None,
        ledger=episode.ledger if episode is not None else None,
    )
    if episode is not None and generation is not None and status in ("completed", "incomplete"):
        served.episodes.finish(episode, record_id, record.prompt_token_ids,
                               [(answer, list(sample["completion_token_ids"]))
                                for answer, sample in zip(answers(output), record.completions)])
    return served.recorder.record(record)


def _sampling(generation: Generation | None) -> dict[str, Any]:
    return dataclasses.asdict(generation.params) if generation is not None else {}
