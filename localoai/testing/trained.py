"""A tiny model trained in seconds to act as a tool-using agent, for end-to-end tests.

Random weights never emit a tool call, so tool-calling paths would go untested. This trains
the tiny Qwen2-style model on one two-turn episode: asked about the weather it calls
`get_weather` (Hermes markup, as its chat template teaches), and after the tool result it
answers in words. Loss is on the assistant's tokens only; greedy decoding then reproduces them.
`train_reasoner` trains the same episode with a `<think>` block before each assistant turn.
"""

from __future__ import annotations

import json
from collections.abc import Callable
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


def train_tool_caller(steps: int = 150, seed: int = 0, *, num_heads: int = 4) -> tuple[Any, Any]:
    """Return (model, tokenizer): greedy decoding calls the tool, then answers after its result.
    `num_heads=2` gives a head dimension of 32, the least vLLM's CPU attention takes."""
    model, tokenizer = _build(seed, num_heads=num_heads)
    _train(model, tokenizer, [(episode()[:1], TOOL_CALL_TEXT), (episode(), ANSWER)], tools=[WEATHER_TOOL],
           steps=steps, seed=seed)
    return model, tokenizer


def train_assistant(
    turns: list[tuple[list[dict[str, Any]], str]], *, tools: list[dict[str, Any]] | None = None,
    steps: int = 80, seed: int = 0, model_and_tokenizer: tuple[Any, Any] | None = None,
    until_probability: float | None = None,
) -> tuple[Any, Any]:
    """Return (model, tokenizer) trained so that greedy decoding, after each turn's chat history
    (rendered with `tools`), writes that turn's text (e.g. Hermes tool-call markup) and ends.
    `model_and_tokenizer`: start from these (e.g. `build_tiny_model(corpus=...)` for a long prompt).
    `until_probability`: train until every target token is at least this likely (at most `steps`),
    for clients that sample at temperature 1."""
    model, tokenizer = model_and_tokenizer or _build(seed)
    _train(model, tokenizer, turns, tools=tools, steps=steps, seed=seed, share_prefix=True,
           until_probability=until_probability)
    return model, tokenizer


# -- a reasoner ------------------------------------------------------------------------------

THINK_BEFORE_CALL = "The user wants the weather, so I call get_weather."
THINK_BEFORE_ANSWER = "The tool says 21 celsius."

def _reasoning_template() -> str:
    """The project's ChatML template with Qwen3's reasoning slot: an assistant turn's
    `reasoning_content` is rendered as a `<think>` block before its content (Qwen3 does so for the
    turns after the last user query)."""
    from localoai.testing.tiny import CHAT_TEMPLATE

    plain = "{%- if message.content %}{{- message.content }}{%- endif %}"
    assert plain in CHAT_TEMPLATE
    think = ("{%- if message.reasoning_content %}{{- '<think>\\n' + message.reasoning_content + "
             "'\\n</think>\\n\\n' }}{%- endif %}")
    return CHAT_TEMPLATE.replace(plain, think + plain)


REASONING_CHAT_TEMPLATE = _reasoning_template()


def reasoning_episode(call_id: str = "call_0") -> list[dict[str, Any]]:
    """The reasoner's conversation up to its final answer: the call turn carries its reasoning."""
    messages = episode(call_id)
    messages[1]["reasoning_content"] = THINK_BEFORE_CALL
    return messages


def train_reasoner(steps: int = 150, seed: int = 0) -> tuple[Any, Any]:
    """Return (model, tokenizer) trained like `train_tool_caller`, but thinking first: greedy decoding
    writes `<think>\\nTHINK_BEFORE_CALL\\n</think>\\n\\n` then the tool call, and after the tool's
    result `<think>\\nTHINK_BEFORE_ANSWER\\n</think>\\n\\n` then the answer. Its chat template
    (`REASONING_CHAT_TEMPLATE`) renders an earlier turn's `reasoning_content`, and has Qwen3's
    `enable_thinking` switch."""
    model, tokenizer = _build(seed)
    tokenizer.chat_template = REASONING_CHAT_TEMPLATE
    think = "<think>\n{}\n</think>\n\n"
    turns = [
        (reasoning_episode()[:1], think.format(THINK_BEFORE_CALL) + TOOL_CALL_TEXT),
        (reasoning_episode(), think.format(THINK_BEFORE_ANSWER) + ANSWER),
    ]
    _train(model, tokenizer, turns, tools=[WEATHER_TOOL], steps=steps, seed=seed)
    return model, tokenizer


