"""The local engine's use of its prefix cache: read a prompt past its cached prefix, and keep the
KV of a leaving request (its prompt and each sample up to its end, which an episode's next turn
extends)."""

from __future__ import annotations

from localoai.engine.backend import Backend, Prefill, Rows
from localoai.engine.prefix_cache import Prefix, PrefixCache
from localoai.engine.running import Request


def prefill_cached(backend: Backend, cache: PrefixCache | None, group: list[Request]) -> Prefill:
    """Read the prompts of `group` in one forward pass, past the prefix of each that is cached."""
    prompts, samples = [r.prompt_ids for r in group], [r.rows for r in group]
    prefixes: list[Prefix | None] = [cache.lookup(p) if cache is not None else None for p in prompts]
    for request, prefix in zip(group, prefixes):
        request.done.cached_tokens = prefix.length if prefix is not None else 0
    if not any(prefixes):
        return backend.prefill_many(prompts, samples)
    return backend.prefill_cached(prompts, samples, prefixes)


def remember(backend: Backend, cache: PrefixCache, batch: Rows, request: Request, rows: range) -> None:
    """Keep the KV of `request`'s rows of `batch`: its prompt and each sample's tokens up to its end."""
    for row, sample, fed in zip(rows, request.samples, request.fed):
        tokens = (request.prompt_ids + fed[:sample.generated])[:batch.lengths[row]]
        cache.insert(tokens, *backend.row_kv(batch, row))
