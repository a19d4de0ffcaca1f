"""The real Codex CLI (`codex exec`, npm `@openai/codex`) against a live server, end to end.

Codex's real prompt (its instructions, environment context and ~15 tool schemas) is long, so the
test first captures the exact request Codex sends (a loopback endpoint records the body and
answers 400), trains a tokenizer on that request's rendered prompt (BPE then compresses it to few
tokens) and a tiny model on it: after the user's question it calls Codex's shell tool
(`exec_command`), after the tool's output it answers. Then `codex exec` runs against the server
inside an episode URL: Codex receives the call, runs it, sends the output back, prints the answer
and exits 0; the episode's trajectory holds both turns, the second spliced onto the first.

Deterministic within one run: the same CODEX_HOME, working directory and date give the same
prompt. Without the `codex` binary the test skips locally and fails in CI (`CI` set).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from localoai.handlers.responses.items import chat_messages, chat_tools, stored_items
from localoai.protocol.offered_tools import offered_tools
from localoai.protocol.responses import ResponseCreateRequest
from localoai.testing import build_tiny_model, build_tokenizer, running_server
from localoai.testing.trained import train_assistant

QUESTION = "Say the word in note.txt."
COMMAND = "cat note.txt"
WORD = "pelican"
ANSWER = f"The word is {WORD}."
SHELL_TOOL = "exec_command"  # Codex 0.17x's shell tool (unified exec)
CODEX_TIMEOUT = 180
pytestmark = pytest.mark.timeout(600)  # capture, training and two codex runs: about a minute on an idle CI machine


def codex_binary() -> str:
    found = shutil.which("codex")
    if found is None:
        message = "the Codex CLI is not installed (npm install -g @openai/codex; .ci/run installs it)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return found


def write_config(home: Path, base_url: str) -> None:
    """A custom provider on `base_url`, Codex's defaults otherwise (no network besides the server)."""
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text(
        'model = "tiny"\n'
        'model_provider = "localoai"\n'
        "check_for_update_on_startup = false\n"
        "[analytics]\nenabled = false\n"
        "[model_providers.localoai]\n"
        'name = "localoai"\n'
        f'base_url = "{base_url}"\n'
        'wire_api = "responses"\n'
        'env_key = "LOCALOAI_API_KEY"\n'
    )