def _build(seed: int, num_heads: int = 4) -> tuple[Any, Any]:
    from localoai.testing.tiny import build_tiny_model

    return build_tiny_model(hidden_size=64, num_layers=2, num_heads=num_heads, seed=seed)


def _train(model: Any, tokenizer: Any, turns: list[tuple[list[dict[str, Any]], str]], *,
           tools: list[dict[str, Any]] | None, steps: int, seed: int, end: str = "<|im_end|>",
           share_prefix: bool = False, until_probability: float | None = None) -> None:
    """Teach `model` each turn's target (then `end`) after its rendered history (loss on the target only).

    `share_prefix`: the turns' common prompt prefix (the system turn with every tool's schema) is run
    once per step without gradients and its KV cache reused by each turn, several times faster when
    that prefix is long.
    `until_probability`: stop as soon as every target token has at least this probability (so that
    sampling at temperature 1 writes the targets too), with `steps` the most; raise if it never does."""
    import copy

    import torch

    from localoai.engine.backend import cache_argument

    examples = []
    for history, target in turns:
        prompt = tokenizer.apply_chat_template(history, tools=tools, add_generation_prompt=True, tokenize=False)
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        target_ids = tokenizer(target + end, add_special_tokens=False)["input_ids"]
        examples.append((prompt_ids + target_ids, [-100] * len(prompt_ids) + target_ids))
    shared = 0
    if share_prefix:
        shared = min(len(ids) - len([label for label in labels if label != -100]) - 1 for ids, labels in examples)
        while any(ids[:shared] != examples[0][0][:shared] for ids, _ in examples):
            shared -= 1
    prefix = torch.tensor([examples[0][0][:shared]])
    rests = [(torch.tensor([ids[shared:]]), torch.tensor([labels[shared:]])) for ids, labels in examples]
    model.train()
    argument = cache_argument(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-3)

    def forward() -> list[Any]:
        cache = None
        if shared:
            with torch.no_grad():  # the output's field has the forward argument's name (4.x and 5.x)
                cache = getattr(model(input_ids=prefix, use_cache=True), argument)
        return [model(input_ids=ids, labels=labels, **{argument: copy.deepcopy(cache) if cache is not None else None})
                for ids, labels in rests]

    def least(outputs: list[Any]) -> float:
        return min(_least_target_probability(output.logits, labels) for output, (_, labels) in zip(outputs, rests))

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        for _ in range(steps):
            optimizer.zero_grad()
            outputs = forward()
            if until_probability is not None and least(outputs) >= until_probability:
                break
            sum(output.loss for output in outputs).backward()
            optimizer.step()
    model.eval()
    if until_probability is not None:
        _sharpen(model, lambda: least(forward()), until_probability)


def _sharpen(model: Any, least: Callable[[], float], until_probability: float) -> None:
    """Scale the logits (through the final norm's weight) until every target token is at least
    `until_probability` likely: greedy decoding is unchanged, sampling at temperature 1 nears it.
    Training alone gets there slowly (the last 0.1% takes thousands of steps)."""
    import torch

    norm = model.base_model.norm
    with torch.no_grad():
        achieved = least()
        for _ in range(8):
            if achieved >= until_probability:
                return
            norm.weight.mul_(2.0)
            achieved = least()
    if achieved < until_probability:
        raise RuntimeError(f"a target token's probability is {achieved:.6f}, under {until_probability}: "
                           "greedy decoding does not write the targets (train longer)")


def _least_target_probability(logits: Any, labels: Any) -> float:
    """The smallest probability the model gives a labelled token (logits at i predict token i + 1)."""
    import torch

    predicted, targets = logits[0, :-1].detach(), labels[0, 1:]
    kept = targets != -100
    log_probabilities = torch.log_softmax(predicted[kept].float(), dim=-1)
    return float(log_probabilities.gather(1, targets[kept].unsqueeze(1)).min().exp())


