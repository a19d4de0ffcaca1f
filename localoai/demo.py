"""The demo behind `python -m localoai demo`: a tiny local model, served and driven with the openai SDK.

It needs no GPU and no model hub. The model's weights are random, so what it says is noise;
what the demo shows is the plumbing: chat, streaming, a tool-using exchange, exact token ids,
and the stored token-exact trace of a generation.
"""

from __future__ import annotations

import json
import time
from typing import Any

from localoai.server import Server, start
from localoai.testing import build_tiny_model

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def _say(title: str, body: Any = "") -> None:
    print(f"\n== {title}")
    if isinstance(body, dict):
        for key, value in body.items():
            print(f"  {key}: {value!r}" if isinstance(value, str) else f"  {key}: {value}")
    elif body != "":
        print(body if isinstance(body, str) else json.dumps(body))


def run_demo(port: int | None = None, keep_running: bool = False) -> Server:
    started = time.perf_counter()
    model, tokenizer = build_tiny_model(hidden_size=128, num_layers=2)
    server = start(model, tokenizer, port=port, store=":memory:")
    _say("server", f"{server!r}\nbuilt and started in {time.perf_counter() - started:.1f}s "
                   f"(a random-weight model: its words are noise, the plumbing is real)")
    client = server.client()

    models = client.models.list()
    _say("GET /v1/models", [m.id for m in models.data])

    reply = client.chat.completions.create(
        model=server.model,
        messages=[{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Say hello."}],
        max_tokens=12,
        seed=7,
        extra_body={"return_token_ids": True},
    )
    choice = reply.choices[0]
    _say("chat completion", {
        "content": choice.message.content,
        "finish_reason": choice.finish_reason,
        "usage": reply.usage.model_dump() if reply.usage else None,
        "prompt_token_ids (first 12)": reply.model_extra["prompt_token_ids"][:12],
        "completion token_ids": choice.model_extra["token_ids"],
        "system_fingerprint": reply.system_fingerprint,
    })

    _say("streamed chat completion (one line per chunk)")
    stream = client.chat.completions.create(
        model=server.model,
        messages=[{"role": "user", "content": "Count to three."}],
        max_tokens=8,
        stream=True,
        stream_options={"include_usage": True},
    )
    for chunk in stream:
        if chunk.choices:
            print(f"  delta={chunk.choices[0].delta.content!r} finish={chunk.choices[0].finish_reason}")
        elif chunk.usage:
            print(f"  usage: {chunk.usage.completion_tokens} completion tokens")

    call_id = "call_demo_1"
    conversation: list[dict[str, Any]] = [
        {"role": "user", "content": "What's the weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": call_id, "type": "function",
             "function": {"name": "get_weather", "arguments": json.dumps({"city": "Paris"})}}]},
        {"role": "tool", "tool_call_id": call_id, "content": json.dumps({"city": "Paris", "celsius": 21})},
    ]
    answer = client.chat.completions.create(
        model=server.model, messages=conversation, tools=[WEATHER_TOOL], max_tokens=12, seed=7
    )
    rendered = client.post("/../tokenize", body={"messages": conversation, "tools": [WEATHER_TOOL]}, cast_to=dict)
    _say("tool-using exchange: the tool call and its result, rendered by the chat template", {
        "prompt tokens": rendered["count"],
        "model's answer after the tool result": answer.choices[0].message.content,
    })

    trace = server.store.get(reply.id)
    if trace is not None:
        _say("the stored trace of the first chat completion (every generation is kept)", {
            "status": trace.status,
            "prompt_text": trace.prompt_text,
            "completion_token_ids": trace.completions[0]["completion_token_ids"],
            "sampled-token logprobs": [round(v, 3) for v in trace.completions[0]["logprobs"]],
            "policy_version": trace.policy_version,
            "timings (s)": {k: round(v, 4) for k, v in trace.timings.items()},
        })
        _say("records in the store", server.store.count())

    _say("point any OpenAI client here", f"base_url={server.base_url}  model={server.model!r}  api_key=<anything>")
    if not keep_running:
        server.stop()
        _say("stopped", repr(server))
    return server
