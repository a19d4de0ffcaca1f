"""The engine interface through the scripted engine: the real server replays scripted tokens (stop
strings, stop tokens, `max_tokens`, `n`, logprobs, pause, policy versions, a failing script), and
refuses, naming the field, what the engine's capabilities leave out."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from localoai.engine.engine import Engine
from localoai.engine.interface import SAMPLING_FIELDS, Capabilities, GenerationEngine
from localoai.testing import ScriptedEngine, running_server, text_script, wait_until

GREETING = "Hello there, scripted world"
MESSAGES = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def scripted(tiny: tuple[Any, Any]) -> Iterator[tuple[Any, ScriptedEngine]]:
    model, tokenizer = tiny
    engine = ScriptedEngine(tokenizer, text_script(tokenizer, GREETING, "second"),
                            eos_token_ids=[tokenizer.convert_tokens_to_ids("<|im_end|>")])
    with running_server(model, tokenizer, name="scripted", engine=engine) as server:
        yield server, engine


def chat(server: Any, **fields: Any) -> Any:
    return server.client(max_retries=0).chat.completions.create(model=server.model, messages=MESSAGES, **fields)


def test_both_engines_declare_the_interface(scripted: tuple[Any, ScriptedEngine], tiny: tuple[Any, Any]) -> None:
    server, engine = scripted
    assert server.served.engine is engine
    local = Engine.for_model(*tiny, eos_token_ids=[0], prefix_cache=False)
    members = [name for name in dir(GenerationEngine) if not name.startswith("_")]
    members += list(GenerationEngine.__annotations__)
    for member in members:
        assert hasattr(local, member) and hasattr(engine, member), member


def test_the_script_is_replayed_with_logprobs_per_sample(scripted: tuple[Any, ScriptedEngine]) -> None:
    server, engine = scripted
    reply = chat(server, n=2, logprobs=True, top_logprobs=2, max_tokens=50)
    assert [choice.message.content for choice in reply.choices] == [GREETING, "second"]
    assert [choice.finish_reason for choice in reply.choices] == ["stop", "stop"]
    first = reply.choices[0].logprobs.content[0]
    assert first.top_logprobs[0].token == first.token and first.top_logprobs[0].logprob == first.logprob
    record = server.store.get(reply.id)
    prompt_ids, params = engine.submitted[-1]
    assert record.prompt_token_ids == prompt_ids and params.n == 2 and params.logprobs == 2


def test_stop_strings_and_max_tokens_end_a_sample_as_on_the_model(scripted: tuple[Any, ScriptedEngine]) -> None:
    server, _ = scripted
    stopped = chat(server, stop=["there"])
    assert stopped.choices[0].message.content == "Hello " and stopped.choices[0].finish_reason == "stop"
    cut = chat(server, max_tokens=2)
    assert cut.choices[0].finish_reason == "length" and cut.usage.completion_tokens == 2
    streamed = "".join(chunk.choices[0].delta.content or "" for chunk in chat(server, stream=True) if chunk.choices)
    assert streamed == GREETING


def test_what_the_engine_cannot_honour_is_refused_naming_the_field(scripted: tuple[Any, ScriptedEngine]) -> None:
    server, _ = scripted
    with pytest.raises(openai.BadRequestError) as raised:
        chat(server, response_format={"type": "json_object"})
    assert raised.value.body["param"] == "response_format" and raised.value.body["code"] == "unsupported_parameter"
    with pytest.raises(openai.BadRequestError) as raised:
        server.client(max_retries=0).completions.create(model=server.model, prompt="hi", echo=True, logprobs=1,
                                                        max_tokens=2)
    assert raised.value.body["param"] == "prompt_logprobs"
    with pytest.raises(openai.BadRequestError) as raised:
        server.client(max_retries=0).embeddings.create(model=server.model, input="hi")
    assert raised.value.body["param"] == "model"
    assert chat(server, max_tokens=3).usage.completion_tokens == 3  # the server is unharmed


def test_a_narrower_engine_refuses_each_sampling_field_it_does_not_apply(tiny: tuple[Any, Any]) -> None:
    model, tokenizer = tiny
    engine = ScriptedEngine(tokenizer, capabilities=Capabilities(sampling=frozenset({"n"}), top_logprobs=1))
    with running_server(model, tokenizer, name="narrow", engine=engine) as server:
        assert chat(server, max_tokens=2, n=2, temperature=1.0, top_logprobs=1, logprobs=True).choices[1]
        for fields, param in (({"temperature": 0.5}, "temperature"), ({"seed": 3}, "seed"),
                              ({"stop": ["x"]}, "stop"), ({"logprobs": True, "top_logprobs": 2}, "top_logprobs")):
            with pytest.raises(openai.BadRequestError) as raised:
                chat(server, max_tokens=2, **fields)
            assert raised.value.body["param"] == param
    assert set(SAMPLING_FIELDS) <= set(Capabilities().sampling)


def test_pause_keep_freezes_and_resume_continues_on_the_new_version(tiny: tuple[Any, Any]) -> None:
    model, tokenizer = tiny
    inside, gate = threading.Event(), threading.Event()
    tokens = tokenizer.encode(" one two three", add_special_tokens=False)

    def script(prompt_ids: list[int], params: Any, index: int) -> Iterator[int]:
        yield tokens[0]
        inside.set()
        gate.wait(60)  # a step that takes a while, as a forward pass does: the test pauses meanwhile
        yield from tokens[1:]

    engine = ScriptedEngine(tokenizer, script)
    with running_server(model, tokenizer, name="paused", engine=engine) as server:
        done: list[Any] = []
        worker = threading.Thread(target=lambda: done.append(chat(server, max_tokens=20)))
        worker.start()
        wait_until(inside.is_set, message="the second step never started")
        pausing = threading.Thread(target=engine.pause, args=("keep",))
        pausing.start()
        wait_until(lambda: engine.paused)
        gate.set()  # the step ends, with the second token; the third waits for the new weights
        pausing.join()
        assert engine.stats()["running"] == 1 and not done
        assert engine.resume() == 1
        worker.join(60)
        [reply] = done
        assert reply.choices[0].message.content == tokenizer.decode(tokens)
        assert server.store.get(reply.id).completions[0]["policy_versions"] == [[0, 0], [2, 1]]


def test_a_failing_script_fails_its_request_only(tiny: tuple[Any, Any]) -> None:
    model, tokenizer = tiny

    def script(prompt_ids: list[int], params: Any, index: int) -> Iterator[int]:
        if params.max_tokens == 13:
            raise RuntimeError("injected")
        yield from tokenizer.encode(" fine", add_special_tokens=False)

    with running_server(model, tokenizer, name="failing", engine=ScriptedEngine(tokenizer, script)) as server:
        with pytest.raises(openai.InternalServerError):
            chat(server, max_tokens=13)
        assert chat(server, max_tokens=5).choices[0].message.content == " fine"


def test_completions_text_offsets_follow_the_text_as_streamed(tiny: tuple[Any, Any]) -> None:
    """'é' is two byte tokens: the first step writes no text, the second writes one character. Each
    token's `text_offset` is where the text stood at its step, streamed or not (offsets summed over
    the tokens' own texts, one U+FFFD each, would run ahead of the text: [0, 1, 2])."""
    model, tokenizer = tiny
    text = "é a"
    assert len(tokenizer.encode(text, add_special_tokens=False)) == 3
    engine = ScriptedEngine(tokenizer, text_script(tokenizer, text), eos_token_ids=[tokenizer.eos_token_id or 0])
    with running_server(model, tokenizer, name="bytes", engine=engine) as server:
        client = server.client(max_retries=0)
        fields: dict[str, Any] = {"model": server.model, "prompt": "say it", "max_tokens": 3, "logprobs": 1}
        whole = client.completions.create(**fields).choices[0]
        chunks = [choice for chunk in client.completions.create(stream=True, **fields) for choice in chunk.choices]
    assert whole.text == "".join(choice.text for choice in chunks) == text
    assert whole.logprobs.text_offset == [0, 0, 1]
    assert [offset for choice in chunks for offset in choice.logprobs.text_offset] == whole.logprobs.text_offset