# -- a gpt-oss-style (harmony) reasoner --------------------------------------------------------

HARMONY_TOKENS = ["<|start|>", "<|end|>", "<|message|>", "<|channel|>", "<|constrain|>", "<|return|>", "<|call|>"]

# A harmony chat template written for this project, in the shape of gpt-oss's: the effort in the
# system message, tools in a developer message, an assistant turn's `thinking` on the analysis
# channel, its calls on the commentary channel to `functions.<name>`, its answer on the final one.
HARMONY_CHAT_TEMPLATE = """\
{{- '<|start|>system<|message|>Reasoning: ' + (reasoning_effort if reasoning_effort is defined else 'medium') }}
{{- '\\n\\n# Valid channels: analysis, commentary, final.<|end|>' }}
{%- if tools %}
{{- '<|start|>developer<|message|># Tools' }}
{%- for tool in tools %}{{- '\\n' + (tool | tojson) }}{%- endfor %}
{{- '<|end|>' }}
{%- endif %}
{%- set last = namespace(name='') %}
{%- for message in messages %}
{%- if message.role == 'user' or message.role == 'system' %}
{{- '<|start|>' + ('user' if message.role == 'user' else 'developer') + '<|message|>' + message.content + '<|end|>' }}
{%- elif message.role == 'assistant' %}
{%- if message.thinking %}
{{- '<|start|>assistant<|channel|>analysis<|message|>' + message.thinking + '<|end|>' }}
{%- endif %}
{%- for tool_call in message.tool_calls or [] %}
{%- set call = tool_call.function %}
{%- set last.name = call.name %}
{{- '<|start|>assistant to=functions.' + call.name + '<|channel|>commentary json<|message|>' }}
{%- if call.arguments is string %}{{- call.arguments }}{%- else %}{{- call.arguments | tojson }}{%- endif %}
{{- '<|call|>' }}
{%- endfor %}
{%- if message.content %}
{{- '<|start|>assistant<|channel|>final<|message|>' + message.content + '<|end|>' }}
{%- endif %}
{%- elif message.role == 'tool' %}
{{- '<|start|>functions.' + last.name + ' to=assistant<|channel|>commentary<|message|>' + message.content + '<|end|>' }}
{%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}{{- '<|start|>assistant' }}{%- endif %}
"""
HARMONY_CALL_TEXT = ('<|channel|>analysis<|message|>' + THINK_BEFORE_CALL + '<|end|><|start|>assistant '
                     'to=functions.get_weather<|channel|>commentary json<|message|>{"city": "paris"}<|call|>')
HARMONY_ANSWER_TEXT = ('<|channel|>analysis<|message|>' + THINK_BEFORE_ANSWER + '<|end|><|start|>assistant'
                       '<|channel|>final<|message|>' + ANSWER + '<|return|>')


def train_harmony_reasoner(steps: int = 150, seed: int = 0) -> tuple[Any, Any]:
    """Return (model, tokenizer) trained like `train_reasoner`, in gpt-oss's harmony format: the
    tokenizer gets harmony's special tokens (`<|channel|>`, ...; `<|return|>` and `<|call|>` end
    generation, as for gpt-oss) and `HARMONY_CHAT_TEMPLATE`; greedy decoding writes
    `HARMONY_CALL_TEXT`, then after the tool's result `HARMONY_ANSWER_TEXT`."""
    model, tokenizer = _build(seed)
    tokenizer.add_tokens(HARMONY_TOKENS, special_tokens=True)
    model.resize_token_embeddings(len(tokenizer))
    model.generation_config.eos_token_id = tokenizer.convert_tokens_to_ids(["<|return|>", "<|call|>"])
    tokenizer.chat_template = HARMONY_CHAT_TEMPLATE
    history = episode()
    history[1]["thinking"] = THINK_BEFORE_CALL  # what the server renders from `reasoning_content`
    _train(model, tokenizer, [(history[:1], HARMONY_CALL_TEXT), (history, HARMONY_ANSWER_TEXT)],
           tools=[WEATHER_TOOL], steps=steps,
           seed=seed, end="")
    return model, tokenizer
