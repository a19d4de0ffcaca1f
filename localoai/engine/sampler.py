"""Logits to next tokens for one request's batch of samples, and the logprobs of that choice.

Order, as in vLLM: repetition / frequency / presence penalties, logit_bias, the constraint's
mask (structured outputs: tokens the grammar does not allow next get -inf), min_tokens, then
temperature and the top_k / top_p / min_p filters, then sampling with the request's own
seeded generator. Logprobs are taken from the distribution actually sampled from (after
penalties, bias, the mask, temperature and filtering); for greedy decoding (temperature 0)
from the penalised, biased, masked distribution at temperature 1.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import torch

from localoai.engine.params import ConstraintState, SamplingParams, TokenConstraint, TokenLogprob


class Sampler:
    def __init__(
        self,
        params: SamplingParams,
        *,
        vocab_size: int,
        device: torch.device,
        prompt_ids: Sequence[int],
        eos_token_ids: Sequence[int],
        constraint: TokenConstraint | None = None,
    ) -> None:
        """`constraint`: `params.constraint` compiled (see `Engine.submit`)."""
        self.params = params
        rows = params.n
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed(params.seed if params.seed is not None else random.getrandbits(63))
        self._counts: torch.Tensor | None = None
        if params.frequency_penalty or params.presence_penalty:
            self._counts = torch.zeros(rows, vocab_size, dtype=torch.float32, device=device)
        self._seen: torch.Tensor | None = None
        if params.repetition_penalty != 1.0:
            self._seen = torch.zeros(rows, vocab_size, dtype=torch.bool, device=device)
            if prompt_ids:
                self._seen[:, torch.tensor(list(prompt_ids), device=device)] = True
        self._bias: torch.Tensor | None = None
        if params.logit_bias:
            self._bias = torch.zeros(vocab_size, dtype=torch.float32, device=device)
            for token_id, bias in params.logit_bias:
                self._bias[token_id] = bias
        self._eos = torch.tensor(sorted(set(eos_token_ids)), dtype=torch.long, device=device)
        self._constraint: ConstraintState | None = None
        if constraint is not None:
            self._constraint = constraint.start(
                rows, vocab_size=vocab_size, stop_token_ids=sorted(set(eos_token_ids)), device=device
            )
        self._plain = (
            self._seen is None and self._counts is None and self._bias is None and self._constraint is None
            and (params.greedy or (params.seed is None and params.top_k == 0 and params.top_p >= 1.0
                                   and params.min_p <= 0.0))
        )

    def plain_at(self, step: int) -> bool:
        """Whether this step's sampling is only temperature (or argmax) from the raw logits, with no
        per-request state or seeded stream: then `sample_plain` over many requests' rows at once
        draws from exactly the distribution `sample` would."""
        return self._plain and (step >= self.params.min_tokens or not self._eos.numel())

    def sample(self, logits: torch.Tensor, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Pick the next token of every row; also return the logprobs they were drawn from."""
        params = self.params
        logits = logits.float()
        if self._seen is not None:
            penalised = torch.where(logits > 0, logits / params.repetition_penalty, logits * params.repetition_penalty)
            logits = torch.where(self._seen, penalised, logits)
        if self._counts is not None:
            logits = logits - params.frequency_penalty * self._counts
            logits = logits - params.presence_penalty * (self._counts > 0).float()
        if self._bias is not None:
            logits = logits + self._bias
        if self._constraint is not None:
            logits = logits.masked_fill(~self._constraint.allowed(), float("-inf"))
        if step < params.min_tokens and self._eos.numel():
            logits = logits.index_fill(-1, self._eos, float("-inf"))  # out of place: never touch the model's output
        if params.greedy:
            tokens = logits.argmax(dim=-1)
        else:
            logits = self._filter(logits / params.temperature)
            probs = torch.softmax(logits, dim=-1)
            tokens = torch.multinomial(probs, num_samples=1, generator=self.generator).squeeze(-1)
        logprobs = torch.log_softmax(logits, dim=-1)
        self._observe(tokens)
        return tokens, logprobs

    def _filter(self, logits: torch.Tensor) -> torch.Tensor:
        params = self.params
        if params.top_k > 0 and params.top_k < logits.shape[-1]:
            kth = torch.topk(logits, params.top_k, dim=-1).values[:, -1:]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        if params.top_p < 1.0:
            sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
            cumulative = torch.softmax(sorted_logits, dim=-1).cumsum(dim=-1)
            # Drop a token when the tokens ranked above it already reach top_p; always keep the first.
            drop_sorted = (cumulative - torch.softmax(sorted_logits, dim=-1)) >= params.top_p
            drop_sorted[:, 0] = False
            drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
            logits = logits.masked_fill(drop, float("-inf"))
        if params.min_p > 0.0:
            probs = torch.softmax(logits, dim=-1)
            threshold = params.min_p * probs.max(dim=-1, keepdim=True).values
            logits = logits.masked_fill(probs < threshold, float("-inf"))
        return logits

    def _observe(self, tokens: torch.Tensor) -> None:
        if self._constraint is not None:
            self._constraint.advance(tokens.tolist())
        rows = torch.arange(tokens.shape[0], device=tokens.device)
        if self._counts is not None:
            self._counts[rows, tokens] += 1
        if self._seen is not None:
            self._seen[rows, tokens] = True


