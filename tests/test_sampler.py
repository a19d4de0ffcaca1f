"""Unit tests of `localoai.engine.sampler`: hand-made logits through `Sampler` (greedy, top_k,
top_p, min_p, logit_bias, penalties, seeds, min_tokens) and the logprobs it returns, and
`token_logprobs` (chosen token, top alternatives, -inf reported as -9999.0)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pytest
import torch

from localoai.engine.params import SamplingParams
from localoai.engine.sampler import IMPOSSIBLE_LOGPROB, Sampler, token_logprobs

CPU = torch.device("cpu")
NEG_INF = float("-inf")


def make(vocab: int = 6, *, prompt_ids: Sequence[int] = (), eos: Sequence[int] = (), **fields: Any) -> Sampler:
    fields.setdefault("max_tokens", 16)
    return Sampler(SamplingParams(**fields), vocab_size=vocab, device=CPU, prompt_ids=prompt_ids, eos_token_ids=eos)


def from_probs(*probs: float, rows: int = 1) -> torch.Tensor:
    """Logits whose softmax is `probs`, one identical row per sample."""
    return torch.tensor([math.log(p) for p in probs]).repeat(rows, 1)


def draws(sampler: Sampler, logits: torch.Tensor, steps: int) -> list[int]:
    out: list[int] = []
    for step in range(steps):
        tokens, _ = sampler.sample(logits.clone(), step)
        out.extend(tokens.tolist())
    return out


def finite(logprobs: torch.Tensor) -> set[int]:
    return set(torch.nonzero(torch.isfinite(logprobs[0])).flatten().tolist())


# --- choosing tokens ------------------------------------------------------------------------


def test_greedy_picks_argmax_per_row() -> None:
    logits = torch.tensor([[0.1, 2.0, -1.0, 0.5], [3.0, 0.0, 0.0, 2.9], [-5.0, -4.0, -6.0, -3.5]])
    tokens, logprobs = make(4, n=3, temperature=0.0).sample(logits, 0)
    assert tokens.tolist() == [1, 0, 3]
    # Always computed (every trace keeps the sampled tokens' logprobs): greedy reports temperature 1.
    assert torch.allclose(logprobs, torch.log_softmax(logits, dim=-1))


def test_top_k_1_equals_greedy() -> None:
    generator = torch.Generator().manual_seed(0)
    for seed in range(5):
        logits = torch.randn(4, 50, generator=generator)
        sampled = make(50, n=4, temperature=1.3, top_k=1, seed=seed)
        assert sampled.sample(logits.clone(), 0)[0].tolist() == logits.argmax(dim=-1).tolist()


def test_top_k_keeps_k_tokens() -> None:
    logits = torch.tensor([[1.0, 4.0, 3.0, 2.0, 0.0, -1.0]])
    tokens, logprobs = make(top_k=3, logprobs=0, seed=1).sample(logits, 0)
    assert logprobs is not None
    assert finite(logprobs) == {1, 2, 3}
    assert set(draws(make(top_k=3, seed=2), logits, 200)) <= {1, 2, 3}


@pytest.mark.parametrize(
    ("top_p", "kept"),
    [(0.45, {0}), (0.75, {0, 1}), (0.85, {0, 1, 2}), (0.99, {0, 1, 2, 3}), (1.0, {0, 1, 2, 3})],
)
def test_top_p_keeps_smallest_set_reaching_p(top_p: float, kept: set[int]) -> None:
    logits = from_probs(0.5, 0.3, 0.15, 0.05)
    _, logprobs = make(4, top_p=top_p, logprobs=0, seed=0).sample(logits.clone(), 0)
    assert logprobs is not None
    assert finite(logprobs) == kept
    # The kept tokens keep their relative probabilities, renormalised.
    mass = sum((0.5, 0.3, 0.15, 0.05)[i] for i in kept)
    assert math.exp(logprobs[0, 0].item()) == pytest.approx(0.5 / mass, rel=1e-5)
    assert set(draws(make(4, top_p=top_p, seed=3), logits, 200)) <= kept


@pytest.mark.parametrize(("min_p", "kept"), [(0.05, {0, 1, 2, 3}), (0.2, {0, 1, 2}), (0.5, {0, 1}), (0.9, {0})])
def test_min_p_drops_tokens_below_fraction_of_top(min_p: float, kept: set[int]) -> None:
    logits = from_probs(0.5, 0.3, 0.15, 0.05)
    _, logprobs = make(4, min_p=min_p, logprobs=0, seed=0).sample(logits.clone(), 0)
    assert logprobs is not None
    assert finite(logprobs) == kept
    assert set(draws(make(4, min_p=min_p, seed=4), logits, 200)) <= kept


def test_temperature_scales_logprobs() -> None:
    logits = torch.tensor([[1.0, 2.0, 0.5, -1.0]])
    _, logprobs = make(4, temperature=0.5, logprobs=0, seed=0).sample(logits.clone(), 0)
    assert logprobs is not None
    torch.testing.assert_close(logprobs, torch.log_softmax(logits / 0.5, dim=-1))


def test_greedy_logprobs_are_at_temperature_one() -> None:
    logits = torch.tensor([[1.0, 2.0, 0.5, -1.0]])
    _, logprobs = make(4, temperature=0.0, logprobs=2).sample(logits.clone(), 0)
    assert logprobs is not None
    torch.testing.assert_close(logprobs, torch.log_softmax(logits, dim=-1))


# --- logit_bias -----------------------------------------------------------------------------


def test_logit_bias_plus_100_forces_token() -> None:
    logits = torch.tensor([[5.0, 4.0, 3.0, 2.0, 1.0, -5.0]])
    assert make(temperature=0.0, logit_bias=((5, 100.0),)).sample(logits.clone(), 0)[0].tolist() == [5]
    assert set(draws(make(temperature=1.0, logit_bias=((5, 100.0),), seed=5), logits, 100)) == {5}


def test_logit_bias_minus_100_bans_token() -> None:
    logits = torch.tensor([[5.0, 4.9, 3.0, 2.0, 1.0, 0.0]])
    assert make(temperature=0.0, logit_bias=((0, -100.0),)).sample(logits.clone(), 0)[0].tolist() == [1]
    sampled = draws(make(temperature=1.0, logit_bias=((0, -100.0),), seed=6), logits, 300)
    assert 0 not in sampled
    assert len(set(sampled)) > 1  # the rest is still sampled


def test_logit_bias_shifts_logits_exactly() -> None:
    logits = torch.tensor([[1.0, 2.0, 3.0, 0.0]])
    _, logprobs = make(4, temperature=0.0, logit_bias=((0, 2.5), (3, -1.0)), logprobs=0).sample(logits.clone(), 0)
    assert logprobs is not None
    torch.testing.assert_close(logprobs, torch.log_softmax(torch.tensor([[3.5, 2.0, 3.0, -1.0]]), dim=-1))


# --- penalties ------------------------------------------------------------------------------


def differences(logprobs: torch.Tensor | None, reference: int = 0) -> list[float]:
    """Logit differences to `reference` (log_softmax keeps them): the penalised logits up to a constant."""
    assert logprobs is not None
    return (logprobs[0] - logprobs[0, reference]).tolist()


def test_frequency_and_presence_penalties() -> None:
    sampler = make(4, temperature=0.0, frequency_penalty=0.5, presence_penalty=0.25, logprobs=0)
    logits = torch.tensor([[0.0, 0.0, 1.0, 0.0]])
    tokens, logprobs = sampler.sample(logits.clone(), 0)  # nothing generated yet: no penalty
    assert tokens.tolist() == [2]
    assert differences(logprobs) == pytest.approx([0.0, 0.0, 1.0, 0.0])
    tokens, logprobs = sampler.sample(logits.clone(), 1)  # token 2 seen once: 1 - 0.5*1 - 0.25
    assert tokens.tolist() == [2]
    assert differences(logprobs) == pytest.approx([0.0, 0.0, 0.25, 0.0])
    tokens, logprobs = sampler.sample(logits.clone(), 2)  # twice: 1 - 0.5*2 - 0.25
    assert differences(logprobs) == pytest.approx([0.0, 0.0, -0.25, 0.0])
    assert tokens.tolist() == [0]


def test_negative_presence_penalty_encourages_repeats() -> None:
    sampler = make(3, temperature=0.0, presence_penalty=-1.0, logprobs=0)
    logits = torch.tensor([[0.0, 0.5, 0.0]])
    assert sampler.sample(logits.clone(), 0)[0].tolist() == [1]
    _, logprobs = sampler.sample(logits.clone(), 1)
    assert differences(logprobs) == pytest.approx([0.0, 1.5, 0.0])


def test_penalties_count_per_row() -> None:
    sampler = make(3, n=2, temperature=0.0, frequency_penalty=1.0, logprobs=0)
    sampler.sample(torch.tensor([[0.0, 2.0, 0.0], [0.0, 0.0, 2.0]]), 0)  # row 0 takes 1, row 1 takes 2
    _, logprobs = sampler.sample(torch.zeros(2, 3), 1)
    assert logprobs is not None
    assert (logprobs[0] - logprobs[0, 0]).tolist() == pytest.approx([0.0, -1.0, 0.0])
    assert (logprobs[1] - logprobs[1, 0]).tolist() == pytest.approx([0.0, 0.0, -1.0])


def test_repetition_penalty_divides_positive_and_multiplies_negative_logits() -> None:
    sampler = make(5, temperature=0.0, repetition_penalty=2.0, prompt_ids=[1, 3], logprobs=0)
    logits = torch.tensor([[1.0, 3.0, 0.5, -1.0, 0.0]])
    tokens, logprobs = sampler.sample(logits.clone(), 0)
    # Prompt tokens are penalised: 3.0 / 2 = 1.5 and -1.0 * 2 = -2.0; the others are unchanged.
    assert differences(logprobs) == pytest.approx([0.0, 0.5, -0.5, -3.0, -1.0])
    assert tokens.tolist() == [1]
    tokens, logprobs = sampler.sample(logits.clone(), 1)
    assert differences(logprobs) == pytest.approx([0.0, 0.5, -0.5, -3.0, -1.0])  # token 1 was seen already
    sampler.sample(torch.tensor([[0.0, 0.0, 9.0, 0.0, 0.0]]), 2)  # now token 2 is generated, so seen
    _, logprobs = sampler.sample(logits.clone(), 3)
    assert differences(logprobs) == pytest.approx([0.0, 0.5, -0.75, -3.0, -1.0])


# --- min_tokens -----------------------------------------------------------------------------


def test_min_tokens_bans_eos_until_reached() -> None:
    sampler = make(4, temperature=0.0, min_tokens=2, eos=[3], logprobs=0)
    logits = torch.tensor([[0.0, 1.0, 0.0, 5.0]])
    tokens, logprobs = sampler.sample(logits.clone(), 0)
    assert tokens.tolist() == [1]
    assert logprobs is not None and logprobs[0, 3].item() == NEG_INF
    assert sampler.sample(logits.clone(), 1)[0].tolist() == [1]
    assert sampler.sample(logits.clone(), 2)[0].tolist() == [3]


def test_min_tokens_leaves_callers_logits_untouched() -> None:
    base = torch.tensor([[0.0, 1.0, 0.0, 5.0]])
    expanded = base.expand(2, -1)  # what TransformersBackend.prefill hands the engine for n=2
    make(4, n=2, temperature=0.0, min_tokens=1, eos=[3]).sample(expanded, 0)
    assert base.tolist() == [[0.0, 1.0, 0.0, 5.0]]


# --- seeds ----------------------------------------------------------------------------------


def test_same_seed_same_samples() -> None:
    logits = torch.randn(4, 10, generator=torch.Generator().manual_seed(3))
    first = draws(make(10, n=4, temperature=1.0, seed=1234), logits, 20)
    second = draws(make(10, n=4, temperature=1.0, seed=1234), logits, 20)
    other = draws(make(10, n=4, temperature=1.0, seed=4321), logits, 20)
    assert first == second
    assert first != other


# --- logprobs -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fields",
    [
        {"temperature": 1.0},
        {"temperature": 0.7, "top_k": 3},
        {"temperature": 1.0, "top_p": 0.6},
        {"temperature": 1.0, "min_p": 0.3},
        {"temperature": 0.0, "frequency_penalty": 1.0, "logit_bias": ((2, -100.0),)},
    ],
)
def test_logprobs_are_normalized(fields: dict[str, Any]) -> None:
    logits = torch.randn(3, 12, generator=torch.Generator().manual_seed(11))
    tokens, logprobs = make(12, n=3, logprobs=5, seed=9, **fields).sample(logits, 0)
    assert logprobs is not None and logprobs.shape == (3, 12)
    for row, token in zip(logprobs, tokens.tolist()):
        kept = row[torch.isfinite(row)]
        assert torch.logsumexp(kept, dim=0).item() == pytest.approx(0.0, abs=1e-5)
        assert torch.isfinite(row[token])  # the chosen token was possible
        assert not torch.isnan(row).any()


def test_filtered_tokens_get_minus_inf() -> None:
    logits = torch.tensor([[3.0, 2.0, 1.0, 0.0, -1.0, -2.0]])
    _, logprobs = make(top_k=2, logprobs=0, seed=0).sample(logits, 0)
    assert logprobs is not None
    assert logprobs[0, 2:].tolist() == [NEG_INF] * 4
    assert torch.isfinite(logprobs[0, :2]).all()


# --- token_logprobs -------------------------------------------------------------------------


def test_token_logprobs_chosen_and_top() -> None:
    logprobs = torch.log_softmax(torch.tensor([[1.0, 3.0, 2.0, 0.0], [0.0, 0.0, 0.0, 4.0]]), dim=-1)
    entries = token_logprobs(logprobs, torch.tensor([2, 3]), 2)
    assert [entry.token_id for entry in entries] == [2, 3]
    assert entries[0].logprob == pytest.approx(logprobs[0, 2].item())
    assert [token for token, _ in entries[0].top] == [1, 2]
    assert entries[0].top[0][1] == pytest.approx(logprobs[0, 1].item())
    assert entries[1].top[0][0] == 3
    assert all(isinstance(token, int) and isinstance(value, float) for e in entries for token, value in e.top)


def test_token_logprobs_without_alternatives() -> None:
    logprobs = torch.log_softmax(torch.tensor([[1.0, 2.0]]), dim=-1)
    (entry,) = token_logprobs(logprobs, torch.tensor([0]), 0)
    assert entry.top == ()
    assert entry.logprob == pytest.approx(logprobs[0, 0].item())


def test_token_logprobs_clamps_minus_inf() -> None:
    logprobs = torch.tensor([[math.log(0.6), math.log(0.4), NEG_INF, NEG_INF]])
    (entry,) = token_logprobs(logprobs, torch.tensor([2]), 3)
    assert IMPOSSIBLE_LOGPROB == -9999.0
    assert entry.logprob == -9999.0
    assert entry.top[0] == (0, pytest.approx(math.log(0.6)))
    assert entry.top[1] == (1, pytest.approx(math.log(0.4)))
    assert entry.top[2][1] == -9999.0
    assert all(math.isfinite(value) for _, value in entry.top)
