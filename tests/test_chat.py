"""Chat completions through the official `openai` SDK against a live server on a real tiny model."""

from __future__ import annotations

import asyncio
from typing import Any

import openai
import pytest
import torch


@pytest.fixture(scope="module")
def server(scripted_server: Any) -> Any:
    """This module's protocol tests run on the scripted engine (tests/conftest.py), not random weights."""
    return scripted_server


MESSAGES = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "hello world"}]


def create(client: openai.OpenAI, server: Any, **kwargs: Any) -> Any:
    kwargs.setdefault("messages", MESSAGES)
    kwargs.setdefault("max_tokens", 8)
    return client.chat.completions.create(model=server.model, **kwargs)


def test_completion_object(client: openai.OpenAI, server: Any) -> None:
    reply = create(client, server, temperature=0, extra_body={"return_token_ids": True})
    assert reply.object == "chat.completion"
    assert reply.id.startswith("chatcmpl-")
    assert reply.model == server.model == "tiny"
    assert reply.system_fingerprint == server.served.system_fingerprint
    choice = reply.choices[0]
    assert choice.index == 0 and choice.message.role == "assistant"
    assert choice.finish_reason in ("stop", "length")
    assert reply.usage.completion_tokens == len(choice.model_extra["token_ids"])
    assert reply.usage.prompt_tokens == len(reply.model_extra["prompt_token_ids"])
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens


def test_return_token_ids_are_the_chat_template_tokenization(client: openai.OpenAI, server: Any, tiny: Any) -> None:
    _, tokenizer = tiny
    reply = create(client, server, seed=3, max_tokens=12, extra_body={"return_token_ids": True})
    expected_prompt = tokenizer.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=True)
    if isinstance(expected_prompt, dict) or hasattr(expected_prompt, "input_ids"):
        expected_prompt = expected_prompt["input_ids"]
    assert reply.model_extra["prompt_token_ids"] == list(expected_prompt)
    token_ids = reply.choices[0].model_extra["token_ids"]
    assert len(token_ids) == reply.usage.completion_tokens
    assert tokenizer.decode(token_ids, skip_special_tokens=True) == reply.choices[0].message.content


def test_streamed_chunks_accumulate_to_the_non_streamed_answer(client: openai.OpenAI, server: Any) -> None:
    options: dict[str, Any] = {"seed": 11, "temperature": 1.0, "max_tokens": 10, "n": 2,
                               "extra_body": {"return_token_ids": True}}
    full = create(client, server, **options)
    chunks = list(create(client, server, stream=True, stream_options={"include_usage": True}, **options))
    assert chunks[0].model_extra["prompt_token_ids"] == full.model_extra["prompt_token_ids"]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(chunk.id == chunks[0].id for chunk in chunks)
    assert chunks[-1].choices == [] and chunks[-1].usage == full.usage
    assert all(chunk.usage is None for chunk in chunks[:-1])
    for choice in full.choices:
        parts = [c for chunk in chunks for c in chunk.choices if c.index == choice.index]
        assert "".join(p.delta.content or "" for p in parts) == choice.message.content
        assert [t for p in parts for t in p.model_extra["token_ids"]] == choice.model_extra["token_ids"]
        assert [p.finish_reason for p in parts if p.finish_reason] == [choice.finish_reason]


def test_stream_without_include_usage_has_no_usage_chunk(client: openai.OpenAI, server: Any) -> None:
    chunks = list(create(client, server, stream=True, max_tokens=3))
    assert all(chunk.choices for chunk in chunks)
    assert all(chunk.usage is None for chunk in chunks)


def test_async_client_streams_and_completes(async_client: openai.AsyncOpenAI, server: Any) -> None:
    async def run() -> tuple[str, str]:
        full = await async_client.chat.completions.create(
            model=server.model, messages=MESSAGES, max_tokens=6, temperature=0)
        stream = await async_client.chat.completions.create(
            model=server.model, messages=MESSAGES, max_tokens=6, temperature=0, stream=True)
        text = "".join([chunk.choices[0].delta.content or "" async for chunk in stream])
        return full.choices[0].message.content or "", text

    full, streamed = asyncio.run(run())
    assert full == streamed and full


def test_concurrent_requests_all_complete(async_client: openai.AsyncOpenAI, server: Any) -> None:
    async def run() -> list[Any]:
        return await asyncio.gather(*[
            async_client.chat.completions.create(model=server.model, messages=MESSAGES, max_tokens=4, seed=i)
            for i in range(6)
        ])

    replies = asyncio.run(run())
    assert [r.usage.completion_tokens for r in replies] == [4] * 6


