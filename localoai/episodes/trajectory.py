"""Trajectories: an episode's generations as a trainer needs them, token-exact, from the store.

    trajectory(store, episode_id)                       # or server.trajectories(group=...), ep.trajectory()
    for turn in trajectory.turns: turn.input_ids, turn.loss_mask, turn.token_logprobs, turn.token_versions
    batch = to_tensors(trajectories)                    # padded tensors for a policy-gradient loss
    write_jsonl(trajectories, "rollouts.jsonl"); to_dataset(trajectories)   # datasets.Dataset

A turn is one sample of one generation: the prompt ids exactly as the model consumed them, the ids
it sampled, their logprobs (from the distribution actually sampled from: see the README), the policy
version of each sampled token, and the token ledger's report on how its prompt extends the turn
before it. Alignment everywhere: position `t` holds the logprob of `input_ids[t]` given
`input_ids[:t]` (for a causal LM, the logits at `t - 1`), `loss_mask[t]` is 1 where the policy
sampled `input_ids[t]` and 0 for prompt, tool output and template tokens.

`per="episode"` merges an episode's turns into one sequence (the last turn's prompt and completion,
with every turn's sampled tokens masked in): possible when each turn's prompt starts with the turn
before it exactly, which the token ledger makes so for chat templates it can splice.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import torch

    from localoai.store.base import Store
    from localoai.store.records import CompletionTrace, GenerationRecord

Per = Literal["turn", "episode"]
FINISHED = ("completed", "incomplete")
"""Record statuses a trajectory takes turns from (failed, cancelled and running ones are left out)."""


@dataclass
class Turn:
    record_id: str
    kind: str
    sample: int
    """The sample's index in its generation (`n > 1` gives one turn per sample)."""
    prompt_token_ids: list[int]
    completion_token_ids: list[int]
    logprobs: list[float]
    """One per completion token: the sampled token's logprob."""
    policy_versions: list[int]
    """One per completion token: the weights version that sampled it."""
    finish_reason: str | None = None
    ledger: dict[str, Any] | None = None
    """The token ledger's report (None for an episode's first turn or an unrelated branch)."""

    @property
    def input_ids(self) -> list[int]:
        return self.prompt_token_ids + self.completion_token_ids

    @property
    def loss_mask(self) -> list[int]:
        return [0] * len(self.prompt_token_ids) + [1] * len(self.completion_token_ids)

    @property
    def token_logprobs(self) -> list[float]:
        return [0.0] * len(self.prompt_token_ids) + self.logprobs

    @property
    def token_versions(self) -> list[int]:
        return [-1] * len(self.prompt_token_ids) + self.policy_versions

    @property
    def rendered_extends_previous(self) -> bool | None:
        """Whether the chat template's own rendering of this prompt started with the previous turn's
        exact ids (None: no previous turn). False does not mean this turn's prompt diverged: with the
        token ledger the prompt the model consumed was spliced from those exact ids all the same."""
        return None if self.ledger is None else bool(self.ledger.get("rendered_extends"))

    @property
    def extends_previous(self) -> bool | None:
        """Deprecated name of `rendered_extends_previous` (it read as if a spliced turn did not extend)."""
        warnings.warn("Turn.extends_previous is renamed rendered_extends_previous", DeprecationWarning, stacklevel=2)
        return self.rendered_extends_previous

    @property
    def divergence(self) -> int | None:
        """The first index where the re-rendered prompt differs from the previous turn's ids."""
        return None if self.ledger is None else self.ledger.get("divergence")


@dataclass
class TrainingRow:
    """One training row: ids with the mask, logprobs and versions aligned to them."""

    input_ids: list[int]
    loss_mask: list[int]
    logprobs: list[float]
    policy_versions: list[int]
    record_ids: list[str]


@dataclass
class Trajectory:
    episode_id: str
    group: str | None = None
    reward: float | None = None
    reward_info: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    turns: list[Turn] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def sequence(self) -> TrainingRow:
        """The whole episode as one row; `ValueError` when a turn's prompt does not start with the
        one before it exactly (export per turn then)."""
        if not self.turns:
            raise ValueError(f"episode {self.episode_id} has no finished turns")
        if len({turn.record_id for turn in self.turns}) != len(self.turns):
            raise ValueError(f"episode {self.episode_id} has a generation with n > 1: export it per turn")
        ids = self.turns[-1].input_ids
        row = TrainingRow(list(ids), [0] * len(ids), [0.0] * len(ids), [-1] * len(ids), [])
        for number, turn in enumerate(self.turns):
            own = turn.input_ids
            if ids[: len(own)] != own:
                at = next((i for i, (a, b) in enumerate(zip(ids, own)) if a != b), min(len(ids), len(own)))
                raise ValueError(f"episode {self.episode_id}: turn {number} ({turn.record_id}) is not a prefix of "
                                 f"the last turn (they differ at token {at}); export it per turn")
            start = len(turn.prompt_token_ids)
            for offset, (logprob, version) in enumerate(zip(turn.logprobs, turn.policy_versions)):
                row.loss_mask[start + offset] = 1
                row.logprobs[start + offset] = logprob
                row.policy_versions[start + offset] = version
            row.record_ids.append(turn.record_id)
        return row

    def rows(self, per: Per = "turn") -> list[TrainingRow]:
        if per == "episode":
            return [self.sequence()]
        if per != "turn":
            raise ValueError(f"per must be 'turn' or 'episode', not {per!r}")
        return [TrainingRow(turn.input_ids, turn.loss_mask, turn.token_logprobs, turn.token_versions, [turn.record_id])
                for turn in self.turns]