def sample_plain(
    logits: torch.Tensor, temperatures: Sequence[float], generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """`Sampler.sample` for rows whose samplers are `plain_at` this step (one temperature per
    row, 0 for greedy), in one pass: one argmax / multinomial and one log_softmax for all of them
    instead of a few small kernels per request. Logprobs as `sample`: of the distribution sampled
    from, at temperature 1 for greedy rows."""
    logits = logits.float()
    if not any(temperatures):
        return logits.argmax(dim=-1), torch.log_softmax(logits, dim=-1)
    scale = torch.tensor([t if t > 0.0 else 1.0 for t in temperatures], device=logits.device).unsqueeze(-1)
    logits = logits / scale
    drawn = torch.multinomial(torch.softmax(logits, dim=-1), num_samples=1, generator=generator).squeeze(-1)
    greedy = torch.tensor([t == 0.0 for t in temperatures], device=logits.device)
    return torch.where(greedy, logits.argmax(dim=-1), drawn), torch.log_softmax(logits, dim=-1)


# OpenAI reports impossible alternatives as -9999.0 rather than -inf (which JSON cannot carry).
IMPOSSIBLE_LOGPROB = -9999.0


def finite_logprob(value: float) -> float:
    return value if value > IMPOSSIBLE_LOGPROB else IMPOSSIBLE_LOGPROB


def token_logprobs(logprobs: torch.Tensor, tokens: torch.Tensor, top: int) -> list[TokenLogprob]:
    """One `TokenLogprob` per row: the chosen token's logprob and the `top` most likely alternatives."""
    chosen = logprobs.gather(-1, tokens.unsqueeze(-1)).squeeze(-1).tolist()
    alternatives: list[list[tuple[int, float]]] = [[] for _ in chosen]
    if top > 0:
        values, indices = torch.topk(logprobs, top, dim=-1)
        alternatives = [
            [(int(i), finite_logprob(float(v))) for i, v in zip(row_ids, row_values)]
            for row_ids, row_values in zip(indices.tolist(), values.tolist())
        ]
    return [
        TokenLogprob(token_id=int(token), logprob=finite_logprob(value), top=tuple(alts))
        for token, value, alts in zip(tokens.tolist(), chosen, alternatives)
    ]


def prompt_logprobs(prompt_ids: Sequence[int], logits: torch.Tensor, top: int,
                    candidates: Sequence[Sequence[int]] | None = None) -> list[TokenLogprob | None]:
    """Each prompt token's logprob given the ones before it (the first has none), its rank, the `top`
    most likely alternatives and, per position, the logprobs of `candidates[position]` after them."""
    if len(prompt_ids) < 2:
        return [None] * len(prompt_ids)
    logprobs = torch.log_softmax(logits[:-1].float(), dim=-1)
    targets = torch.tensor(list(prompt_ids[1:]), device=logprobs.device)
    chosen = logprobs.gather(-1, targets.unsqueeze(-1))
    ranks = ((logprobs > chosen).sum(-1) + 1).tolist()
    entries = token_logprobs(logprobs, targets, top)
    for position, entry in enumerate(entries):
        extra: tuple[tuple[int, float], ...] = ()
        wanted = candidates[position + 1] if candidates is not None else ()
        if wanted:
            values = logprobs[position, torch.tensor(list(wanted), device=logprobs.device)].tolist()
            shown = {token for token, _ in entry.top}
            extra = tuple((token, finite_logprob(value)) for token, value in zip(wanted, values) if token not in shown)
        entries[position] = TokenLogprob(entry.token_id, entry.logprob, entry.top + extra, rank=ranks[position])
    return [None, *entries]
