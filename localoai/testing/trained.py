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


def train_assistant(
    turns: list[tuple[list[dict[str, Any]], str]], *, tools: list[dict[str, Any]] | None = None,
    steps: int = 80, seed: int = 0,
) -> tuple[Any, Any]:
    """Return (model, tokenizer) trained so that greedy decoding, after each turn's chat history
    (rendered with `tools`), writes that turn's text (e.g. Hermes tool-call markup) and ends.

    Turns of one episode share a long prompt prefix (the system turn with every tool's schema):
    it is run once per step without gradients and its KV cache reused by each turn, which makes
    training several times faster than running every turn whole."""
    import copy

    import torch

    from localoai.testing.tiny import build_tiny_model

    model, tokenizer = build_tiny_model(hidden_size=64, num_layers=2, seed=seed)
    examples = []
    for history, text in turns:
        prompt = tokenizer.apply_chat_template(history, tools=tools, add_generation_prompt=True, tokenize=False)
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        target_ids = tokenizer(text + "<|im_end|>", add_special_tokens=False)["input_ids"]
        examples.append((prompt_ids + target_ids, [-100] * len(prompt_ids) + target_ids))
    shared = min(len(prompt) - 1 for prompt, _ in examples)  # at least one prompt token left per turn
    while any(ids[:shared] != examples[0][0][:shared] for ids, _ in examples):
        shared -= 1
    prefix = torch.tensor([examples[0][0][:shared]])
    rests = [(torch.tensor([ids[shared:]]), torch.tensor([labels[shared:]])) for ids, labels in examples]
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-3)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        for _ in range(steps):
            optimizer.zero_grad()
            with torch.no_grad():
                cache = model(input_ids=prefix, use_cache=True).past_key_values
            loss = sum(model(input_ids=ids, labels=labels, past_key_values=copy.deepcopy(cache)).loss
                       for ids, labels in rests)
            loss.backward()
            optimizer.step()
    model.eval()
    return model, tokenizer