def trajectory(store: Store, episode_id: str) -> Trajectory:
    """The episode's finished turns in the order they were made, with its reward and metadata."""
    stored = store.episode(episode_id)
    result = Trajectory(episode_id)
    if stored is not None:
        result.group, result.reward = stored.group, stored.reward
        result.reward_info, result.metadata = stored.reward_info, stored.metadata
    for record in store.iterate(episode_id=episode_id):
        if record.status in FINISHED:
            result.group = result.group or record.group_id
            result.turns += [_turn(record, trace, number) for number, trace in enumerate(record.completions)]
    return result


def trajectories(store: Store, group: str | None = None) -> list[Trajectory]:
    """One per episode in the store (oldest first), or per episode of `group`."""
    return [trajectory(store, episode.id) for episode in store.episodes(group)]


def _turn(record: GenerationRecord, trace: CompletionTrace, number: int) -> Turn:
    ids = list(trace["completion_token_ids"])
    return Turn(record_id=record.id, kind=record.kind, sample=trace.get("index", number),
                prompt_token_ids=list(record.prompt_token_ids), completion_token_ids=ids,
                logprobs=list(trace.get("logprobs") or []),
                policy_versions=token_versions(trace, len(ids), record.policy_version),
                finish_reason=trace.get("finish_reason"), ledger=record.ledger)


def token_versions(trace: CompletionTrace | dict[str, Any], tokens: int, default: int) -> list[int]:
    """Each sampled token's weights version, from the trace's `[[first token, version], ...]` spans
    (a sample that straddled an update); the record's version where the trace has none."""
    versions = [default] * tokens
    for start, version in sorted(trace.get("policy_versions") or []):
        for index in range(max(int(start), 0), tokens):
            versions[index] = int(version)
    return versions


# -- exports -------------------------------------------------------------------------------------


def write_jsonl(trajectories: Iterable[Trajectory], path: str | os.PathLike[str]) -> int:
    """One trajectory per line (`Trajectory.to_dict()`); the count written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    with open(path, "w", encoding="utf-8") as out:
        for item in trajectories:
            out.write(json.dumps(item.to_dict(), separators=(",", ":")))
            out.write("\n")
            written += 1
    return written


def to_tensors(trajectories: Sequence[Trajectory], *, per: Per = "turn", pad_token_id: int = 0) -> dict[str, Any]:
    """Right-padded tensors, one row per turn (or per episode):

    `input_ids`, `attention_mask` (long); `loss_mask`, `old_logprobs` (float32, 0 where not sampled);
    `policy_versions` (long, -1 where not sampled); per row `rewards` (float32, NaN where the episode
    has none) and `group_index` (long: rows of one group share it, -1 for no group) for group-relative
    advantages (`group_advantages`); `episode_ids` and `record_ids` (lists) to trace a row back."""
    import torch

    rows: list[tuple[Trajectory, TrainingRow]] = [(item, row) for item in trajectories for row in item.rows(per)]
    width = max((len(row.input_ids) for _, row in rows), default=0)
    groups: dict[str, int] = {}

    def padded(values: list[Any], fill: Any, dtype: torch.dtype) -> torch.Tensor:
        return torch.tensor(values + [fill] * (width - len(values)), dtype=dtype)

    def stack(tensors: list[torch.Tensor], dtype: torch.dtype) -> torch.Tensor:
        return torch.stack(tensors) if tensors else torch.zeros((0, 0), dtype=dtype)

    return {
        "input_ids": stack([padded(row.input_ids, pad_token_id, torch.long) for _, row in rows], torch.long),
        "attention_mask": stack([padded([1] * len(row.input_ids), 0, torch.long) for _, row in rows], torch.long),
        "loss_mask": stack([padded(row.loss_mask, 0, torch.float32) for _, row in rows], torch.float32),
        "old_logprobs": stack([padded(row.logprobs, 0.0, torch.float32) for _, row in rows], torch.float32),
        "policy_versions": stack([padded(row.policy_versions, -1, torch.long) for _, row in rows], torch.long),
        "rewards": torch.tensor([float("nan") if item.reward is None else item.reward for item, _ in rows],
                                dtype=torch.float32),
        "group_index": torch.tensor([-1 if item.group is None else groups.setdefault(item.group, len(groups))
                                     for item, _ in rows], dtype=torch.long),
        "episode_ids": [item.episode_id for item, _ in rows],
        "record_ids": [row.record_ids for _, row in rows],
    }


def group_advantages(rewards: torch.Tensor, group_index: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """GRPO's advantage: each reward minus its group's mean, over the group's standard deviation
    (rows with no group are centred on nothing: their reward as is)."""
    import torch

    advantages = rewards.clone()
    for group in torch.unique(group_index):
        if int(group) < 0:
            continue
        members = group_index == group
        values = rewards[members]
        spread = values.std(unbiased=False) if values.numel() > 1 else torch.tensor(0.0)
        advantages[members] = (values - values.mean()) / (spread + eps)
    return advantages


def to_dataset(trajectories: Sequence[Trajectory], *, per: Per = "turn") -> Any:
    """A `datasets.Dataset`, one row per turn (or episode); needs the optional `datasets` package."""
    try:
        import datasets
    except ImportError as missing:
        raise ImportError("to_dataset needs the `datasets` package: pip install datasets") from missing
    rows = [
        {"episode_id": item.episode_id, "group": item.group, "reward": item.reward, "record_ids": row.record_ids,
         "input_ids": row.input_ids, "loss_mask": row.loss_mask, "old_logprobs": row.logprobs,
         "policy_versions": row.policy_versions}
        for item in trajectories for row in item.rows(per)
    ]
    return datasets.Dataset.from_list(rows)