def run_codex(binary: str, home: Path, work: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CODEX_HOME": str(home), "LOCALOAI_API_KEY": "sk-local", "NO_COLOR": "1"}
    return subprocess.run([binary, "exec", "--skip-git-repo-check", "--sandbox", "read-only", QUESTION],
                          cwd=work, env=env, capture_output=True, text=True, timeout=CODEX_TIMEOUT,
                          stdin=subprocess.DEVNULL)


def capture_request(binary: str, home: Path, work: Path) -> dict[str, Any]:
    """The body of Codex's first `POST /responses`, recorded by a loopback endpoint that refuses it."""
    bodies: list[dict[str, Any]] = []

    class Recorder(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            bodies.append(json.loads(self.rfile.read(int(self.headers.get("content-length", 0)))))
            self.send_response(400)
            self.send_header("content-type", "application/json")
            self.end_headers()
            self.wfile.write(b'{"error": {"message": "captured", "type": "invalid_request_error"}}')

        def log_message(self, *args: Any) -> None:
            pass

    endpoint = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    thread = threading.Thread(target=endpoint.serve_forever, daemon=True)
    thread.start()
    try:
        write_config(home, f"http://127.0.0.1:{endpoint.server_address[1]}/v1")
        run_codex(binary, home, work)
    finally:
        endpoint.shutdown()
        endpoint.server_close()
    assert bodies, "codex sent no request"
    return bodies[0]


def offered(body: dict[str, Any]) -> tuple[list[dict[str, Any]], list[Any]]:
    """The chat messages and function tools the server renders Codex's request as."""
    request = ResponseCreateRequest.model_validate(body)
    tools = chat_tools(offered_tools(request, {}).tools) or []
    messages = [message.model_dump(exclude_none=True) for message in
                chat_messages(request.instructions, stored_items(request.input))]
    return messages, [tool.model_dump(mode="json", exclude_none=True) for tool in tools]


def tool_outputs() -> list[str]:
    """Outputs of `cat note.txt` in the shape Codex 0.171 sends them back (`exec_command`): a random
    chunk id and wall time, and whatever the shell prints first (here pyenv's warnings, or nothing)."""
    noise = "pyenv: cannot rehash: /root/.pyenv/shims isn't writable\n"
    variants = [("797768", "0.9312", 30, noise * 2), ("1e0f2a", "0.0021", 2, ""), ("a3c91b", "0.4127", 30, noise * 2),
                ("5d0e77", "0.0108", 2, ""), ("f08b2c", "1.2209", 16, noise), ("29e4d1", "0.0530", 2, "")]
    return [f"Chunk ID: {chunk}\nWall time: {seconds} seconds\nProcess exited with code 0\n"
            f"Original token count: {count}\nOutput:\n{before}{WORD}\n" for chunk, seconds, count, before in variants]


def call_markup(arguments: dict[str, Any]) -> str:
    return f'<tool_call>\n{json.dumps({"name": SHELL_TOOL, "arguments": arguments})}\n</tool_call>'


@pytest.fixture(scope="module")
def codex_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    binary = codex_binary()
    root = tmp_path_factory.mktemp("codex")
    home, work = root / "codex-home", root / "work"
    work.mkdir()
    (work / "note.txt").write_text(f"{WORD}\n")
    body = capture_request(binary, home, work)
    messages, tools = offered(body)
    call = {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_0", "type": "function", "function": {"name": SHELL_TOOL,
                                                          "arguments": json.dumps({"cmd": COMMAND})}}]}
    # Codex's output of the tool varies (a random chunk id, the wall time, whatever the shell prints
    # first): the answer is trained after several such outputs, so that it follows the real one
    results = [{"role": "tool", "tool_call_id": "call_0", "content": output} for output in tool_outputs()]
    turns = [(messages, call_markup({"cmd": COMMAND})),
             *[(messages + [call, result], ANSWER) for result in results]]
    plain = build_tokenizer()
    # the prompt and what the model writes: each becomes a few tokens, learnt in a few steps
    corpus = [plain.apply_chat_template(messages + [call, results[0]], tools=tools, tokenize=False),
              *[target + "<|im_end|>" for _, target in turns[:2]]]
    # merges across words, as many as the text has: Codex's ~40,000-character prompt becomes ~300 tokens
    # Codex sends no temperature, so the server samples at 1.0: every target token made at least
    # 0.99999 likely, so that sampling writes the targets as greedy decoding would
    model, tokenizer = train_assistant(turns, tools=tools, steps=300,
                                       until_probability=0.99999, model_and_tokenizer=build_tiny_model(
        corpus=corpus, split_words=False, vocab_size=16384, max_position_embeddings=8192))
    with running_server(model, tokenizer, name="tiny") as server:
        with server.episode() as episode:
            write_config(home, episode.base_url)
            completed = run_codex(binary, home, work)
            yield {"completed": completed, "server": server, "episode": episode, "tokenizer": tokenizer,
                   "messages": messages, "tools": tools, "records": list(server.store.iterate(episode_id=episode.id))}


def test_codex_exec_runs_the_shell_tool_and_answers(codex_run: dict[str, Any]) -> None:
    completed = codex_run["completed"]
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert ANSWER in completed.stdout, (completed.stdout[-2000:], completed.stderr[-2000:])
    assert COMMAND in completed.stderr + completed.stdout  # codex shows the command it ran
    first, second = codex_run["records"][:2]  # iterate gives the store's order: turn by turn
    [call] = [item for item in first.output["output"] if item["type"] == "function_call"]
    assert call["name"] == SHELL_TOOL and json.loads(call["arguments"]) == {"cmd": COMMAND}
    assert [item["type"] for item in second.output["output"]] == ["message"]
    answered = [item for item in second.request["input_items"] if item["type"] == "function_call_output"]
    assert [item["call_id"] for item in answered] == [call["call_id"]]
    assert WORD in json.dumps(answered[0]["output"])  # codex ran it and sent its output back


def test_the_episode_holds_every_turn_token_exact(codex_run: dict[str, Any]) -> None:
    records = codex_run["records"]
    first, second = records[:2]
    tokenizer = codex_run["tokenizer"]
    text = tokenizer.apply_chat_template(codex_run["messages"], tools=codex_run["tools"], tokenize=False,
                                         add_generation_prompt=True)
    assert first.prompt_text == text  # the captured prompt is the one codex sent again
    assert first.prompt_token_ids == tokenizer(text, add_special_tokens=False)["input_ids"]
    sampled = first.completions[0]["completion_token_ids"]
    assert second.prompt_token_ids[:len(first.prompt_token_ids) + len(sampled)] == \
        first.prompt_token_ids + sampled  # the second turn extends the first, token for token
    assert second.ledger["spliced"] and second.ledger["extends"] == first.id
    trajectory = codex_run["episode"].trajectory()
    assert [turn.completion_token_ids for turn in trajectory.turns] == \
        [record.completions[0]["completion_token_ids"] for record in records]
