"""`server.episode()` and `server.group()`: what agent code is handed so its requests are traced.

    with server.episode(group="q17", task="weather") as ep:
        agent = SomeAgent(base_url=ep.base_url)       # or ep.client() / ep.async_client()
        ...
        ep.reward = 1.0
    trajectory = ep.trajectory()

An episode's requests go to its own URL prefix (`/episodes/{id}/v1`), so an agent framework that
only takes a base URL is traced unchanged; `ep.headers` does the same for a shared client.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from localoai.episodes.routing import EPISODE_HEADER, EPISODE_ID, GROUP_HEADER
from localoai.episodes.trajectory import Trajectory, trajectories, trajectory

if TYPE_CHECKING:
    import openai

    from localoai.store.base import Store
    from localoai.store.episodes import StoredEpisode


@runtime_checkable
class EpisodeSession(Protocol):
    """What episodes need from the server that serves them (`localoai.Server` is one)."""

    @property
    def url(self) -> str: ...

    @property
    def api_key(self) -> str | None: ...

    @property
    def store(self) -> Store: ...

    def open_episode(self, episode_id: str, group: str | None, token_ledger: bool | None) -> None:
        """Start tracking the episode's turns in the token ledger."""
        ...

    def close_episode(self, episode_id: str) -> None:
        """Drop the episode's turns from the token ledger (its records stay)."""
        ...

    def flush_records(self) -> None:
        """Wait until the records queued so far are in the store."""
        ...


def new_episode_id() -> str:
    return f"ep_{secrets.token_hex(8)}"


def new_group_id() -> str:
    return f"grp_{secrets.token_hex(8)}"


def _checked(value: str, what: str) -> str:
    if not EPISODE_ID.fullmatch(value):
        raise ValueError(f"invalid {what} {value!r}: use 1-128 letters, digits, '_', '.', ':' or '-'")
    return value


class Episode:
    """One agent rollout. Leaving its `with` block drops its token ledger (its records stay)."""

    def __init__(self, server: EpisodeSession, episode_id: str | None = None, group: str | None = None,
                 token_ledger: bool | None = None, **metadata: Any) -> None:
        self.server = server
        self.id = _checked(episode_id or new_episode_id(), "episode id")
        self.group = _checked(group, "group id") if group is not None else None
        self.metadata = metadata
        server.store.add_episode(self.id, self.group, metadata)
        server.open_episode(self.id, self.group, token_ledger)

    @property
    def base_url(self) -> str:
        """The OpenAI base URL of this episode: every `/v1` endpoint, traced into it."""
        return f"{self.server.url}/episodes/{self.id}/v1"

    @property
    def headers(self) -> dict[str, str]:
        """Headers that put a request on the server's plain `/v1` into this episode."""
        return {EPISODE_HEADER: self.id, **({GROUP_HEADER: self.group} if self.group else {})}

    def client(self, **kwargs: Any) -> openai.OpenAI:
        import openai

        return openai.OpenAI(base_url=self.base_url, api_key=self.server.api_key or "localoai", **kwargs)

    def async_client(self, **kwargs: Any) -> openai.AsyncOpenAI:
        import openai

        return openai.AsyncOpenAI(base_url=self.base_url, api_key=self.server.api_key or "localoai", **kwargs)

    @property
    def reward(self) -> float | None:
        stored = self.server.store.episode(self.id)
        return stored.reward if stored is not None else None

    @reward.setter
    def reward(self, value: float) -> None:
        self.set_reward(value)

    def set_reward(self, value: float, **info: Any) -> None:
        """Kept in the store with the episode (`info`: anything JSON-able, e.g. the verifier's verdict)."""
        self.server.store.set_reward(self.id, value, **info)

    def trajectory(self) -> Trajectory:
        """Waits for the episode's records to be written first."""
        self.server.flush_records()
        return trajectory(self.server.store, self.id)

    def close(self) -> None:
        self.server.close_episode(self.id)

    def __enter__(self) -> Episode:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        group = f", group={self.group!r}" if self.group else ""
        return f"<localoai.Episode {self.id!r}{group} at {self.base_url}>"


class Group:
    """Several episodes of one prompt (GRPO): `for ep in group`, `group.episode()` for one more."""

    def __init__(self, server: EpisodeSession, n: int = 0, group_id: str | None = None,
                 token_ledger: bool | None = None, **metadata: Any) -> None:
        self.server = server
        self.id = _checked(group_id or new_group_id(), "group id")
        self.metadata = metadata
        self._token_ledger = token_ledger
        self.members: list[Episode] = []
        for _ in range(n):
            self.episode()

    def episode(self, episode_id: str | None = None, **metadata: Any) -> Episode:
        """A new episode in this group (with the group's metadata, then `metadata`)."""
        member = Episode(self.server, episode_id, self.id, self._token_ledger, **{**self.metadata, **metadata})
        self.members.append(member)
        return member

    def __iter__(self) -> Iterator[Episode]:
        return iter(list(self.members))

    def __len__(self) -> int:
        return len(self.members)

    def episodes(self) -> list[StoredEpisode]:
        """Every episode of the group in the store (those made elsewhere, by header, included)."""
        return self.server.store.episodes(self.id)

    def trajectories(self) -> list[Trajectory]:
        self.server.flush_records()
        return trajectories(self.server.store, self.id)

    def close(self) -> None:
        for member in self.members:
            member.close()

    def __enter__(self) -> Group:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<localoai.Group {self.id!r} ({len(self.members)} episodes)>"
