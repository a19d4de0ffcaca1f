"""The token ledger and trajectory exports, on the tiny model's ChatML template.

The splice is checked against an independent construction: earlier prompt ids + earlier sampled
ids + the end-of-turn tokens the model did not sample + the re-rendered suffix tokenized alone."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch

from localoai.episodes import Trajectory, Turn, group_advantages, to_dataset, to_tensors, token_versions, write_jsonl


def chat(ep: Any, server: Any, messages: list[dict[str, Any]], **kwargs: Any) -> Any:
    kwargs.setdefault("max_tokens", 6)
    kwargs.setdefault("extra_body", {"return_token_ids": True})
    return ep.client(max_retries=0).chat.completions.create(model=server.model, messages=messages, **kwargs)


def ending_with_eos(tiny: Any) -> dict[str, Any]:
    """Sampling options that make the model end its answer with `<|im_end|>` after 3 tokens."""
    im_end = tiny[1].convert_tokens_to_ids("<|im_end|>")
    return {"extra_body": {"return_token_ids": True, "min_tokens": 3}, "logit_bias": {str(im_end): 100}}


def encode(tiny: Any, text: str) -> list[int]:
    return list(tiny[1](text, add_special_tokens=False)["input_ids"])


def rendered(tiny: Any, messages: list[dict[str, Any]]) -> list[int]:
    text = tiny[1].apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return encode(tiny, text)


@pytest.mark.parametrize("ends_with_eos", [True, False], ids=["eos", "length"])
def test_a_turn_that_extends_the_last_is_spliced_token_exact(server: Any, tiny: Any, ends_with_eos: bool) -> None:
    options = ending_with_eos(tiny) if ends_with_eos else {}
    with server.episode() as ep:
        messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello"}]
        first = chat(ep, server, messages, seed=1, **options)
        sampled = first.choices[0].model_extra["token_ids"]
        assert (sampled[-1] == tiny[1].convert_tokens_to_ids("<|im_end|>")) == ends_with_eos
        messages += [first.choices[0].message.model_dump(exclude_none=True), {"role": "user", "content": "again"}]
        second = chat(ep, server, messages, seed=2)
        trajectory = ep.trajectory()
    tail = "\n" if ends_with_eos else "<|im_end|>\n"
    expected = (first.model_extra["prompt_token_ids"] + sampled
                + encode(tiny, tail + "<|im_start|>user\nagain<|im_end|>\n<|im_start|>assistant\n"))
    assert second.model_extra["prompt_token_ids"] == expected
    turns = trajectory.turns
    assert [turn.record_id for turn in turns] == [first.id, second.id]
    assert turns[0].ledger is None and turns[0].rendered_extends_previous is None
    report = turns[1].ledger
    assert report["extends"] == first.id and report["sample"] == 0 and report["spliced"] is True
    # The report compares what plain re-rendering would have given with the earlier turn's exact ids.
    again = rendered(tiny, messages)
    exact = first.model_extra["prompt_token_ids"] + sampled
    diverges = next((i for i, (a, b) in enumerate(zip(again, exact)) if a != b), None)
    assert report["divergence"] == diverges and turns[1].divergence == diverges
    assert turns[1].rendered_extends_previous is (diverges is None)
    if diverges is not None:
        assert report["rendered_token_ids"] == again
    # The stored prompt text is the spliced ids, decoded.
    record = server.store.get(second.id)
    assert record.prompt_text == tiny[1].decode(expected, skip_special_tokens=False)


def test_the_ledger_off_keeps_the_rendered_prompt_and_still_reports(server: Any, tiny: Any) -> None:
    with server.episode(token_ledger=False) as ep:
        messages = [{"role": "user", "content": "hello"}]
        first = chat(ep, server, messages, seed=5)
        messages += [first.choices[0].message.model_dump(exclude_none=True), {"role": "user", "content": "more"}]
        second = chat(ep, server, messages, seed=6)
        report = ep.trajectory().turns[1].ledger
    assert second.model_extra["prompt_token_ids"] == rendered(tiny, messages)
    assert report["spliced"] is False and report["reason"] == "token ledger off" and report["extends"] == first.id


def test_the_matching_sample_and_branches(server: Any, tiny: Any) -> None:
    with server.episode() as ep:
        messages = [{"role": "user", "content": "pick one"}]
        first = chat(ep, server, messages, n=3, seed=7, temperature=1.0)
        texts = [choice.message.content for choice in first.choices]
        if len(set(texts)) < 3:
            pytest.skip("two samples came out equal; the sample index is then ambiguous")
        branches = []
        for index in (2, 0):  # two continuations of one turn, from different samples
            history = messages + [first.choices[index].message.model_dump(exclude_none=True),
                                  {"role": "user", "content": f"branch {index}"}]
            branches.append(chat(ep, server, history, seed=index))
        trajectory = ep.trajectory()
    assert [turn.sample for turn in trajectory.turns[:3]] == [0, 1, 2]
    for reply, index in zip(branches, (2, 0)):
        turn = next(turn for turn in trajectory.turns if turn.record_id == reply.id)
        assert turn.ledger["sample"] == index
        exact = first.model_extra["prompt_token_ids"] + first.choices[index].model_extra["token_ids"]
        assert reply.model_extra["prompt_token_ids"][: len(exact)] == exact
    with pytest.raises(ValueError, match="n > 1"):
        trajectory.sequence()


def test_a_different_history_is_not_spliced(server: Any, tiny: Any) -> None:
    with server.episode() as ep:
        first = chat(ep, server, [{"role": "user", "content": "hello"}], seed=1)
        edited = {"role": "assistant", "content": (first.choices[0].message.content or "") + " (edited)"}
        messages = [{"role": "user", "content": "hello"}, edited, {"role": "user", "content": "next"}]
        second = chat(ep, server, messages, seed=2)
        assert ep.trajectory().turns[1].ledger is None
    assert second.model_extra["prompt_token_ids"] == rendered(tiny, messages)


def test_a_different_rendering_context_is_not_spliced(server: Any, tiny: Any) -> None:
    """Offering tools changes the rendered system turn: the earlier turn's tokens are no longer its prefix."""
    tool = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object", "properties": {}}}}
    with server.episode() as ep:
        first = chat(ep, server, [{"role": "user", "content": "hello"}], seed=1)
        messages = [{"role": "user", "content": "hello"}, first.choices[0].message.model_dump(exclude_none=True),
                    {"role": "user", "content": "next"}]
        chat(ep, server, messages, seed=2, tools=[tool])
        assert ep.trajectory().turns[1].ledger is None


