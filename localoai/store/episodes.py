"""Episodes in the record store's SQLite file: id, GRPO group, metadata and the reward a trainer attaches.

An episode is one agent rollout (several generations that belong together); a group is several
episodes of one prompt (GRPO). A generation record carries its `episode_id`; this table adds
what belongs to the episode as a whole. Rows are created by `server.episode()`, or by the first
record written for an episode id a client made up (`X-Episode-Id`), so every episode a record
names is listed. The table is created if missing, so a store written before episodes existed
gains it on its next open (no schema version bump: nothing else changed).
"""

from __future__ import annotations

import builtins
import json
import sqlite3
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

SCHEMA = """
BEGIN IMMEDIATE;
CREATE TABLE IF NOT EXISTS episodes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, -- creation order
    id TEXT NOT NULL UNIQUE,
    group_id TEXT,
    created_at REAL NOT NULL,
    metadata TEXT NOT NULL, -- JSON object
    reward REAL,
    reward_info TEXT -- JSON object, or NULL
);
CREATE INDEX IF NOT EXISTS episodes_group ON episodes (group_id);
COMMIT;
"""

_COLUMNS = "id, group_id, created_at, metadata, reward, reward_info"


@dataclass(frozen=True)
class StoredEpisode:
    """An episode as the store keeps it."""

    id: str
    group: str | None = None
    created_at: float = field(default_factory=time.time)
    metadata: dict[str, Any] = field(default_factory=dict)
    reward: float | None = None
    reward_info: dict[str, Any] = field(default_factory=dict)


def register(conn: sqlite3.Connection, episode_id: str, group: str | None, metadata: Mapping[str, Any] | None = None,
             created_at: float | None = None) -> None:
    """Add the episode if it is new; a known one keeps its metadata, and gains a group only if it had none."""
    conn.execute(
        f"INSERT INTO episodes ({_COLUMNS}) VALUES (?, ?, ?, ?, NULL, NULL) "
        "ON CONFLICT (id) DO UPDATE SET group_id = COALESCE(episodes.group_id, excluded.group_id)",
        (episode_id, group, time.time() if created_at is None else created_at, json.dumps(dict(metadata or {}))),
    )


def set_reward(conn: sqlite3.Connection, episode_id: str, reward: float, info: Mapping[str, Any]) -> None:
    register(conn, episode_id, None)
    conn.execute("UPDATE episodes SET reward = ?, reward_info = ? WHERE id = ?",
                 (float(reward), json.dumps(dict(info)) if info else None, episode_id))


def get(conn: sqlite3.Connection, episode_id: str) -> StoredEpisode | None:
    row = conn.execute(f"SELECT {_COLUMNS} FROM episodes WHERE id = ?", (episode_id,)).fetchone()
    return None if row is None else _episode(row)


def list_episodes(conn: sqlite3.Connection, group: str | None = None) -> builtins.list[StoredEpisode]:
    """Oldest first; only `group`'s when given."""
    if group is None:
        rows = conn.execute(f"SELECT {_COLUMNS} FROM episodes ORDER BY seq").fetchall()
    else:
        rows = conn.execute(f"SELECT {_COLUMNS} FROM episodes WHERE group_id = ? ORDER BY seq", (group,)).fetchall()
    return [_episode(row) for row in rows]


def list_groups(conn: sqlite3.Connection) -> builtins.list[str]:
    """Every group id, in the order of its first episode."""
    rows = conn.execute(
        "SELECT group_id FROM episodes WHERE group_id IS NOT NULL GROUP BY group_id ORDER BY MIN(seq)"
    ).fetchall()
    return [row[0] for row in rows]


def _episode(row: tuple[Any, ...]) -> StoredEpisode:
    episode_id, group, created_at, metadata, reward, reward_info = row
    return StoredEpisode(id=episode_id, group=group, created_at=created_at, metadata=json.loads(metadata),
                   reward=reward, reward_info=json.loads(reward_info) if reward_info else {})