def test_n_samples_are_distinct_and_indexed(client: openai.OpenAI, server: Any) -> None:
    reply = create(client, server, n=3, seed=5, temperature=1.0, max_tokens=8, extra_body={"return_token_ids": True})
    assert [c.index for c in reply.choices] == [0, 1, 2]
    assert len({c.message.content for c in reply.choices}) > 1
    assert reply.usage.completion_tokens == sum(len(c.model_extra["token_ids"]) for c in reply.choices)
    assert reply.usage.prompt_tokens == len(reply.model_extra["prompt_token_ids"])  # the prompt is counted once


def test_same_seed_same_output_different_seed_differs(client: openai.OpenAI, server: Any) -> None:
    first = create(client, server, seed=1234, temperature=1.0, max_tokens=12)
    again = create(client, server, seed=1234, temperature=1.0, max_tokens=12)
    other = create(client, server, seed=4321, temperature=1.0, max_tokens=12)
    assert first.choices[0].message.content == again.choices[0].message.content
    assert first.choices[0].message.content != other.choices[0].message.content


def test_logprobs_match_a_forward_pass_of_the_same_weights(
    model_client: openai.OpenAI, model_server: Any, tiny: Any,
) -> None:
    model, _ = tiny
    reply = create(model_client, model_server, temperature=0, max_tokens=6, logprobs=True, top_logprobs=3,
                   extra_body={"return_token_ids": True})
    content = reply.choices[0].logprobs.content
    token_ids = reply.choices[0].model_extra["token_ids"]
    assert len(content) == len(token_ids)
    with torch.no_grad():
        ids = torch.tensor([reply.model_extra["prompt_token_ids"] + token_ids])
        expected = torch.log_softmax(model(ids).logits[0].float(), dim=-1)
    start = len(reply.model_extra["prompt_token_ids"]) - 1
    for position, (entry, token_id) in enumerate(zip(content, token_ids)):
        assert entry.logprob == pytest.approx(float(expected[start + position, token_id]), abs=1e-4)
        assert len(entry.top_logprobs) == 3
        assert entry.top_logprobs[0].logprob == pytest.approx(entry.logprob, abs=1e-6)  # greedy: the top token
        assert [t.logprob for t in entry.top_logprobs] == sorted((t.logprob for t in entry.top_logprobs), reverse=True)
    joined = b"".join(bytes(entry.bytes) for entry in content).decode("utf-8", errors="replace")
    assert joined == reply.choices[0].message.content


def test_stop_string_ends_decoding_and_is_not_returned(client: openai.OpenAI, server: Any) -> None:
    sampling: dict[str, Any] = {"seed": 99, "temperature": 1.0, "max_tokens": 24}
    free = create(client, server, **sampling)
    text = free.choices[0].message.content
    middle = len(text) // 2
    stop = next(text[i : i + 3] for i in range(middle, len(text) - 3) if text[i : i + 3].strip())
    stopped = create(client, server, stop=[stop, "never-appears"], **sampling)
    assert stopped.choices[0].finish_reason == "stop"
    assert stopped.choices[0].message.content == text[: text.index(stop)]
    assert stopped.usage.completion_tokens < free.usage.completion_tokens
    assert stopped.choices[0].model_extra["stop_reason"] == stop

    streamed = list(create(client, server, stop=stop, stream=True, **sampling))
    assert "".join(c.choices[0].delta.content or "" for c in streamed) == stopped.choices[0].message.content
    included = create(client, server, stop=stop, extra_body={"include_stop_str_in_output": True}, **sampling)
    assert included.choices[0].message.content == text[: text.index(stop)] + stop


def test_logit_bias_forces_a_token(model_client: openai.OpenAI, model_server: Any, tiny: Any) -> None:
    _, tokenizer = tiny
    token = tokenizer.convert_tokens_to_ids("Ġworld") if "Ġworld" in tokenizer.get_vocab() else 300
    reply = create(model_client, model_server, temperature=1.0, seed=1, max_tokens=5, logit_bias={str(token): 100},
                   extra_body={"return_token_ids": True})
    assert reply.choices[0].model_extra["token_ids"] == [token] * 5


def test_max_completion_tokens_and_length_finish(client: openai.OpenAI, server: Any) -> None:
    reply = create(client, server, max_tokens=None, max_completion_tokens=3, temperature=0,
                   extra_body={"ignore_eos": True})
    assert reply.usage.completion_tokens == 3
    assert reply.choices[0].finish_reason == "length"


def test_eos_ends_with_stop_and_min_tokens_delays_it(model_client: openai.OpenAI, model_server: Any, tiny: Any) -> None:
    _, tokenizer = tiny
    eos = tokenizer.convert_tokens_to_ids("<|im_end|>")
    forced = create(model_client, model_server, temperature=0, max_tokens=10, logit_bias={str(eos): 100},
                    extra_body={"return_token_ids": True})
    assert forced.choices[0].finish_reason == "stop"
    assert forced.choices[0].model_extra["token_ids"] == [eos]
    assert forced.choices[0].message.content == ""
    delayed = create(model_client, model_server, temperature=0, max_tokens=10, logit_bias={str(eos): 100},
                     extra_body={"return_token_ids": True, "min_tokens": 4})
    assert len(delayed.choices[0].model_extra["token_ids"]) == 5
    assert delayed.choices[0].finish_reason == "stop"


