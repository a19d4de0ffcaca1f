"""Reusing the KV of token prefixes already read: a block-hash prefix cache salted by policy version.

Token ids are cut into blocks of `block_tokens`; a block is keyed by its parent block (the prefix
before it), the policy version and its own token ids, so a key names one exact token prefix
computed by one version of the weights (the dict compares the tuples: no hash collision can serve
wrong KV). A prompt reuses the longest run of cached whole blocks from its start, always leaving at
least one token to read (its logits start the sampling). Blocks are filled from every prefill (the
prompt) and from every finished request (prompt + sampled tokens, which the next turn of an episode
extends), so any shared prefix hits: an episode's earlier turns, a GRPO group's prompt, `n`
samples, the same tool definitions. Blocks rather than a radix tree: fixed-size pieces make the byte
accounting and eviction per block simple, and a hit at any block boundary needs no node splitting.

Bounded by a byte budget with least-recently-used eviction. A lookup or insert touches a path's
blocks leaf first, so a prefix is always more recent than the blocks extending it and leaves go
first; evicting a block drops its descendants, which no lookup could reach any more. The engine
empties the cache when the policy version changes (`reset`): KV of old weights never serves new ones.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

BLOCK_TOKENS = 16
_BlockKey = tuple[int, int, tuple[int, ...]]  # (parent block id, policy version, token ids)


@dataclass(eq=False)
class _Block:
    key: _BlockKey
    id: int
    parent: _Block | None
    keys: list[torch.Tensor]
    """Per layer, shape (kv heads, block_tokens, head dim); likewise `values`."""
    values: list[torch.Tensor]
    nbytes: int
    children: list[_Block] = field(default_factory=list)


@dataclass
class Prefix:
    """The KV of a prompt's first `length` tokens, as the cached blocks that hold it (no copy made)."""

    length: int
    blocks: list[_Block]

    def layer(self, number: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Layer `number`'s keys and values, each of shape (kv heads, length, head dim): a copy."""
        return (torch.cat([block.keys[number] for block in self.blocks], dim=1),
                torch.cat([block.values[number] for block in self.blocks], dim=1))

    def write(self, number: int, keys: torch.Tensor, values: torch.Tensor) -> None:
        """Copy layer `number`'s keys and values into `keys` / `values` (kv heads, length, head dim),
        e.g. views of a batch's buffers: one copy, straight from the blocks."""
        torch.cat([block.keys[number] for block in self.blocks], dim=1, out=keys)
        torch.cat([block.values[number] for block in self.blocks], dim=1, out=values)


def default_budget(device: torch.device) -> int:
    """Bytes for the cache by default: a quarter of the accelerator's free memory, or an eighth of
    the machine's memory (at most 8 GiB) on CPU."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free // 4
    try:
        physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        physical = 8 << 30
    return min(8 << 30, physical // 8)


class PrefixCache:
    """The cache itself; engine thread only (no lock)."""

    def __init__(self, max_bytes: int, *, block_tokens: int = BLOCK_TOKENS) -> None:
        if max_bytes < 0 or block_tokens < 1:
            raise ValueError("max_bytes must be >= 0 and block_tokens >= 1")
        self.max_bytes = max_bytes
        self.block_tokens = block_tokens
        self.version = 0
        self.bytes = 0
        self._blocks: OrderedDict[_BlockKey, _Block] = OrderedDict()  # least recently used first
        self._next_id = 1
        self.counts = {"lookups": 0, "hits": 0, "hit_tokens": 0, "inserted_blocks": 0, "evicted_blocks": 0}

    def stats(self) -> dict[str, int]:
        """`bytes` and `blocks` held now, and counters since start: `lookups`, `hits` (lookups that reused
        a prefix), `hit_tokens` (prompt tokens whose KV was reused), `inserted_blocks`, `evicted_blocks`."""
        return {"bytes": self.bytes, "blocks": len(self._blocks), **self.counts}

    def reset(self, version: int) -> None:
        """Forget everything; only KV computed by policy `version` is kept from now on."""
        self._blocks.clear()
        self.bytes = 0
        self.version = version

    def lookup(self, token_ids: Sequence[int]) -> Prefix | None:
        """The KV of the longest cached prefix of `token_ids` (whole blocks, one token at least left
        over), or None."""
        self.counts["lookups"] += 1
        path = self._walk(token_ids, (len(token_ids) - 1) // self.block_tokens)
        if not path:
            return None
        self._touch(path)
        self.counts["hits"] += 1
        self.counts["hit_tokens"] += len(path) * self.block_tokens
        return Prefix(len(path) * self.block_tokens, path)

    def insert(self, token_ids: Sequence[int], keys: Sequence[torch.Tensor], values: Sequence[torch.Tensor]) -> None:
        """Keep the KV of `token_ids`' whole blocks; `keys` / `values` per layer, shape (kv heads, at
        least len(token_ids), head dim), position i holding token i's KV."""
        size = self.block_tokens
        path: list[_Block] = []
        parent: _Block | None = None
        for start in range(0, len(token_ids) - size + 1, size):
            key = (parent.id if parent else 0, self.version, tuple(token_ids[start:start + size]))
            block = self._blocks.get(key)
            if block is None:
                block = self._new_block(key, parent, [k[:, start:start + size] for k in keys],
                                        [v[:, start:start + size] for v in values])
                if block is None:
                    break
            path.append(block)
            parent = block
        self._touch(path)
        while self.bytes > self.max_bytes and self._blocks:
            self._evict(next(iter(self._blocks.values())))

    def _walk(self, token_ids: Sequence[int], blocks: int) -> list[_Block]:
        path: list[_Block] = []
        parent_id = 0
        for number in range(blocks):
            start = number * self.block_tokens
            block = self._blocks.get((parent_id, self.version, tuple(token_ids[start:start + self.block_tokens])))
            if block is None:
                break
            path.append(block)
            parent_id = block.id
        return path

    def _new_block(self, key: _BlockKey, parent: _Block | None, keys: list[torch.Tensor],
                   values: list[torch.Tensor]) -> _Block | None:
        nbytes = sum(t.numel() * t.element_size() for t in keys + values)
        if nbytes > self.max_bytes:
            return None
        block = _Block(key, self._next_id, parent, [k.clone() for k in keys], [v.clone() for v in values], nbytes)
        self._next_id += 1
        self._blocks[key] = block
        if parent is not None:
            parent.children.append(block)
        self.bytes += nbytes
        self.counts["inserted_blocks"] += 1
        return block

    def _touch(self, path: list[_Block]) -> None:
        for block in reversed(path):  # the leaf first: prefixes end up more recent than their extensions
            if block.key in self._blocks:
                self._blocks.move_to_end(block.key)

    def _evict(self, block: _Block) -> None:
        stack = [block]
        while stack:
            current = stack.pop()
            if self._blocks.pop(current.key, None) is not None:
                self.bytes -= current.nbytes
                self.counts["evicted_blocks"] += 1
            stack.extend(current.children)
            current.children = []
        if block.parent is not None:
            block.parent.children.remove(block)
