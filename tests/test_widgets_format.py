"""The inspector's pure logic: conversations, tool calls, reasoning, colours, entropy, tokens, trees."""

from __future__ import annotations

import json
import math

from localoai.store import GenerationRecord
from localoai.widgets import render
from localoai.widgets.format import conversation, pretty_arguments, summarize, tool_names
from localoai.widgets.tokens import (
    completion_tokens,
    entropy,
    logprob_color,
    policy_version_at,
    prefix_tree,
    prompt_tokens,
    top_alternatives,
)

CALL = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"paris"}'}}


def chat_record(**fields: object) -> GenerationRecord:
    base: dict = {
        "id": "chatcmpl-1",
        "kind": "chat.completion",
        "model": "m",
        "request": {"messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "Weather in "}, {"type": "text", "text": "paris?"}]},
        ]},
        "prompt_token_ids": [1, 2, 3],
        "completions": [{"completion_token_ids": [7, 8], "logprobs": [-0.1, -2.0], "text": "x",
                         "finish_reason": "tool_calls"}],
        "output": {"choices": [{"index": 0, "message": {"role": "assistant", "content": None,
                                                        "reasoning_content": "They want weather.",
                                                        "tool_calls": [CALL]}}]},
    }
    base.update(fields)
    return GenerationRecord(**base)


def response_record(**fields: object) -> GenerationRecord:
    base: dict = {
        "id": "resp_2",
        "kind": "response",
        "model": "m",
        "request": {"instructions": "Use tools.", "input_items": [
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Weather?"}]},
            {"type": "function_call", "name": "get_weather", "arguments": '{"city": "rome"}', "call_id": "call_0"},
            {"type": "function_call_output", "call_id": "call_0", "output": '{"celsius": 20}'},
        ]},
        "output": {"output": [
            {"type": "reasoning", "summary": [{"type": "summary_text", "text": "Now paris."}]},
            {"type": "function_call", "name": "get_weather", "arguments": '{"city":"paris"}', "call_id": "call_9"},
            {"type": "message", "role": "assistant", "content": [
                {"type": "output_text", "text": "Checking.", "logprobs": [
                    {"token": "Check", "logprob": -0.5, "top_logprobs": [{"token": "Check", "logprob": -0.5},
                                                                         {"token": "Hmm", "logprob": -1.2}]}]}]},
        ]},
        "previous_response_id": "resp_1",
    }
    base.update(fields)
    return GenerationRecord(**base)


def test_chat_conversation_has_every_turn_with_reasoning_and_pretty_tool_arguments() -> None:
    turns = conversation(chat_record())
    assert [t.role for t in turns] == ["system", "user", "assistant"]
    assert turns[1].text == "Weather in paris?"
    answer = turns[-1]
    assert answer.generated and answer.reasoning == "They want weather."
    assert answer.tool_calls[0].name == "get_weather"
    assert answer.tool_calls[0].arguments == json.dumps({"city": "paris"}, indent=2)
    assert answer.tool_calls[0].call_id == "call_1"


def test_chat_tool_result_turn_keeps_its_call_id() -> None:
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "tool_calls": [CALL]},
                {"role": "tool", "tool_call_id": "call_1", "content": "21C"}]
    turns = conversation(chat_record(request={"messages": messages}))
    assert turns[2].role == "tool" and turns[2].tool_call_id == "call_1" and turns[2].text == "21C"
    assert not turns[1].generated and turns[1].tool_calls[0].name == "get_weather"


def test_response_conversation_merges_reasoning_calls_and_text_into_one_assistant_turn() -> None:
    turns = conversation(response_record())
    assert [t.role for t in turns] == ["system", "user", "assistant", "tool", "assistant"]
    assert turns[2].tool_calls[0].arguments == json.dumps({"city": "rome"}, indent=2)
    generated = turns[-1]
    assert generated.generated and generated.reasoning == "Now paris." and generated.text == "Checking."
    assert [c.call_id for c in generated.tool_calls] == ["call_9"]


def test_response_with_a_plain_string_input_and_no_resolved_items() -> None:
    record = response_record(request={"input": "hello"}, output={"output": []})
    assert [(t.role, t.text) for t in conversation(record)] == [("user", "hello")]


def test_failed_chat_without_output_shows_the_error_in_its_preview() -> None:
    record = chat_record(status="failed", output={}, completions=[], error={"message": "boom"})
    assert summarize(record).preview.endswith("error: boom")


