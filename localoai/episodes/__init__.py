"""Episodes, GRPO groups, the token ledger and trajectories: rollouts as a trainer needs them.

    with server.episode(group="q17") as ep:          # or server.group(n=8): for ep in group
        run_agent(base_url=ep.base_url)              # any framework that takes a base URL is traced
        ep.reward = 1.0
    batch = to_tensors(server.trajectories())        # token-exact, with loss mask, logprobs, versions

Requests join an episode by its URL prefix (`/episodes/{id}/v1`), the `X-Episode-Id` header (and
`X-Episode-Group`), or `metadata.episode_id` (and `metadata.episode_group`).
"""

from localoai.episodes.handles import Episode, EpisodeSession, Group
from localoai.episodes.ledger import EpisodeLedger, EpisodeTurn
from localoai.episodes.routing import EPISODE_HEADER, GROUP_HEADER, EpisodeRef
from localoai.episodes.trajectory import (
    Trajectory,
    TrainingRow,
    Turn,
    group_advantages,
    to_dataset,
    to_tensors,
    token_versions,
    write_jsonl,
)

__all__ = [
    "EPISODE_HEADER",
    "GROUP_HEADER",
    "Episode",
    "EpisodeSession",
    "EpisodeLedger",
    "EpisodeRef",
    "EpisodeTurn",
    "Group",
    "TrainingRow",
    "Trajectory",
    "Turn",
    "group_advantages",
    "to_dataset",
    "to_tensors",
    "token_versions",
    "write_jsonl",
]
