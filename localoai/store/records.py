"""One generation as the store keeps it: the request, the exact prompt and completion tokens.

A `GenerationRecord` is what a trainer turns into training data, so it holds the token ids
the model saw and sampled (never a re-tokenisation of text) with the sampled tokens'
logprobs, next to the OpenAI objects that went over the wire.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Literal, TypedDict, get_args

RecordKind = Literal["chat.completion", "text_completion", "response", "response.compaction", "message", "embedding",
                     "generate"]
RecordStatus = Literal["completed", "failed", "incomplete", "cancelled", "in_progress"]

KINDS: frozenset[str] = frozenset(get_args(RecordKind))
STATUSES: frozenset[str] = frozenset(get_args(RecordStatus))


class _CompletionTraceRequired(TypedDict):
    completion_token_ids: list[int]
    logprobs: list[float]  # the sampled tokens' logprobs: one per token, or none when not computed
    text: str
    finish_reason: str | None


class CompletionTrace(_CompletionTraceRequired, total=False):
    """One sample of a generation. Further keys (e.g. `stop_reason`) are kept as given."""

    index: int
    tool_parse_error: str  # why tool-call markup could not be parsed (it went back to the caller as text)
    policy_versions: list[list[int]]  # [[start_token_index, version], ...]: the weights' version of each token
    reasoning_content: str  # the reasoning the output parser found in `text`


@dataclass
class GenerationRecord:
    """A stored generation. Everything is plain JSON data, so `to_json` round-trips exactly.

    Floats are written with Python's `json` (shortest repr), so logprobs come back bit-exact;
    a non-finite float is written as `Infinity`/`NaN`, which Python's `json` reads back.
    """

    id: str
    kind: RecordKind
    model: str
    created_at: float = field(default_factory=time.time)
    policy_version: int = 0
    status: RecordStatus = "completed"
    request: dict[str, Any] = field(default_factory=dict)
    """The request body as JSON."""
    prompt_text: str = ""
    """The rendered prompt exactly as the model saw it (chat template applied)."""
    prompt_token_ids: list[int] = field(default_factory=list)
    completions: list[CompletionTrace] = field(default_factory=list)
    output: dict[str, Any] = field(default_factory=dict)
    """The OpenAI response object as JSON."""
    sampling: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    """Seconds: `queued`, `first_token`, `total`."""
    cached_tokens: int = 0
    """How many of the first prompt tokens had their KV reused from the prefix cache, not read again."""
    error: dict[str, Any] | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    episode_id: str | None = None
    group_id: str | None = None
    """The GRPO-style group of the record's episode (several episodes of one prompt), if any."""
    ledger: dict[str, Any] | None = None
    """Inside an episode: how the prompt relates to the turn it extends (see `localoai.episodes.ledger`)."""
    store_visible: bool = False
    """Whether the HTTP API may return it later (OpenAI's `store` flag); the trainer sees every record."""
    previous_response_id: str | None = None

    def __post_init__(self) -> None:
        # Checked here so a bad record fails where it is built, not when a trainer reads it.
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {sorted(KINDS)}, not {self.kind!r}")
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {sorted(STATUSES)}, not {self.status!r}")
        for i, sample in enumerate(self.completions):
            ids, logprobs = sample.get("completion_token_ids", []), sample.get("logprobs", [])
            if logprobs and len(logprobs) != len(ids):
                raise ValueError(
                    f"completions[{i}] has {len(ids)} token ids but {len(logprobs)} logprobs: "
                    "a trace needs one logprob per sampled token"
                )

    def to_dict(self) -> dict[str, Any]:
        """The fields as a dict (shallow: the lists and dicts are the record's own)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GenerationRecord:
        """Unknown keys are ignored, so an older localoai can read a newer store's records."""
        known = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in known})

    def to_json(self) -> str:
        # ASCII-only output: a lone surrogate in generated text cannot make the write fail.
        return json.dumps(self.to_dict(), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> GenerationRecord:
        return cls.from_dict(json.loads(text))
