"""Build a tiny chat model and tokenizer locally, with no model hub.

Tests, the demo and the benchmarks need a real `transformers` model with a real
tokenizer and chat template. This module trains a byte-level BPE tokenizer on a
small built-in corpus and builds a Qwen2-style causal LM with random weights in
about a second, so a fresh clone (and CI) never downloads anything.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
# Markup tokens of the Hermes/Qwen family, added so tool calls and reasoning are single tokens.
MARKUP_TOKENS = ["<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>", "<think>", "</think>"]

# A ChatML template in the Qwen2.5/Hermes style, written for this project: tools go into the
# system turn, assistant tool calls as <tool_call>{json}</tool_call>, tool results as user turns,
# and Qwen3's `enable_thinking=False` switch (an empty think block after the generation prompt).
CHAT_TEMPLATE = """\
{%- if tools %}
{{- '<|im_start|>system\\n' }}
{%- if messages[0].role == 'system' %}{{- messages[0].content + '\\n\\n' }}{%- endif %}
{{- '# Tools\\n\\nYou may call one or more functions. Function signatures:\\n<tools>' }}
{%- for tool in tools %}{{- '\\n' + (tool | tojson) }}{%- endfor %}
{{- '\\n</tools>\\n\\nReturn each call as <tool_call>{"name": <name>, "arguments": <args>}</tool_call><|im_end|>\\n' }}
{%- elif messages[0].role == 'system' %}
{{- '<|im_start|>system\\n' + messages[0].content + '<|im_end|>\\n' }}
{%- endif %}
{%- for message in messages %}
{%- if message.role == 'user' or (message.role == 'system' and not loop.first) %}
{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}
{%- elif message.role == 'assistant' %}
{{- '<|im_start|>assistant\\n' }}
{%- if message.content %}{{- message.content }}{%- endif %}
{%- for tool_call in message.tool_calls or [] %}
{%- set call = tool_call.function if tool_call.function is defined else tool_call %}
{{- '<tool_call>{"name": "' + call.name + '", "arguments": ' }}
{%- if call.arguments is string %}{{- call.arguments }}{%- else %}{{- call.arguments | tojson }}{%- endif %}
{{- '}</tool_call>' }}
{%- endfor %}
{{- '<|im_end|>\\n' }}
{%- elif message.role == 'tool' %}
{{- '<|im_start|>user\\n<tool_response>\\n' + message.content + '\\n</tool_response><|im_end|>\\n' }}
{%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
{{- '<|im_start|>assistant\\n' }}
{%- if enable_thinking is defined and enable_thinking is false %}{{- '<think>\\n\\n</think>\\n\\n' }}{%- endif %}
{%- endif %}
"""

_WORDS = (
    "the a an model policy reward agent tool call function weather city paris london tokyo "
    "hello world answer question reason think step first then finally because therefore "
    "temperature sample token train update gradient value loss episode turn user assistant "
    "system search result json name arguments location unit celsius fahrenheit today is was "
    "will can should number one two three four five six seven eight nine ten yes no ok"
).split()


def _corpus() -> list[str]:
    """A deterministic corpus covering words, digits, JSON and punctuation."""
    lines = []
    for i, (a, b, c) in enumerate(itertools.islice(itertools.product(_WORDS, repeat=3), 0, 6000, 7)):
        lines.append(f"{a} {b}, {c}! {i} {{\"{a}\": \"{b}\", \"n\": {i % 97}}}? ({c}) [{b}]; {a}.")
    return lines


def build_tokenizer(
    vocab_size: int = 1024, *, corpus: Iterable[str] | None = None, split_words: bool = True,
) -> PreTrainedTokenizerBase:
    """Train a byte-level BPE vocabulary and wrap it as a Qwen2 tokenizer with a chat template.

    The vocabulary is trained with `tokenizers`, then handed to `Qwen2Tokenizer` so that
    saving and reloading with `AutoTokenizer` gives back exactly the same tokenization.

    `corpus`: lines to train on instead of the built-in ones (e.g. a harness's long system prompt, so
    that it becomes few tokens). `split_words=False` lets merges cross word boundaries (the text is
    split at line ends only): long repeated text then compresses to very few tokens; such a tokenizer
    is for tests in one process (saved and reloaded, Qwen2's word splitting comes back).
    """
    import json

    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import Qwen2Tokenizer

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=split_words)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    lines = _corpus() if corpus is None else [line for text in corpus for line in text.splitlines(keepends=True)]
    backend.train_from_iterator(lines, trainer=trainer)
    trained = json.loads(backend.to_str())["model"]
    tokenizer = Qwen2Tokenizer(
        vocab=trained["vocab"],
        merges=[tuple(merge) for merge in trained["merges"]],
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>"],
    )
    if not split_words:
        tokenizer.backend_tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tokenizer.add_tokens(MARKUP_TOKENS)
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def build_tiny_model(
    path: str | Path | None = None,
    *,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    max_position_embeddings: int = 2048,
    vocab_size: int = 1024,
    seed: int = 0,
    corpus: Iterable[str] | None = None,
    split_words: bool = True,
    **config_overrides: Any,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Build a Qwen2-style model with random weights and its tokenizer (`corpus`, `split_words`:
    see `build_tokenizer`).

    With `path`, both are saved there (so `localoai serve PATH` and
    `from_pretrained(PATH)` work) and the model's `name_or_path` points to it.
    """
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    tokenizer = build_tokenizer(vocab_size, corpus=corpus, split_words=split_words)
    im_end, endoftext = tokenizer.convert_tokens_to_ids(["<|im_end|>", "<|endoftext|>"])
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=max(1, num_heads // 2),
        max_position_embeddings=max_position_embeddings,
        tie_word_embeddings=True,
        eos_token_id=im_end,
        pad_token_id=endoftext,
        bos_token_id=None,
        **config_overrides,
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = Qwen2ForCausalLM(config)
    model.generation_config = GenerationConfig(eos_token_id=[im_end, endoftext], pad_token_id=endoftext)
    model.eval()
    if path is not None:
        path = Path(path)
        model.save_pretrained(path)
        tokenizer.save_pretrained(path)
        model.name_or_path = str(path)
    else:
        model.name_or_path = "localoai-tiny"
    return model, tokenizer
