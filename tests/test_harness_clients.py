"""LangChain (`langchain-openai`'s `ChatOpenAI`, on chat completions and on the Responses API) and
LiteLLM (`litellm.completion` / `responses` / `embedding`, as an `openai/` and a `hosted_vllm/` model)
against the real server on a tiny trained tool caller, unmodified, at their current versions: each
one's default traffic is accepted, its tool loop closes, and what it returns is what the model wrote
(greedy, held to the same answer the model was trained on)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import BaseModel

from localoai.testing import running_server
from localoai.testing.trained import ANSWER, QUESTION, TOOL_RESULT, WEATHER_TOOL, train_tool_caller

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # litellm would fetch its price list at import

import langchain_openai  # noqa: E402
import litellm  # noqa: E402


@pytest.fixture(scope="module")
def tool_caller() -> tuple[Any, Any]:
    return train_tool_caller()


@pytest.fixture(scope="module")
def server(tool_caller: tuple[Any, Any]) -> Iterator[Any]:
    model, tokenizer = tool_caller
    with running_server(model, tokenizer, name="tiny") as running:
        yield running


class City(BaseModel):
    city: str


@pytest.mark.parametrize("responses_api", [False, True], ids=["chat", "responses"])
def test_langchain_tool_loop_stream_and_structured_output(server: Any, responses_api: bool) -> None:
    from langchain_core.messages import HumanMessage, ToolMessage

    llm = langchain_openai.ChatOpenAI(base_url=server.base_url, api_key="unused", model="tiny", temperature=0,
                                      max_tokens=60, max_retries=0, use_responses_api=responses_api)
    with_tools = llm.bind_tools([WEATHER_TOOL])
    call = with_tools.invoke(QUESTION)
    [tool_call] = call.tool_calls
    assert (tool_call["name"], tool_call["args"]) == ("get_weather", {"city": "paris"})
    answer = with_tools.invoke([HumanMessage(QUESTION), call, ToolMessage(TOOL_RESULT, tool_call_id=tool_call["id"])])
    assert answer.text == ANSWER and not answer.tool_calls
    streamed = None
    for chunk in with_tools.stream([HumanMessage(QUESTION), call,
                                    ToolMessage(TOOL_RESULT, tool_call_id=tool_call["id"])]):
        streamed = chunk if streamed is None else streamed + chunk
    assert streamed is not None and streamed.text == ANSWER
    city = llm.with_structured_output(City).invoke(QUESTION)  # json_schema, strict: enforced by the grammar
    assert isinstance(city, City)


def test_litellm_completion_stream_responses_and_embeddings(server: Any, tool_caller: tuple[Any, Any]) -> None:
    common = {"api_base": server.base_url, "api_key": "unused", "max_tokens": 60, "temperature": 0}
    messages: list[dict[str, Any]] = [{"role": "user", "content": QUESTION}]
    called = litellm.completion(model="openai/tiny", messages=messages, tools=[WEATHER_TOOL], **common)
    [tool_call] = called.choices[0].message.tool_calls
    assert tool_call.function.name == "get_weather" and tool_call.function.arguments.replace(" ", "") == \
        '{"city":"paris"}'
    messages += [called.choices[0].message.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": tool_call.id, "content": TOOL_RESULT}]
    answered = litellm.completion(model="openai/tiny", messages=messages, tools=[WEATHER_TOOL], **common)
    assert answered.choices[0].message.content == ANSWER
    chunks = litellm.completion(model="openai/tiny", messages=messages, tools=[WEATHER_TOOL], stream=True, **common)
    assert "".join(chunk.choices[0].delta.content or "" for chunk in chunks) == ANSWER
    # vLLM's provider in LiteLLM: the same server, as a vLLM server.
    vllm_answer = litellm.completion(model="hosted_vllm/tiny", messages=messages, tools=[WEATHER_TOOL], **common)
    assert vllm_answer.choices[0].message.content == ANSWER

    response = litellm.responses(model="openai/tiny", input=QUESTION, tools=[{"type": "function",
                                 **WEATHER_TOOL["function"]}], api_base=server.base_url, api_key="unused",
                                 max_output_tokens=60, temperature=0)
    [call] = [item for item in response.output if item.type == "function_call"]
    assert call.name == "get_weather"
    embedded = litellm.embedding(model="openai/tiny", input=["paris", "london"], api_base=server.base_url,
                                 api_key="unused")
    assert len(embedded.data) == 2 and len(embedded.data[0]["embedding"]) == tool_caller[0].config.hidden_size
