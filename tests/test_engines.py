"""The same protocol tests on both engines (issue #13): the real server on `engine="local"` and on
`engine="vllm"`, one tiny trained tool caller (2 heads of 32: vLLM's CPU attention needs 32), the
official `openai` and `anthropic` clients. Every greedy answer is held to one reference, computed
here with `transformers`' own `generate` on the live weights, so a difference between engines fails.

Without vLLM (the main environment) the `vllm` cases skip, saying why; `.ci/run-vllm` runs this
module in vLLM's environment, where both engines run.
"""

from __future__ import annotations

import concurrent.futures
import importlib.util
import json
import os
from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pytest
import torch

from localoai.testing import running_server, wait_until
from localoai.testing.trained import ANSWER, QUESTION, TOOL_RESULT, WEATHER_TOOL, episode, train_tool_caller

HAS_VLLM = importlib.util.find_spec("vllm") is not None
VLLM_OPTIONS = {"gpu_memory_utilization": 0.15, "max_model_len": 1024}
"""vLLM on CPU: its share of memory for the KV cache; the tiny model's context."""
ENGINES = ["local", pytest.param("vllm", marks=pytest.mark.skipif(
    not HAS_VLLM, reason="vLLM is not installed here (both engines run in its environment: .ci/run-vllm)"))]
PROMPT = "the weather in paris is"
FIRST = [{"role": "user", "content": QUESTION}]


@pytest.fixture(scope="module")
def tool_caller() -> tuple[Any, Any]:
    return train_tool_caller(num_heads=2)


@pytest.fixture(scope="module", params=ENGINES)
def server(request: pytest.FixtureRequest, tool_caller: tuple[Any, Any]) -> Iterator[Any]:
    model, tokenizer = tool_caller
    options: dict[str, Any] = {"engine": request.param}
    if request.param == "vllm":
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # the worker inside vLLM's engine core
        options["engine_options"] = VLLM_OPTIONS
    # Sampled answers may draw `<think>`: no reasoning parser, so sampled text stays text.
    with running_server(model, tokenizer, name="tiny", reasoning_parser="none", **options) as running:
        yield running


@pytest.fixture
def client(server: Any) -> openai.OpenAI:
    return server.client(max_retries=0)


# --- the reference: transformers' greedy decoding on the live weights -----------------------------

def eos_ids(tokenizer: Any) -> list[int]:
    return tokenizer.convert_tokens_to_ids(["<|im_end|>", "<|endoftext|>"])


def reference(model: Any, tokenizer: Any, prompt_ids: list[int], max_tokens: int, *, eos: bool = True) -> list[int]:
    """What `transformers` greedily writes after `prompt_ids` (up to and with an end of turn if `eos`)."""
    with torch.no_grad():
        out = model.generate(torch.tensor([prompt_ids]), max_new_tokens=max_tokens, do_sample=False,
                             eos_token_id=eos_ids(tokenizer) if eos else None, pad_token_id=0)
    return out[0, len(prompt_ids):].tolist()