def test_tool_names_are_the_calls_this_generation_made_not_the_history() -> None:
    assert tool_names(chat_record()) == ("get_weather",)
    messages = [{"role": "assistant", "tool_calls": [CALL]}]
    plain = chat_record(request={"messages": messages},
                        output={"choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}}]})
    assert tool_names(plain) == ()


def test_pretty_arguments_leaves_broken_json_as_written() -> None:
    assert pretty_arguments('{"a": ') == '{"a": '
    assert pretty_arguments({"a": 1}) == '{\n  "a": 1\n}'


def test_summary_row_and_text_completion() -> None:
    record = GenerationRecord(id="cmpl-1", kind="text_completion", model="m", prompt_text="Once upon",
                              completions=[{"completion_token_ids": [1], "logprobs": [], "text": " a time",
                                            "finish_reason": "length"}], episode_id="ep7", policy_version=3)
    row = summarize(record)
    assert row.preview == "Once upon → a time"
    assert row.episode_id == "ep7" and row.policy_version == 3
    label = render.list_labels([row])[0]
    assert label[1] == "cmpl-1" and "completions" in label[0] and "v3" in label[0]


def test_logprob_colour_runs_from_red_to_green() -> None:
    assert logprob_color(0.0) == "hsl(120, 75%, 82%)"
    assert logprob_color(-50.0) == "hsl(0, 75%, 82%)"
    assert logprob_color(math.log(0.5)) == "hsl(60, 75%, 82%)"
    assert logprob_color(None) == "hsl(0, 0%, 90%)"
    assert logprob_color(0.3) == "hsl(120, 75%, 82%)"  # rounding noise above 0 is still "certain"


def test_entropy_over_top_alternatives_counts_the_missing_mass() -> None:
    assert entropy([0.0]) == 0.0
    assert math.isclose(entropy([math.log(0.5), math.log(0.5)]), math.log(2))
    assert math.isclose(entropy([math.log(0.5)]), math.log(2))  # 0.5 shown, 0.5 elsewhere
    assert entropy([]) is None and entropy([-9999.0]) is None


def test_policy_versions_per_token_span() -> None:
    spans = [[0, 3], [4, 5]]
    assert [policy_version_at(spans, i, 0) for i in range(6)] == [3, 3, 3, 3, 5, 5]
    assert policy_version_at(None, 2, 7) == 7


def test_completion_tokens_carry_logprobs_alternatives_and_policy_versions() -> None:
    record = chat_record()
    record.completions[0]["policy_versions"] = [[0, 1], [1, 2]]  # type: ignore[typeddict-unknown-key]
    record.output["choices"][0]["logprobs"] = {"content": [
        {"token": "a", "logprob": -0.1,
         "top_logprobs": [{"token": "a", "logprob": -0.1}, {"token": "b", "logprob": -2.4}]},
        {"token": "c", "logprob": -2.0, "top_logprobs": []},
    ]}
    tokens = completion_tokens(record, ["A", "C"])
    assert [(t.text, t.logprob, t.policy_version, t.trainable) for t in tokens] == [
        ("A", -0.1, 1, True), ("C", -2.0, 2, True)]
    assert tokens[0].top == [("a", -0.1), ("b", -2.4)] and tokens[0].entropy is not None
    html = render.token_span(tokens[0])
    assert "logprob -0.1000" in html and "&#x27;b&#x27; -2.400" in html and "policy v1" in html


def test_top_alternatives_of_responses_and_completions() -> None:
    assert top_alternatives(response_record()) == [[("Check", -0.5), ("Hmm", -1.2)]]
    record = GenerationRecord(id="cmpl-2", kind="text_completion", model="m",
                              output={"choices": [{"index": 0,
                                                   "logprobs": {"top_logprobs": [{"x": -1.0, "y": -0.2}]}}]})
    assert top_alternatives(record) == [[("y", -0.2), ("x", -1.0)]]


def test_prompt_tokens_mark_resent_samples_and_where_history_diverged() -> None:
    earlier = chat_record(prompt_token_ids=[1, 2], completions=[
        {"completion_token_ids": [5, 6, 7], "logprobs": [], "text": "", "finish_reason": "stop"}])
    same = chat_record(prompt_token_ids=[1, 2, 5, 6, 7, 9, 9])
    tokens = prompt_tokens(same, None, earlier)
    assert [t.trainable for t in tokens] == [False, False, True, True, True, False, False]
    assert not any(t.diverged for t in tokens)
    retokenized = chat_record(prompt_token_ids=[1, 2, 5, 8, 7, 9])
    tokens = prompt_tokens(retokenized, None, earlier)
    assert [t.trainable for t in tokens] == [False, False, True, False, False, False]
    assert [t.diverged for t in tokens] == [False, False, False, True, False, False]
    view = render.token_view(retokenized, [], tokens, previous_id="chatcmpl-0")
    assert "differs from the sampled tokens at prompt token 3" in view


def test_prefix_tree_branches_where_sequences_differ() -> None:
    tree = prefix_tree({"a": [1, 2, 3, 4], "b": [1, 2, 3, 5], "c": [1, 9]})
    assert tree.length == 1
    lengths = sorted(child.length for child in tree.children)
    assert lengths == [2, 3]
    deep = next(child for child in tree.children if child.length == 3)
    assert sorted(leaf for child in deep.children for leaf in child.leaves) == ["a", "b"]
    assert prefix_tree({}).length == 0


def test_episode_and_raw_views_show_calls_reasoning_chain_and_reward() -> None:
    record = response_record(episode_id="ep1")
    html = render.episode_view(record, chain=[response_record(id="resp_1"), record], reward=0.75)
    assert "get_weather" in html and "&quot;city&quot;: &quot;paris&quot;" in html
    assert "<details><summary>reasoning" in html  # collapsed
    assert "resp_1</code> → <code>resp_2" in html and "reward 0.75" in html
    raw = render.raw_view(record)
    assert "rendered prompt" in raw and "timings" in raw and "sampling" in raw


def test_group_view_puts_episodes_side_by_side_with_rewards() -> None:
    a, b = chat_record(id="c1", episode_id="e1"), chat_record(id="c2", episode_id="e2")
    html = render.group_view("g", {"e1": [a], "e2": [b]}, {"e1": 1.0, "e2": 0.0},
                             prefix_tree({"e1": [1, 2], "e2": [1, 3]}))
    assert html.count("class='col'") == 2 and "reward 1" in html and "reward 0" in html
    assert "branching" in html
