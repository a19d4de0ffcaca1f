"""The grammar mask inside the `Sampler`, without a server: what may be sampled, when the end may
come, the logprobs reported, and a model whose logits are wider than its tokenizer's vocabulary."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
import torch

from localoai.constraints.grammar import compile_grammar, spec_grammar
from localoai.constraints.spec import GrammarSpec, OutputSpec, schema_text
from localoai.engine.params import SamplingParams
from localoai.engine.sampler import Sampler

PADDING = 64  # rows of the LM head that no token of the tokenizer has (as Qwen pads to 151936)


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    from localoai.testing.tiny import build_tokenizer

    return build_tokenizer()


def decode_until_stop(
    tokenizer: Any, params: SamplingParams, *, seed: int, push: dict[int, float], steps: int = 200
) -> tuple[str, list[torch.Tensor]]:
    """Sample one row with random logits (plus `push` on some ids) until the stop token, under
    `params.constraint` compiled as the engine compiles it."""
    vocab = len(tokenizer) + PADDING
    stop = tokenizer.convert_tokens_to_ids("<|im_end|>")
    constraint = compile_grammar(params.constraint.grammar, tokenizer, vocab) if params.constraint else None
    sampler = Sampler(params, vocab_size=vocab, device=torch.device("cpu"), prompt_ids=[], eos_token_ids=[stop],
                      constraint=constraint)
    generator = torch.Generator().manual_seed(seed)
    bias = torch.zeros(vocab)
    for token, value in push.items():
        bias[token] = value
    tokens: list[int] = []
    logprobs = []
    for step in range(steps):
        logits = torch.randn(1, vocab, generator=generator) * 3 + bias
        token, distribution = sampler.sample(logits, step)
        logprobs.append(distribution[0])
        if int(token) == stop:
            return tokenizer.decode(tokens), logprobs
        tokens.append(int(token))
    raise AssertionError(f"no stop token after {steps} steps: {tokenizer.decode(tokens)!r}")


@pytest.mark.parametrize("temperature", [1.0, 0.0])
def test_only_the_grammar_s_tokens_are_sampled_and_the_end_comes_when_it_is_complete(
    tokenizer: Any, temperature: float,
) -> None:
    schema = {"type": "object", "properties": {"answer": {"enum": ["yes", "no"]}, "n": {"type": "integer",
              "minimum": 0, "maximum": 9}}, "required": ["answer", "n"], "additionalProperties": False}
    grammar = spec_grammar(OutputSpec(answer=schema_text(schema)), tokenizer, len(tokenizer) + PADDING)
    params = SamplingParams(max_tokens=200, temperature=temperature, constraint=GrammarSpec(grammar))
    stop = tokenizer.convert_tokens_to_ids("<|im_end|>")
    # Push the padding rows, the stop token and a closing brace: the grammar must overrule all of them.
    push = {len(tokenizer) + i: 50.0 for i in range(PADDING)} | {stop: 40.0, tokenizer.convert_tokens_to_ids("}"): 30.0}
    for seed in range(5):
        text, logprobs = decode_until_stop(tokenizer, params, seed=seed, push=push)
        value = json.loads(text)
        assert value["answer"] in ("yes", "no") and 0 <= value["n"] <= 9
        # Logprobs are those of the masked distribution: padding rows and the early stop are impossible.
        first = logprobs[0]
        assert torch.isinf(first[len(tokenizer):]).all() and torch.isinf(first[stop])
        assert torch.isclose(first.exp().sum(), torch.tensor(1.0))


def test_the_params_record_keeps_the_grammar_as_json(tokenizer: Any) -> None:
    grammar = spec_grammar(OutputSpec(answer=schema_text({"type": "object"})), tokenizer, len(tokenizer))
    recorded = dataclasses.asdict(SamplingParams(max_tokens=4, constraint=GrammarSpec.of(grammar, param="x")))
    assert json.loads(json.dumps(recorded))["constraint"] == {"grammar": grammar}
    assert "%json" in grammar


@pytest.mark.parametrize("family", ["hermes", "mistral", "deepseek", "llama3_json"])
def test_each_family_s_forced_calls_parse_back_as_valid_calls(tokenizer: Any, family: str) -> None:
    """What a tool-call grammar lets the model write is what that family's parser reads as calls."""
    import jsonschema

    from localoai.constraints.spec import ToolSpec
    from localoai.parsers.tool_calls import TOOL_PARSERS

    schemas = {
        "get_weather": {"type": "object", "properties": {"city": {"enum": ["paris", "tokyo"]}},
                        "required": ["city"], "additionalProperties": False},
        "search": {"type": "object", "properties": {"q": {"type": "string", "maxLength": 6}, "k": {
            "type": "integer", "minimum": 1, "maximum": 5}}, "required": ["q", "k"], "additionalProperties": False},
    }
    parser = TOOL_PARSERS[family](list(schemas))
    tools = tuple(ToolSpec(name, schema_text(schema)) for name, schema in schemas.items())
    stop = tokenizer.convert_tokens_to_ids("<|im_end|>")
    for seed, parallel in ((0, False), (1, False), (2, True), (3, True)):
        spec = OutputSpec(tools=tools, call_format=parser.call_format(), tool_calls="required", parallel=parallel)
        grammar = spec_grammar(spec, tokenizer, len(tokenizer) + PADDING)
        params = SamplingParams(max_tokens=1000, seed=seed, constraint=GrammarSpec(grammar))
        # With parallel calls the end competes with one more call at every call: leave room for several.
        text, _ = decode_until_stop(tokenizer, params, seed=seed, push={stop: 6.0}, steps=1000)
        parsed = parser.parse(text)
        assert parsed.error is None and parsed.tool_calls and parsed.content == "", text
        assert parallel or len(parsed.tool_calls) == 1
        for call in parsed.tool_calls:
            jsonschema.validate(json.loads(call.arguments), schemas[call.name])
