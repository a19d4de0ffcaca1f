"""Claude Code (`claude -p`) against localoai, end to end, on a tiny model trained in seconds.

Claude Code's real prompt (system text, ~12 tool schemas, environment notes) is ~50 kB: a tiny
BPE tokenizer would make it 30k+ tokens. So the prompt is captured first (`capture_request`: one
`claude -p` run against a stand-in endpoint that answers one canned message), each long stretch of
its rendering between markup tokens becomes a single added token, and the model is trained (`train_claude_code_agent`) on the
captured prompt to call Claude Code's `Bash` tool once and, after its result, to answer. The prompt is
deterministic for one HOME, one working directory, one user prompt and one day (it names them all), so
a real run with the same ones sends what was trained on.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

BASH_COMMAND = "echo localoai-ok"
BASH_OUTPUT = "localoai-ok"
FINAL_ANSWER = "The command printed localoai-ok."
_CALL_INPUT = {"command": BASH_COMMAND, "description": "Print a marker"}


def claude_binary() -> str | None:
    return shutil.which("claude")


def claude_env(home: str, base_url: str, api_key: str = "sk-localoai") -> dict[str, str]:
    """The environment of a non-interactive, offline Claude Code run: its own HOME, no telemetry,
    no auto-update, no nonessential traffic (there is no network)."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("ANTHROPIC_", "CLAUDE_"))}
    env.update(HOME=home, ANTHROPIC_BASE_URL=base_url, ANTHROPIC_API_KEY=api_key,
               CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC="1", DISABLE_AUTOUPDATER="1", DISABLE_TELEMETRY="1",
               DISABLE_ERROR_REPORTING="1", CLAUDE_CODE_DISABLE_TERMINAL_TITLE="1")
    return env


def run_claude(prompt: str, *, cwd: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """`claude -p PROMPT`, its Bash tool allowed (no permission prompt), at most two model turns."""
    binary = claude_binary()
    if binary is None:
        raise FileNotFoundError("the `claude` CLI is not on PATH (npm install -g @anthropic-ai/claude-code)")
    return subprocess.run([binary, "-p", prompt, "--allowedTools", "Bash", "--max-turns", "3"], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


class _Capture(BaseHTTPRequestHandler):
    bodies: list[dict[str, Any]]

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))) or b"{}")
        if self.path.split("?")[0].endswith("/count_tokens"):
            return self._send("application/json", json.dumps({"input_tokens": 1}).encode())
        self.bodies.append(body)
        message = {"id": "msg_capture", "type": "message", "role": "assistant", "model": body.get("model", ""),
                   "content": [{"type": "text", "text": "ok"}], "stop_reason": "end_turn", "stop_sequence": None,
                   "usage": {"input_tokens": 1, "output_tokens": 1}}
        if not body.get("stream"):
            return self._send("application/json", json.dumps(message).encode())
        events = [{"type": "message_start", "message": {**message, "content": [], "stop_reason": None}},
                  {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
                  {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "ok"}},
                  {"type": "content_block_stop", "index": 0},
                  {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                   "usage": {"output_tokens": 1}},
                  {"type": "message_stop"}]
        self._send("text/event-stream", b"".join(
            f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode() for event in events))

    def _send(self, content_type: str, data: bytes) -> None:
        self.send_response(200)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


def capture_request(prompt: str, *, cwd: str, home: str) -> dict[str, Any]:
    """The first `/v1/messages` body `claude -p PROMPT` sends, answered by a stand-in endpoint. Run the
    real session with the same `cwd` and `home`: the prompt names both."""
    handler = type("Capture", (_Capture,), {"bodies": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        done = run_claude(prompt, cwd=cwd, env=claude_env(home, f"http://127.0.0.1:{server.server_address[1]}"))
    finally:
        server.shutdown()
        server.server_close()
    if not handler.bodies:
        raise RuntimeError(f"claude sent no /v1/messages request (exit {done.returncode}): {done.stderr[-2000:]}")
    return handler.bodies[0]


def _history(body: dict[str, Any], tokenizer: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The chat messages and tools the server renders for an Anthropic request body."""
    from localoai.chat_template import template_messages
    from localoai.handlers.messages.content import ThinkingSigner, chat_request
    from localoai.protocol.messages import MessageCreateRequest

    request = MessageCreateRequest.model_validate_json(json.dumps(body))
    chat = chat_request(request, "model", tokenizer.chat_template, None, ThinkingSigner())
    tools = [tool.model_dump(exclude_none=True) for tool in chat.tools or []]
    return template_messages(chat.messages), tools


def train_claude_code_agent(body: dict[str, Any], *, steps: int = 80, seed: int = 0) -> tuple[Any, Any]:
    """Return (model, tokenizer): after the captured first request `body`, greedy decoding calls
    `Bash` with `BASH_COMMAND`; after the call's result (`BASH_OUTPUT`), it answers `FINAL_ANSWER`."""
    from localoai.testing.trained import _build, _train

    model, tokenizer = _build(seed)
    turn_two = {**body, "messages": [
        *body["messages"],
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_0", "name": "Bash", "input": _CALL_INPUT}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_0", "content": BASH_OUTPUT}]}]}
    first, tools = _history(body, tokenizer)
    second, _ = _history(turn_two, tokenizer)
    rendered = tokenizer.apply_chat_template(second, tools=tools, add_generation_prompt=True, tokenize=False)
    markup = [str(token) for token in tokenizer.all_special_tokens] + list(tokenizer.get_added_vocab())
    pieces = re.split("|".join(re.escape(token) for token in sorted(set(markup), key=len, reverse=True)), rendered)
    arguments = '{"name": "Bash", "arguments": ' + json.dumps(_CALL_INPUT) + '}'
    # Each long stretch between markup tokens (the system prompt, a tool list, a turn) becomes one token,
    # as do the answers: the prompt is a few dozen tokens, and a few seconds of training learn it.
    tokenizer.add_tokens(sorted({piece for piece in pieces if len(piece) >= 24}) + [arguments, FINAL_ANSWER])
    model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    model.config.max_position_embeddings = max(model.config.max_position_embeddings, 4096)
    call = f"<tool_call>{arguments}</tool_call>"
    # Claude Code samples at temperature 1: every target token made near certain (see `_train`)
    _train(model, tokenizer, [(first, call), (second, FINAL_ANSWER)], tools=tools, steps=steps, seed=seed,
           share_prefix=True, until_probability=0.99999)
    return model, tokenizer