def reference_logprobs(model: Any, prompt_ids: list[int], completion_ids: list[int]) -> torch.Tensor:
    """log_softmax of the logits before each completion token: [completion tokens, vocabulary]."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([prompt_ids + completion_ids])).logits[0].float()
    return torch.log_softmax(logits[len(prompt_ids) - 1:-1], dim=-1)


def last_record(server: Any, kind: str) -> Any:
    server.flush_records()
    return server.store.list(kind=kind, limit=1)[0]


def assert_greedy(server: Any, tool_caller: tuple[Any, Any], kind: str, max_tokens: int) -> Any:
    """The newest `kind` record's sample is the reference's greedy answer to its own prompt."""
    model, tokenizer = tool_caller
    record = last_record(server, kind)
    ids = record.completions[0]["completion_token_ids"]
    assert ids == reference(model, tokenizer, record.prompt_token_ids, max_tokens)[:len(ids)]
    return record


def chat_prompt(tokenizer: Any, messages: list[dict[str, Any]], **options: Any) -> list[int]:
    return list(tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                              return_dict=False, **options))


# --- chat and completions ------------------------------------------------------------------------

def test_chat_token_ids_are_the_reference(client: openai.OpenAI, tool_caller: tuple[Any, Any]) -> None:
    model, tokenizer = tool_caller
    reply = client.chat.completions.create(model="tiny", messages=FIRST, max_tokens=40, temperature=0,
                                           extra_body={"return_token_ids": True})
    prompt_ids = chat_prompt(tokenizer, FIRST)
    assert reply.model_extra["prompt_token_ids"] == prompt_ids
    token_ids = reply.choices[0].model_extra["token_ids"]
    assert token_ids == reference(model, tokenizer, prompt_ids, 40)
    assert len(token_ids) == reply.usage.completion_tokens and reply.usage.prompt_tokens == len(prompt_ids)
    assert tokenizer.decode(token_ids, skip_special_tokens=True) == reply.choices[0].message.content


def test_streamed_chat_is_the_reference_in_chunks(client: openai.OpenAI, tool_caller: tuple[Any, Any]) -> None:
    model, tokenizer = tool_caller
    chunks = list(client.chat.completions.create(model="tiny", messages=FIRST, max_tokens=40, temperature=0,
                                                 stream=True, stream_options={"include_usage": True},
                                                 extra_body={"return_token_ids": True}))
    choices = [chunk.choices[0] for chunk in chunks if chunk.choices]
    token_ids = [token for choice in choices for token in choice.model_extra.get("token_ids") or []]
    assert token_ids == reference(model, tokenizer, chat_prompt(tokenizer, FIRST), 40)
    assert "".join(choice.delta.content or "" for choice in choices) == tokenizer.decode(token_ids,
                                                                                       skip_special_tokens=True)
    assert chunks[-1].usage.completion_tokens == len(token_ids) and choices[-1].finish_reason == "stop"


def test_completions_token_ids_are_the_reference(client: openai.OpenAI, tool_caller: tuple[Any, Any]) -> None:
    model, tokenizer = tool_caller
    prompt_ids = tokenizer(PROMPT)["input_ids"]
    first, again = (client.completions.create(model="tiny", prompt=PROMPT, max_tokens=16, temperature=0,
                                              extra_body={"return_token_ids": True, "ignore_eos": True})
                    for _ in range(2))
    assert first.choices[0].model_extra["prompt_token_ids"] == prompt_ids
    ids = first.choices[0].model_extra["token_ids"]
    assert ids == again.choices[0].model_extra["token_ids"] == reference(model, tokenizer, prompt_ids, 16, eos=False)
    assert first.choices[0].text == tokenizer.decode(ids, skip_special_tokens=True)


@pytest.mark.parametrize("temperature", [0.0, 0.7])
def test_logprobs_are_the_sampled_distribution(client: openai.OpenAI, tool_caller: tuple[Any, Any],
                                               temperature: float) -> None:
    model, tokenizer = tool_caller
    reply = client.chat.completions.create(model="tiny", messages=FIRST, max_tokens=12, temperature=temperature,
                                           seed=5, logprobs=True, top_logprobs=3,
                                           extra_body={"return_token_ids": True})
    ids = reply.choices[0].model_extra["token_ids"]
    content = reply.choices[0].logprobs.content
    assert len(content) == len(ids) == reply.usage.completion_tokens
    # greedy reports the model's own distribution; sampling the one sampled from (logits / temperature)
    expected = reference_logprobs(model, chat_prompt(tokenizer, FIRST), ids) if temperature == 0 else None
    if expected is None:
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([chat_prompt(tokenizer, FIRST) + ids])).logits[0].float()
        expected = torch.log_softmax(logits[len(chat_prompt(tokenizer, FIRST)) - 1:-1] / temperature, dim=-1)
    for position, (token, entry) in enumerate(zip(ids, content)):
        assert entry.logprob == pytest.approx(expected[position, token].item(), abs=1e-3)
        assert len(entry.top_logprobs) == 3
        best = expected[position].topk(3)
        assert [alternative.logprob for alternative in entry.top_logprobs] == pytest.approx(best.values.tolist(),
                                                                                            abs=1e-3)
    if temperature == 0:
        assert all(entry.top_logprobs[0].token == entry.token for entry in content)


def test_echo_scores_the_prompt(client: openai.OpenAI, tool_caller: tuple[Any, Any]) -> None:
    model, tokenizer = tool_caller
    prompt_ids = tokenizer(PROMPT)["input_ids"]
    rows = reference_logprobs(model, prompt_ids[:1], prompt_ids[1:])
    expected = [rows[position, token].item() for position, token in enumerate(prompt_ids[1:])]
    echoed = client.completions.create(model="tiny", prompt=PROMPT, max_tokens=3, temperature=0, echo=True,
                                       logprobs=2, extra_body={"ignore_eos": True})
    logprobs = echoed.choices[0].logprobs
    assert echoed.choices[0].text.startswith(PROMPT) and len(logprobs.tokens) == len(prompt_ids) + 3
    assert logprobs.token_logprobs[0] is None
    assert logprobs.token_logprobs[1:len(prompt_ids)] == pytest.approx(expected, abs=1e-3)
    scored = client.completions.create(model="tiny", prompt=PROMPT, max_tokens=0, echo=True, logprobs=1)
    assert scored.choices[0].logprobs.token_logprobs[1:] == pytest.approx(expected, abs=1e-3)
    # n samples: the prompt is scored once (sample 0's), before any sample's tokens, in every choice
    drawn = client.completions.create(model="tiny", prompt=PROMPT, max_tokens=4, temperature=1.0, seed=5, n=3,
                                      echo=True, logprobs=1, extra_body={"ignore_eos": True})
    assert len(drawn.choices) == 3
    for choice in drawn.choices:
        assert len(choice.logprobs.tokens) == len(prompt_ids) + 4
        assert choice.logprobs.token_logprobs[1:len(prompt_ids)] == pytest.approx(expected, abs=1e-3)


def test_seeds_reproduce_samples_and_n_draws_apart(client: openai.OpenAI) -> None:
    def sample(seed: int, n: int = 1) -> list[tuple[int, ...]]:
        reply = client.completions.create(model="tiny", prompt=PROMPT, max_tokens=16, temperature=1.0, seed=seed,
                                          n=n, extra_body={"return_token_ids": True, "ignore_eos": True})
        return [tuple(choice.model_extra["token_ids"]) for choice in reply.choices]

    assert sample(7) == sample(7)
    assert len({*sample(1), *sample(2), *sample(3)}) > 1
    three = sample(3, n=3)
    assert len(three) == 3 and len(set(three)) > 1
    assert three == sample(3, n=3)


def reference_with(model: Any, prompt_ids: list[int], max_tokens: int, *, bias: dict[int, float],
                   frequency_penalty: float = 0.0, presence_penalty: float = 0.0) -> list[int]:
    """Greedy decoding of the logits after OpenAI's `logit_bias` and penalties (on the output's tokens)."""
    ids, out = list(prompt_ids), []
    with torch.no_grad():
        for _ in range(max_tokens):
            logits = model(input_ids=torch.tensor([ids])).logits[0, -1].float()
            for token, value in bias.items():
                logits[token] += value
            for token in set(out):
                logits[token] -= frequency_penalty * out.count(token) + presence_penalty
            out.append(int(logits.argmax()))
            ids.append(out[-1])
    return out


@pytest.mark.parametrize("options", [{"frequency_penalty": 1.5}, {"presence_penalty": 1.5}, {}],
                         ids=["frequency", "presence", "bias only"])
def test_logit_bias_and_penalties_steer_greedy_as_the_reference(client: openai.OpenAI, tool_caller: tuple[Any, Any],
                                                                 options: dict[str, float]) -> None:
    model, tokenizer = tool_caller
    prompt_ids = tokenizer(PROMPT)["input_ids"]
    plain = reference(model, tokenizer, prompt_ids, 12, eos=False)
    bias = {plain[0]: -100.0, plain[1]: 5.0}
    reply = client.completions.create(model="tiny", prompt=prompt_ids, max_tokens=12, temperature=0,
                                      logit_bias={str(token): value for token, value in bias.items()}, **options,
                                      extra_body={"return_token_ids": True, "ignore_eos": True})
    ids = reply.choices[0].model_extra["token_ids"]
    assert ids[0] != plain[0]
    assert ids == reference_with(model, prompt_ids, 12, bias=bias, **options)


def test_n_greedy_samples_are_all_the_reference(client: openai.OpenAI, tool_caller: tuple[Any, Any]) -> None:
    model, tokenizer = tool_caller
    reply = client.completions.create(model="tiny", prompt=PROMPT, max_tokens=8, temperature=0, n=2,
                                      extra_body={"return_token_ids": True, "ignore_eos": True})
    expected = reference(model, tokenizer, tokenizer(PROMPT)["input_ids"], 8, eos=False)
    assert [choice.model_extra["token_ids"] for choice in reply.choices] == [expected, expected]


def test_stop_strings_cut_the_text(client: openai.OpenAI) -> None:
    options: dict[str, Any] = {"model": "tiny", "prompt": PROMPT, "max_tokens": 24, "temperature": 0,
                               "extra_body": {"ignore_eos": True}}
    full = client.completions.create(**options).choices[0].text
    stop = full[len(full) // 2:len(full) // 2 + 3]
    assert stop.strip(), f"no usable stop string in {full!r}"
    stopped = client.completions.create(**options, stop=[stop]).choices[0]
    assert stopped.text == full[:full.find(stop)]
    assert stopped.finish_reason == "stop" and stopped.model_extra["stop_reason"] == stop


# --- tools and structured outputs ---------------------------------------------------------------

def test_the_greedy_tool_call_is_parsed_then_answered(server: Any, client: openai.OpenAI,
                                                      tool_caller: tuple[Any, Any]) -> None:
    call = client.chat.completions.create(model="tiny", messages=FIRST, tools=[WEATHER_TOOL], max_tokens=60,
                                          temperature=0)
    assert call.choices[0].finish_reason == "tool_calls"
    [tool_call] = call.choices[0].message.tool_calls
    assert tool_call.function.name == "get_weather" and json.loads(tool_call.function.arguments) == {"city": "paris"}
    assert_greedy(server, tool_caller, "chat.completion", 60)
    answer = client.chat.completions.create(model="tiny", messages=episode(), tools=[WEATHER_TOOL], max_tokens=60,
                                            temperature=0)
    assert answer.choices[0].message.content == ANSWER
    assert_greedy(server, tool_caller, "chat.completion", 60)


SCHEMAS = {
    "bounded string": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 12}},
                       "required": ["city"], "additionalProperties": False},
    "enum and integer": {"type": "object", "properties": {"city": {"enum": ["paris", "london"]},
                                                          "celsius": {"type": "integer", "minimum": -50,
                                                                      "maximum": 50}},
                         "required": ["city", "celsius"], "additionalProperties": False},
}


@pytest.mark.parametrize("schema", SCHEMAS.values(), ids=SCHEMAS.keys())
def test_structured_outputs_follow_the_schema(client: openai.OpenAI, schema: dict[str, Any]) -> None:
    import jsonschema

    for seed in range(3):
        reply = client.chat.completions.create(
            model="tiny", messages=FIRST, max_tokens=80, temperature=1.0, seed=seed,
            response_format={"type": "json_schema", "json_schema": {"name": "place", "schema": schema}})
        assert reply.choices[0].finish_reason == "stop"
        jsonschema.validate(json.loads(reply.choices[0].message.content), schema)


# --- Responses, Conversations, Messages ----------------------------------------------------------

def test_responses_chain_stored_turns(server: Any, client: openai.OpenAI, tool_caller: tuple[Any, Any]) -> None:
    first = client.responses.create(model="tiny", input=QUESTION, tools=[{"type": "function", **WEATHER_TOOL[
        "function"]}], max_output_tokens=60, temperature=0)
    [call] = [item for item in first.output if item.type == "function_call"]
    assert call.name == "get_weather" and json.loads(call.arguments) == {"city": "paris"}
    first_record = assert_greedy(server, tool_caller, "response", 60)
    assert client.responses.retrieve(first.id).output == first.output
    second = client.responses.create(
        model="tiny", previous_response_id=first.id, max_output_tokens=60, temperature=0,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": TOOL_RESULT}],
        tools=[{"type": "function", **WEATHER_TOOL["function"]}])
    assert second.output_text == ANSWER
    second_record = assert_greedy(server, tool_caller, "response", 60)
    assert second_record.prompt_token_ids[:len(first_record.prompt_token_ids)] == first_record.prompt_token_ids


def test_responses_stream_the_same_answer(server: Any, client: openai.OpenAI, tool_caller: tuple[Any, Any]) -> None:
    created = client.responses.create(model="tiny", input=PROMPT, max_output_tokens=16, temperature=0)
    with client.responses.stream(model="tiny", input=PROMPT, max_output_tokens=16, temperature=0) as stream:
        events = list(stream)
    types = [event.type for event in events]
    assert types[0] == "response.created" and types[-1] == f"response.{created.status}"
    deltas = "".join(event.delta for event in events if event.type == "response.output_text.delta")
    assert deltas == events[-1].response.output_text == created.output_text
    assert_greedy(server, tool_caller, "response", 16)


def test_a_compaction_is_the_reference(server: Any, client: openai.OpenAI, tool_caller: tuple[Any, Any]) -> None:
    compacted = client.responses.compact(model="tiny", input=[{"role": "user", "content": QUESTION}],
                                         extra_body={"max_output_tokens": 12, "temperature": 0})
    record = assert_greedy(server, tool_caller, "response.compaction", 12)
    assert record.id == compacted.id and compacted.usage.output_tokens == len(record.completions[0]["completion_token_ids"])
    assert [item.type for item in compacted.output] == ["message", "compaction"]


def test_conversations_carry_the_history(server: Any, client: openai.OpenAI, tool_caller: tuple[Any, Any]) -> None:
    conversation = client.conversations.create(items=[{"type": "message", "role": "user", "content": QUESTION}])
    reply = client.responses.create(model="tiny", conversation=conversation.id, input=[], max_output_tokens=60,
                                    temperature=0, tools=[{"type": "function", **WEATHER_TOOL["function"]}])
    assert [item.type for item in reply.output] == ["function_call"]
    assert_greedy(server, tool_caller, "response", 60)
    items = client.conversations.items.list(conversation.id, order="asc").data
    assert [item.type for item in items] == ["message", "function_call"]


def test_messages_tool_loop(server: Any, tool_caller: tuple[Any, Any]) -> None:
    client = anthropic.Anthropic(base_url=server.url, api_key="localoai", max_retries=0)
    tool = {"name": "get_weather", "description": WEATHER_TOOL["function"]["description"],
            "input_schema": WEATHER_TOOL["function"]["parameters"]}
    first = client.messages.create(model="tiny", max_tokens=60, tools=[tool], messages=FIRST,
                                   extra_body={"temperature": 0})
    [call] = first.content
    assert call.type == "tool_use" and call.name == "get_weather" and call.input == {"city": "paris"}
    assert first.stop_reason == "tool_use"
    assert_greedy(server, tool_caller, "message", 60)
    messages = [*FIRST, {"role": "assistant", "content": [call.model_dump(exclude_none=True)]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": TOOL_RESULT}]}]
    with client.messages.stream(model="tiny", max_tokens=60, tools=[tool], messages=messages,
                                extra_body={"temperature": 0}) as stream:
        answer = stream.get_final_message()
    assert [block.type for block in answer.content] == ["text"] and answer.content[0].text == ANSWER
    assert_greedy(server, tool_caller, "message", 60)


# --- episodes and the token ledger -----------------------------------------------------------------

def test_episode_trajectory_is_token_exact(server: Any, tool_caller: tuple[Any, Any]) -> None:
    model, tokenizer = tool_caller
    with server.episode(task="weather") as ep:
        client = ep.client(max_retries=0)
        call = client.chat.completions.create(model="tiny", messages=FIRST, tools=[WEATHER_TOOL], max_tokens=60,
                                              temperature=0)
        tool_call = call.choices[0].message.tool_calls[0]
        answer = client.chat.completions.create(model="tiny", tools=[WEATHER_TOOL], max_tokens=60, temperature=0,
                                                messages=[*FIRST, call.choices[0].message.model_dump(
                                                    exclude_none=True), {"role": "tool", "content": TOOL_RESULT,
                                                                         "tool_call_id": tool_call.id}])
        ep.reward = 1.0
    trajectory = ep.trajectory()
    first, second = trajectory.turns
    assert trajectory.reward == 1.0
    for turn, reply in ((first, call), (second, answer)):
        assert turn.completion_token_ids == reference(model, tokenizer, turn.prompt_token_ids, 60)
        assert reply.usage.prompt_tokens == len(turn.prompt_token_ids)
        assert reply.usage.completion_tokens == len(turn.completion_token_ids) == len(turn.logprobs)
        cached = reply.usage.prompt_tokens_details.cached_tokens
        assert cached == server.store.get(turn.record_id).cached_tokens and 0 <= cached < len(turn.prompt_token_ids)
        assert turn.policy_versions == [server.policy_version] * len(turn.completion_token_ids)
    # the second turn re-reads at most what the first turn computed: its prompt and answer are cached
    assert 0 < answer.usage.prompt_tokens_details.cached_tokens <= len(first.input_ids)
    # the ledger: the second prompt is the first turn's exact ids, then the template's and the tool's
    assert second.prompt_token_ids[:len(first.input_ids)] == first.input_ids
    assert second.ledger is not None and second.ledger["spliced"] is not None
    assert trajectory.sequence().input_ids == second.input_ids
    assert first.prompt_token_ids == chat_prompt(tokenizer, FIRST, tools=[WEATHER_TOOL])


# --- pause: keep, wait, abort, and a weight change taking effect ---------------------------------------

def restore(server: Any, tool_caller: tuple[Any, Any], saved: dict[str, torch.Tensor]) -> None:
    with server.pause("wait"), torch.no_grad():
        tool_caller[0].load_state_dict(saved)


def stream_completion(client: openai.OpenAI, prompt_ids: list[int], max_tokens: int) -> Iterator[Any]:
    return iter(client.completions.create(model="tiny", prompt=prompt_ids, temperature=0, max_tokens=max_tokens,
                                          stream=True, extra_body={"return_token_ids": True, "ignore_eos": True}))


def chunk_ids(chunk: Any) -> list[int]:
    return list(chunk.choices[0].model_extra["token_ids"] or []) if chunk.choices else []


@pytest.fixture
def weights(server: Any, tool_caller: tuple[Any, Any]) -> Iterator[Any]:
    """`perturb(seed)` changes the live weights (call it under `pause()`); they are restored, under a
    pause, after the test."""
    model, _ = tool_caller
    saved = {name: tensor.clone() for name, tensor in model.state_dict().items()}

    def perturb(seed: int) -> None:
        with torch.no_grad():
            generator = torch.Generator().manual_seed(seed)
            for parameter in model.parameters():
                parameter.add_(torch.randn(parameter.shape, generator=generator) * 0.2)

    yield perturb
    restore(server, tool_caller, saved)


def test_a_weight_change_under_pause_shows_in_the_next_greedy_answer(server: Any, client: openai.OpenAI,
                                                                     tool_caller: tuple[Any, Any],
                                                                     weights: Any) -> None:
    model, tokenizer = tool_caller
    prompt_ids = tokenizer(PROMPT)["input_ids"]
    before = reference(model, tokenizer, prompt_ids, 12, eos=False)
    version = server.policy_version
    with server.pause("keep"):
        weights(5)
    assert server.policy_version == version + 1
    after = client.completions.create(model="tiny", prompt=prompt_ids, max_tokens=12, temperature=0,
                                      extra_body={"return_token_ids": True, "ignore_eos": True})
    ids = after.choices[0].model_extra["token_ids"]
    assert ids != before and ids == reference(model, tokenizer, prompt_ids, 12, eos=False)
    assert after.system_fingerprint.endswith(f"_v{version + 1}")
    record = last_record(server, "text_completion")
    assert record.policy_version == version + 1 and record.completions[0]["policy_versions"] == [[0, version + 1]]


def test_keep_continues_running_requests_on_the_new_weights(server: Any, client: openai.OpenAI,
                                                            tool_caller: tuple[Any, Any], weights: Any) -> None:
    model, tokenizer = tool_caller
    prompt_ids = tokenizer(PROMPT)["input_ids"]
    version = server.policy_version
    chunks = stream_completion(client, prompt_ids, 600)
    generated = chunk_ids(next(chunks)) + chunk_ids(next(chunks))
    with server.pause("keep"):
        weights(6)
    generated += [token for chunk in chunks for token in chunk_ids(chunk)]
    assert len(generated) == 600
    trace = last_record(server, "text_completion").completions[0]
    assert trace["completion_token_ids"] == generated
    spans = trace["policy_versions"]
    assert [span_version for _, span_version in spans] == [version, version + 1]
    switch = spans[1][0]
    assert switch >= 2
    # after the switch: what the NEW weights write from the prefix (nothing computed by the old ones reused)
    assert generated[switch:switch + 16] == reference(model, tokenizer, prompt_ids + generated[:switch], 16, eos=False)


def test_wait_finishes_running_requests_and_holds_new_ones(server: Any, client: openai.OpenAI,
                                                           tool_caller: tuple[Any, Any], weights: Any) -> None:
    model, tokenizer = tool_caller
    prompt_ids = tokenizer(PROMPT)["input_ids"]
    version = server.policy_version
    chunks = stream_completion(client, prompt_ids, 16)
    first = next(chunks)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        with server.pause("wait"):
            assert server.served.engine.stats()["running"] == 0  # it finished before the pause took hold
            later = pool.submit(client.completions.create, model="tiny", prompt=prompt_ids, max_tokens=8,
                                temperature=0, extra_body={"return_token_ids": True, "ignore_eos": True})
            wait_until(lambda: server.served.engine.stats()["running"] + server.served.engine.stats()["waiting"] == 1,
                       message="the request sent during the pause never reached the engine")
            weights(7)
        held = later.result()
    rest = list(chunks)
    assert len(chunk_ids(first)) + sum(len(chunk_ids(chunk)) for chunk in rest) == 16
    # the held request ran on the new weights only
    assert held.choices[0].model_extra["token_ids"] == reference(model, tokenizer, prompt_ids, 8, eos=False)
    server.flush_records()
    newest, finished = server.store.list(kind="text_completion", limit=2)
    assert newest.completions[0]["policy_versions"] == [[0, version + 1]]
    assert finished.completions[0]["policy_versions"] == [[0, version]]


def test_abort_ends_running_requests_with_their_partial_output(server: Any, client: openai.OpenAI) -> None:
    chunks = iter(client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}],
                                                 max_tokens=900, stream=True, extra_body={"ignore_eos": True}))
    next(chunks)
    next(chunks)
    with server.pause("abort"):
        assert server.served.engine.stats()["running"] == 0
    finish = [chunk.choices[0].finish_reason for chunk in chunks if chunk.choices]
    assert finish[-1] == "length"  # OpenAI's closest to an abort
    trace = last_record(server, "chat.completion").completions[0]
    assert trace["finish_reason"] == "abort"  # the trace keeps the real reason
    assert 1 <= len(trace["completion_token_ids"]) < 900


def test_a_client_that_goes_away_frees_the_engine(server: Any, client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}],
                                            max_tokens=900, stream=True, extra_body={"ignore_eos": True})
    chunks = iter(stream)
    next(chunks)
    next(chunks)
    stream.close()
    wait_until(lambda: server.served.engine.stats()["running"] == 0, timeout=30, message="still generating")
    wait_until(lambda: last_record(server, "chat.completion").status == "cancelled", timeout=30,
               message="no cancelled record")
    assert 1 <= len(last_record(server, "chat.completion").completions[0]["completion_token_ids"]) < 900
    again = client.chat.completions.create(model="tiny", messages=FIRST, max_tokens=4, temperature=0)
    assert again.choices[0].finish_reason in ("stop", "length")
