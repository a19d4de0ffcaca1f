"""A small RL loop end to end on CPU (issue #5's "done when").

Rounds of concurrent two-turn agent episodes (a GRPO-style group) go through the `openai` SDK to a
tool-calling model; each gets a reward; the trajectories are exported; then, under
`server.pause()`, the exported ids are checked against what the client saw the model consume and
produce, a forward pass of the very weights that sampled them gives back the recorded logprobs,
the policy versions are the round's, and an optimizer step changes the weights for the next round.

Sampling is at temperature 1 with no filters, so the recorded logprobs are the model's own
distribution (see the README on which distribution logprobs come from). The forward pass runs over
each episode merged into ONE sequence: it only reproduces the second turn's logprobs if the token
ledger gave that turn exactly the first turn's tokens as its prompt.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import torch

from localoai.episodes import Trajectory, to_tensors
from localoai.testing import running_server
from localoai.testing.trained import QUESTION, TOOL_RESULT, WEATHER_TOOL, train_tool_caller

ROUNDS = 2
EPISODES = 4
BASELINE = 0.5
"""REINFORCE with a constant baseline: advantages never all vanish, so every step moves the weights."""


Seen = dict[str, tuple[list[int], list[int], list[dict[str, Any]]]]
"""Per completion id: the prompt and completion ids the client got back, and the messages it sent."""


async def run_agent(ep: Any, seen: Seen) -> str:
    """Ask, call the tool if the model asks for it (else insist), then take the answer."""
    client = ep.async_client(max_retries=0)
    messages: list[dict[str, Any]] = [{"role": "user", "content": QUESTION}]
    for turn in range(2):
        reply = await client.chat.completions.create(
            model="agent", messages=messages, tools=[WEATHER_TOOL], temperature=1.0, max_tokens=48,
            extra_body={"return_token_ids": True})
        choice = reply.choices[0]
        seen[reply.id] = (reply.model_extra["prompt_token_ids"], choice.model_extra["token_ids"], list(messages))
        messages.append(choice.message.model_dump(exclude_none=True))
        if turn == 0:
            if choice.message.tool_calls:
                messages.append({"role": "tool", "tool_call_id": choice.message.tool_calls[0].id,
                                 "content": TOOL_RESULT})
            else:
                messages.append({"role": "user", "content": "Use the get_weather tool."})
    return choice.message.content or ""


def reward(answer: str, trajectory: Trajectory) -> float:
    tokens = sum(len(turn.completion_token_ids) for turn in trajectory.turns)
    return float("21" in answer) - 0.01 * tokens


def sampled_logprobs(model: Any, batch: dict[str, Any]) -> torch.Tensor:
    """Each token's logprob under `model`, aligned as the export aligns them (position t: input_ids[t])."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float()
    logprobs = torch.log_softmax(logits[:, :-1], dim=-1)
    taken = logprobs.gather(-1, batch["input_ids"][:, 1:, None]).squeeze(-1)
    return torch.nn.functional.pad(taken, (1, 0))


def test_rl_loop_end_to_end() -> None:
    model, tokenizer = train_tool_caller()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    with running_server(model, tokenizer, name="agent") as server:
        for round_number in range(ROUNDS):
            assert server.policy_version == round_number
            group = server.group(n=EPISODES, round=str(round_number))
            seen: Seen = {}

            async def rollouts() -> list[str]:
                return await asyncio.gather(*(run_agent(ep, seen) for ep in group))

            answers = asyncio.run(rollouts())
            for ep, answer in zip(group, answers):
                ep.reward = reward(answer, ep.trajectory())
            trajectories = group.trajectories()
            assert [t.episode_id for t in trajectories] == [ep.id for ep in group]
            assert all(t.group == group.id and t.reward is not None for t in trajectories)

            # The exported ids are exactly what the client saw the model consume and produce, and
            # what the store holds; each second turn's prompt is the first turn's tokens, then more.
            for trajectory in trajectories:
                first, second = trajectory.turns
                for turn in (first, second):
                    assert (turn.prompt_token_ids, turn.completion_token_ids) == seen[turn.record_id][:2]
                    record = server.store.get(turn.record_id)
                    assert record.prompt_token_ids == turn.prompt_token_ids
                    assert record.completions[0]["completion_token_ids"] == turn.completion_token_ids
                assert second.ledger["extends"] == first.record_id and second.ledger["spliced"]
                assert second.prompt_token_ids[: len(first.input_ids)] == first.input_ids
                # The ledger reports where plain re-rendering would have left the sampled tokens (the
                # template writes the model's tool call without its newlines, for one).
                text = tokenizer.apply_chat_template(seen[second.record_id][2], tools=[WEATHER_TOOL],
                                                     add_generation_prompt=True, tokenize=False)
                rendered = tokenizer(text, add_special_tokens=False)["input_ids"]
                exact = first.input_ids
                diverges = next((i for i, (a, b) in enumerate(zip(rendered, exact)) if a != b), None)
                assert second.divergence == diverges and second.rendered_extends_previous is (diverges is None)

            batch = to_tensors(trajectories, per="episode", pad_token_id=tokenizer.pad_token_id)
            sampled = batch["loss_mask"].bool()
            assert int(sampled.sum()) == sum(len(turn.completion_token_ids)
                                             for trajectory in trajectories for turn in trajectory.turns)
            with server.pause():  # no generation reads the weights while they are checked and changed
                with torch.no_grad():
                    recomputed = sampled_logprobs(model, batch)
                torch.testing.assert_close(recomputed[sampled], batch["old_logprobs"][sampled],
                                           atol=1e-4, rtol=1e-4)
                assert (batch["policy_versions"][sampled] == round_number).all()
                assert (batch["policy_versions"][~sampled] == -1).all()

                before = [parameter.detach().clone() for parameter in model.parameters()]
                optimizer.zero_grad()
                advantages = (batch["rewards"] - BASELINE)[:, None]
                loss = -(advantages * sampled_logprobs(model, batch) * batch["loss_mask"]).sum() / sampled.sum()
                loss.backward()
                optimizer.step()
                assert any(not torch.equal(old, new) for old, new in zip(before, model.parameters()))
            assert server.policy_version == round_number + 1
            stored = server.store.episodes(group.id)
            assert [episode.reward for episode in stored] == pytest.approx(batch["rewards"].tolist())
