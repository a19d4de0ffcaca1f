"""A tiny model trained in seconds to act as a tool-using agent, for end-to-end tests.

Random weights never emit a tool call, so tool-calling paths would go untested. This trains
the tiny Qwen2-style model on one two-turn episode: asked about the weather it calls
`get_weather` (Hermes markup, as its chat template teaches), and after the tool result it
answers in words. Loss is on the assistant's tokens only; greedy decoding then reproduces them.
"""

from __future__ import annotations

import json
from typing import Any

WEATHER_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
QUESTION = "What is the weather in paris?"
TOOL_CALL_TEXT = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "paris"}}\n</tool_call>'
TOOL_RESULT = json.dumps({"city": "paris", "celsius": 21})
ANSWER = "It is 21 celsius in paris."


def episode(call_id: str = "call_0") -> list[dict[str, Any]]:
    """The conversation the model is trained on, up to its final answer."""
    return [
        {"role": "user", "content": QUESTION},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": call_id, "type": "function",
             "function": {"name": "get_weather", "arguments": json.dumps({"city": "paris"})}}]},
        {"role": "tool", "tool_call_id": call_id, "content": TOOL_RESULT},
    ]


def train_tool_caller(steps: int = 150, seed: int = 0) -> tuple[Any, Any]:
    """Return (model, tokenizer): greedy decoding calls the tool, then answers after its result."""
    import torch

    from localoai.testing.tiny import build_tiny_model

    model, tokenizer = build_tiny_model(hidden_size=64, num_layers=2, seed=seed)
    end = "<|im_end|>"
    turns = [(episode()[:1], TOOL_CALL_TEXT + end), (episode(), ANSWER + end)]
    examples = []
    for history, target in turns:
        prompt = tokenizer.apply_chat_template(history, tools=[WEATHER_TOOL], add_generation_prompt=True,
                                               tokenize=False)
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        target_ids = tokenizer(target, add_special_tokens=False)["input_ids"]
        ids = torch.tensor([prompt_ids + target_ids])
        labels = torch.tensor([[-100] * len(prompt_ids) + target_ids])
        examples.append((ids, labels))
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-3)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        for _ in range(steps):
            optimizer.zero_grad()
            loss = sum(model(input_ids=ids, labels=labels).loss for ids, labels in examples)
            loss.backward()
            optimizer.step()
    model.eval()
    return model, tokenizer
