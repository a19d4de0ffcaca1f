"""Claude Code (`claude -p`, the real CLI from npm) against a live server, end to end, in CI.

A tiny model is trained on Claude Code's own captured prompt (`localoai.testing.claude_code`) to call
its `Bash` tool once and then answer; the test sees the whole loop through an episode URL: Claude
Code receives the call, runs it, sends the result back, prints the model's answer and exits 0, and
the episode holds both turns token-exact. Without the CLI it skips locally and fails in CI."""

from __future__ import annotations

import os
from typing import Any

import pytest

from localoai.testing import running_server
from localoai.testing.claude_code import (
    BASH_COMMAND,
    BASH_OUTPUT,
    FINAL_ANSWER,
    capture_request,
    claude_binary,
    claude_env,
    run_claude,
    train_claude_code_agent,
)

PROMPT = f"Run `{BASH_COMMAND}` and tell me what it printed."

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def claude_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    if claude_binary() is None:
        message = "the `claude` CLI is not installed (.ci/run installs @anthropic-ai/claude-code from npm)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    cwd, home = str(tmp_path_factory.mktemp("project")), str(tmp_path_factory.mktemp("home"))
    body = capture_request(PROMPT, cwd=cwd, home=home)  # the prompt names HOME and cwd: the same for both runs
    model, tokenizer = train_claude_code_agent(body)
    with running_server(model, tokenizer, name="tiny-agent", api_key="sk-claude-code") as server:
        env = claude_env(home, f"{server.url}/episodes/claude-code-1", api_key="sk-claude-code")
        done = run_claude(PROMPT, cwd=cwd, env=env)
        records = server.store.list(episode_id="claude-code-1", order="asc")  # the store's order: turn by turn
    return {"body": body, "done": done, "records": records}


def test_claude_code_completes_a_tool_using_turn(claude_run: dict[str, Any]) -> None:
    done = claude_run["done"]
    assert done.returncode == 0, f"claude exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    assert FINAL_ANSWER in done.stdout


def test_the_episode_holds_every_turn_token_exact(claude_run: dict[str, Any]) -> None:
    first, second = claude_run["records"]
    assert first.kind == second.kind == "message" and first.status == second.status == "completed"
    assert first.request["model"].startswith("claude-")  # Claude Code's own model name, served as is
    (call,) = first.output["content"]
    assert call["type"] == "tool_use" and call["name"] == "Bash" and call["input"]["command"] == BASH_COMMAND
    result = second.request["messages"][-1]["content"][0]
    assert result["type"] == "tool_result" and result["tool_use_id"] == call["id"]
    assert BASH_OUTPUT in str(result["content"])  # Claude Code ran the command
    assert second.output["content"][0]["text"] == FINAL_ANSWER and second.output["stop_reason"] == "end_turn"
    assert second.ledger["extends"] == first.id and second.ledger["spliced"]
    head = first.prompt_token_ids + first.completions[0]["completion_token_ids"]
    assert second.prompt_token_ids[:len(head)] == head
