"""The vLLM engine's translation of vLLM's outputs (`localoai.engine.vllm_outputs`), without vLLM: token
deltas as vLLM hands them (ids, `FlatLogprobs`, a finish reason) become the same text,
finish reasons and stop reasons the local engine writes."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import pytest

from localoai.engine.params import SamplingParams
from localoai.engine.vllm_outputs import SampleFeed, prompt_entries, token_logprob


@dataclass
class FlatLogprobs:  # vLLM's `vllm.logprobs.FlatLogprobs`, as far as the translation reads it
    start_indices: list[int] = field(default_factory=list)
    end_indices: list[int] = field(default_factory=list)
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    ranks: list[int | None] = field(default_factory=list)


def flat(*positions: list[tuple[int, float, int | None]] | None) -> FlatLogprobs:
    """Each position's (token id, logprob, rank) entries, as vLLM appends them (None: an empty position)."""
    logprobs = FlatLogprobs()
    for entries in positions:
        logprobs.start_indices.append(len(logprobs.token_ids))
        for token, value, rank in entries or []:
            logprobs.token_ids.append(token)
            logprobs.logprobs.append(value)
            logprobs.ranks.append(rank)
        logprobs.end_indices.append(len(logprobs.token_ids))
    return logprobs


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    from localoai.testing import build_tokenizer

    return build_tokenizer()


def ids(tokenizer: Any, text: str) -> list[int]:
    return tokenizer.encode(text, add_special_tokens=False)


def test_text_is_the_decode_of_the_ids_fed_in_any_chunks(tokenizer: Any) -> None:
    tokens = ids(tokenizer, "the weather in paris is celsius, today!")
    feed = SampleFeed(0, tokenizer, SamplingParams(max_tokens=100), [tokenizer.eos_token_id])
    deltas = [feed.feed(tokens[:3], None, None, 0), feed.feed(tokens[3:], None, None, 0)]
    assert "".join(delta.text for delta in deltas) == "the weather in paris is celsius, today!"
    assert [token for delta in deltas for token in delta.token_ids] == tokens
    assert not feed.finished and all(delta.policy_version == 0 for delta in deltas)


def test_a_stop_string_ends_the_sample_mid_chunk(tokenizer: Any) -> None:
    tokens = ids(tokenizer, "hello world answer question")
    feed = SampleFeed(1, tokenizer, SamplingParams(max_tokens=100, stop=(" answer",)), [tokenizer.eos_token_id])
    delta = feed.feed(tokens, None, None, 3)
    assert delta.text == "hello world"
    assert (delta.finish_reason, delta.stop_reason, delta.index, delta.policy_version) == ("stop", " answer", 1, 3)
    assert feed.finished
    assert delta.token_ids == tokens[:len(delta.token_ids)] and len(delta.token_ids) < len(tokens)


def test_end_of_sequence_and_stop_token_ids(tokenizer: Any) -> None:
    eos = tokenizer.eos_token_id
    tokens = ids(tokenizer, "yes no")
    feed = SampleFeed(0, tokenizer, SamplingParams(max_tokens=100), [eos])
    delta = feed.feed([*tokens, eos], None, "stop", 0)
    assert (delta.text, delta.finish_reason, delta.stop_reason) == ("yes no", "stop", None)
    assert delta.token_ids[-1] == eos  # the stop token stays in the ids, as on the local engine
    stop_id = tokens[-1]
    feed = SampleFeed(0, tokenizer, SamplingParams(max_tokens=100, stop_token_ids=(stop_id,)), [eos])
    delta = feed.feed(tokens, None, "stop", 0)
    assert (delta.finish_reason, delta.stop_reason) == ("stop", stop_id)


def test_length_and_vllms_own_endings(tokenizer: Any) -> None:
    tokens = ids(tokenizer, "one two three four")
    feed = SampleFeed(0, tokenizer, SamplingParams(max_tokens=2), [tokenizer.eos_token_id])
    delta = feed.feed(tokens[:2], None, "length", 0)
    assert delta.finish_reason == "length" and delta.text == tokenizer.decode(tokens[:2])
    feed = SampleFeed(0, tokenizer, SamplingParams(max_tokens=50), [tokenizer.eos_token_id])
    feed.feed(tokens[:1], None, None, 0)
    aborted = feed.feed([], None, "abort", 1)
    assert (aborted.token_ids, aborted.finish_reason, aborted.policy_version) == ([], "abort", 1)


def test_logprobs_keep_the_sampled_token_and_the_top_by_rank() -> None:
    # vLLM's order: the sampled token first, then the top ones by rank (the sampled one again if among them)
    position = [(7, -2.5, 3), (1, -0.5, 1), (2, -1.0, 2), (7, -2.5, 3)]
    assert token_logprob(7, flat(position), 0, 2).top == ((1, -0.5), (2, -1.0))
    assert token_logprob(7, flat(position), 0, 3).top == ((1, -0.5), (2, -1.0), (7, -2.5))
    assert token_logprob(7, flat(position), 0, 2).logprob == -2.5
    assert token_logprob(7, flat(position), 0, 2, rank=False).rank is None
    assert token_logprob(7, flat([], position), 1, 0).rank == 3  # the second position
    assert token_logprob(1, flat([(1, -0.5, 1)]), 0, 0).top == ()
    assert token_logprob(1, flat([(1, -math.inf, 1)]), 0, 0).logprob == -9999.0  # JSON carries no -inf
    assert token_logprob(1, None, 0, 0).logprob == -9999.0


def test_prompt_logprobs_have_ranks_and_no_first_entry() -> None:
    entries = prompt_entries([5, 6, 7], flat(None, [(6, -1.0, 2), (9, -0.2, 1)], [(7, -0.1, 1)]), 1).entries
    assert entries[0] is None
    assert (entries[1].token_id, entries[1].logprob, entries[1].rank, entries[1].top) == (6, -1.0, 2, ((9, -0.2),))
    assert entries[2].rank == 1


def test_engine_vllm_without_vllm_says_what_to_install() -> None:
    import importlib.util

    from localoai.served import named_engine

    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vLLM is installed here")
    with pytest.raises(ImportError, match="pip install vllm"):
        named_engine("vllm", None, object(), object(), max_batch_size=8, max_queued_requests=8)
    with pytest.raises(ValueError, match="engine_options"):
        named_engine(None, {"max_model_len": 8}, object(), object(), max_batch_size=8, max_queued_requests=8)
