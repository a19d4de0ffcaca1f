"""One step's sampling over the local engine's running requests.

The requests whose sampling this step is plain (`Request.plain_sampling`: temperature or argmax,
unseeded) are sampled together by one `sample_plain`; every other request (penalties,
logit_bias, a constraint, filters, a seeded draw) by its own `Sampler` on its own rows. A
request whose sampling fails ends alone; the others keep their tokens.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch

from localoai.engine.params import TokenLogprob
from localoai.engine.running import Request
from localoai.engine.sampler import finite_logprob, sample_plain, token_logprobs

logger = logging.getLogger("localoai.engine")


def sample_running(running: list[Request], generator: torch.Generator) -> list[list[int]]:
    """Every running request's next tokens, in batch order (`generator` draws the plain ones)."""
    plain = [r for r in running if not r.finished and r.plain_sampling]
    taken = _sample_plain(plain, generator) if plain else {}
    tokens: list[list[int]] = []
    for request in running:
        if id(request) in taken:
            tokens.append(taken[id(request)])
        elif request.finished:  # done at admission (max_tokens 0): nothing to sample
            tokens.append([0] * request.rows)
        else:
            tokens.append(_guarded(request, request.sample_step))
    return tokens


def _sample_plain(requests: list[Request], generator: torch.Generator) -> dict[int, list[int]]:
    """Sample `requests` (all `plain_sampling`) in one pass; their tokens by `id(request)`."""
    logits = torch.cat([request.logits for request in requests])  # type: ignore[misc]
    temperatures = [request.params.temperature for request in requests for _ in range(request.rows)]
    try:
        tokens, logprobs = sample_plain(logits, temperatures, generator)
    except Exception:  # e.g. non-finite logits: each request's own Sampler then fails only it
        logger.exception("batched sampling failed; sampling request by request")
        return {}
    chosen = logprobs.gather(-1, tokens.unsqueeze(-1)).squeeze(-1).tolist()
    flat = tokens.tolist()
    taken: dict[int, list[int]] = {}
    start = 0
    for request in requests:
        rows = slice(start, start + request.rows)
        top = request.params.logprobs or 0
        entries = (token_logprobs(logprobs[rows], tokens[rows], top) if top else
                   [TokenLogprob(token, finite_logprob(value)) for token, value in zip(flat[rows], chosen[rows])])
        taken[id(request)] = _guarded(request, lambda r=request, t=flat[rows], e=entries: r.take(t, e))
        start = rows.stop
    return taken


def _guarded(request: Request, sample: Callable[[], list[int]]) -> list[int]:
    """`sample()`'s tokens; if it fails, only this request ends (its rows leave at the next drop)."""
    try:
        return sample()
    except Exception as exc:
        logger.exception("sampling failed")
        request.finish(exc)
        request.samples = []  # counts as finished
        return [0] * request.rows