def test_chat_template_kwargs_reach_the_template(client: openai.OpenAI, server: Any, tiny: Any) -> None:
    _, tokenizer = tiny
    plain = create(client, server, max_tokens=1, extra_body={"return_token_ids": True})
    no_think = create(client, server, max_tokens=1,
                      extra_body={"return_token_ids": True, "chat_template_kwargs": {"enable_thinking": False}})
    extra = no_think.model_extra["prompt_token_ids"][len(plain.model_extra["prompt_token_ids"]):]
    assert tokenizer.decode(extra) == "<think>\n\n</think>\n\n"


def test_tool_conversation_is_rendered_through_the_template(client: openai.OpenAI, server: Any, tiny: Any) -> None:
    _, tokenizer = tiny
    tool = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
    messages = [
        {"role": "user", "content": "weather in paris?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "paris"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "21 celsius"},
    ]
    reply = create(client, server, messages=messages, tools=[tool], max_tokens=2, extra_body={"return_token_ids": True})
    prompt = tokenizer.decode(reply.model_extra["prompt_token_ids"])
    assert '"name": "get_weather"' in prompt and "<tools>" in prompt
    assert '<tool_call>{"name": "get_weather", "arguments": {"city": "paris"}}</tool_call>' in prompt
    assert "<tool_response>\n21 celsius\n</tool_response>" in prompt


def test_content_parts_and_developer_role(client: openai.OpenAI, server: Any) -> None:
    as_parts = create(client, server, temperature=0, max_tokens=4, extra_body={"return_token_ids": True}, messages=[
        {"role": "developer", "content": [{"type": "text", "text": "You are terse."}]},
        {"role": "user", "content": [{"type": "text", "text": "hello world"}]},
    ])
    as_text = create(client, server, temperature=0, max_tokens=4, extra_body={"return_token_ids": True})
    assert as_parts.model_extra["prompt_token_ids"] == as_text.model_extra["prompt_token_ids"]
    assert as_parts.choices[0].message.content == as_text.choices[0].message.content


def test_tokenize_and_detokenize(server: Any, tiny: Any) -> None:
    import httpx

    _, tokenizer = tiny
    tokens = httpx.post(f"{server.url}/tokenize", json={"model": server.model, "messages": MESSAGES}).json()
    expected = tokenizer.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=True)
    if isinstance(expected, dict) or hasattr(expected, "input_ids"):
        expected = expected["input_ids"]
    assert tokens["tokens"] == list(expected) and tokens["count"] == len(expected)
    assert tokens["max_model_len"] == 2048
    text = httpx.post(f"{server.url}/detokenize", json={"tokens": tokens["tokens"]}).json()["prompt"]
    assert text == tokenizer.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=False)
    plain = httpx.post(f"{server.url}/tokenize", json={"prompt": "hello world", "return_token_strs": True}).json()
    assert plain["tokens"] == tokenizer("hello world")["input_ids"]
    assert plain["token_strs"] == tokenizer.convert_ids_to_tokens(plain["tokens"])


def test_models_endpoints(client: openai.OpenAI, server: Any) -> None:
    listed = client.models.list()
    assert [m.id for m in listed.data] == [server.model]
    model = client.models.retrieve(server.model)
    assert model.id == server.model and model.object == "model" and model.owned_by == "localoai"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("not-this-one")


def test_a_message_the_template_would_drop_is_refused(tiny: Any) -> None:
    """A template with no place for tool turns (Phi-3.5 is one) must not silently lose the tool result."""
    import copy

    import httpx

    from localoai.testing import running_server

    model, tokenizer = tiny
    no_tools = copy.copy(tokenizer)
    no_tools.chat_template = "{% for m in messages %}{% if m.role != 'tool' %}{{ m.role }}: {{ m.content }}\n{% endif %}{% endfor %}"
    with running_server(model, no_tools, name="no-tool-role") as limited:
        reply = httpx.post(f"{limited.base_url}/chat/completions", json={"model": "no-tool-role", "max_tokens": 2,
            "messages": [{"role": "user", "content": "hi"},
                         {"role": "assistant", "content": None, "tool_calls": [
                             {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
                         {"role": "tool", "tool_call_id": "c1", "content": "the result"}]})
        error = reply.json()["error"]
        assert reply.status_code == 400 and error["param"] == "messages[2]"
        assert error["code"] == "unsupported_by_chat_template"