def test_responses_chains_are_spliced(server: Any, tiny: Any) -> None:
    with server.episode() as ep:
        client = ep.client(max_retries=0)
        first = client.responses.create(model=server.model, input="hello", max_output_tokens=5)
        second = client.responses.create(model=server.model, input="and then?", previous_response_id=first.id,
                                         max_output_tokens=5)
        trajectory = ep.trajectory()
    earlier, later = trajectory.turns
    assert (earlier.record_id, later.record_id) == (first.id, second.id)
    assert later.ledger["extends"] == first.id and later.ledger["spliced"] is True
    assert later.prompt_token_ids[: len(earlier.input_ids)] == earlier.input_ids
    assert later.prompt_token_ids[len(earlier.input_ids):] == encode(
        tiny, ("<|im_end|>\n" if earlier.completion_token_ids[-1] != tiny[1].eos_token_id else "\n")
        + "<|im_start|>user\nand then?<|im_end|>\n<|im_start|>assistant\n")
    row = trajectory.sequence()
    assert row.input_ids == later.input_ids and sum(row.loss_mask) == len(earlier.logprobs) + len(later.logprobs)


def test_exports(server: Any, tiny: Any, tmp_path: Path) -> None:
    with server.group(n=2) as group:
        for number, ep in enumerate(group):
            messages = [{"role": "user", "content": "hi"}]
            first = chat(ep, server, messages, seed=number)
            messages += [first.choices[0].message.model_dump(exclude_none=True), {"role": "user", "content": "ok"}]
            chat(ep, server, messages, seed=10 + number)
            ep.reward = float(number)
        trajectories = group.trajectories()
    solo = server.episode()
    chat(solo, server, [{"role": "user", "content": "alone"}], seed=3)
    trajectories.append(solo.trajectory())  # no group, no reward

    per_turn = to_tensors(trajectories, pad_token_id=tiny[1].pad_token_id)
    turns = [turn for trajectory in trajectories for turn in trajectory.turns]
    assert per_turn["input_ids"].shape == (5, max(len(turn.input_ids) for turn in turns))
    for row, turn in enumerate(turns):
        width = len(turn.input_ids)
        assert per_turn["input_ids"][row, :width].tolist() == turn.input_ids
        assert per_turn["attention_mask"][row].sum() == width
        assert per_turn["loss_mask"][row].tolist() == turn.loss_mask + [0.0] * (per_turn["loss_mask"].shape[1] - width)
        sampled = per_turn["loss_mask"][row].bool()
        assert per_turn["old_logprobs"][row][sampled].tolist() == pytest.approx(turn.logprobs)
        assert (per_turn["policy_versions"][row][sampled] == 0).all()
        assert (per_turn["policy_versions"][row][~sampled] == -1).all()
    assert per_turn["rewards"][:4].tolist() == [0.0, 0.0, 1.0, 1.0] and math.isnan(per_turn["rewards"][4])
    assert per_turn["group_index"].tolist() == [0, 0, 0, 0, -1]
    assert per_turn["record_ids"] == [[turn.record_id] for turn in turns]

    per_episode = to_tensors(trajectories, per="episode")
    assert per_episode["input_ids"].shape[0] == 3
    for row, trajectory in enumerate(trajectories):
        merged = trajectory.sequence()
        assert merged.input_ids == trajectory.turns[-1].input_ids
        assert per_episode["loss_mask"][row].sum() == sum(len(turn.completion_token_ids) for turn in trajectory.turns)
        assert per_episode["episode_ids"][row] == trajectory.episode_id

    path = tmp_path / "trajectories.jsonl"
    assert write_jsonl(trajectories, path) == 3
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [Trajectory(**{**line, "turns": [Turn(**turn) for turn in line["turns"]]}) for line in lines] == trajectories


def test_to_dataset(server: Any) -> None:
    pytest.importorskip("datasets")
    ep = server.episode()
    chat(ep, server, [{"role": "user", "content": "hi"}], seed=1)
    ep.reward = 1.0
    dataset = to_dataset([ep.trajectory()])
    assert dataset.num_rows == 1 and dataset[0]["reward"] == 1.0
    assert dataset[0]["input_ids"] == ep.trajectory().turns[0].input_ids


def test_group_advantages() -> None:
    rewards = torch.tensor([1.0, 3.0, 5.0, 5.0, 2.0])
    groups = torch.tensor([0, 0, 1, 1, -1])
    advantages = group_advantages(rewards, groups)
    assert advantages[:2].tolist() == pytest.approx([-1.0, 1.0], abs=1e-4)
    assert advantages[2:4].tolist() == [0.0, 0.0] and advantages[4] == 2.0


def test_token_versions_read_spans_and_fall_back() -> None:
    assert token_versions({"completion_token_ids": [1, 2, 3]}, 3, 4) == [4, 4, 4]
    assert token_versions({"policy_versions": [[0, 1], [2, 2]]}, 4, 9) == [1, 1, 2, 2]
