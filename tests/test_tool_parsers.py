"""The tool-call parsers on golden strings, whole and streamed at every split point.

Pure text: no model, no server. Streaming must agree with `parse` for any chunking,
because the non-streamed and streamed answers of one generation must be the same.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from localoai.parsers import HermesToolParser, ParseResult, StreamDelta, ToolCallStream, ToolParser, tool_parser_for
from localoai.testing.tiny import CHAT_TEMPLATE

TOOLS = ("get_weather", "search")


@dataclass(frozen=True)
class Case:
    id: str
    text: str
    content: str
    calls: tuple[tuple[str, dict[str, Any]], ...] = ()
    error: str | None = None
    """A substring of the expected error; None: no error."""


WEATHER = '{"name": "get_weather", "arguments": {"city": "paris"}}'
NESTED_ARGS = {
    "query": 'a } brace, a "quote", a \\ backslash and </tool_call> <tool_call> inside',
    "filters": {"tags": ["x}", "{y"], "deep": {"n": [1, {"m": None}]}},
    "unicode": "café ✓",
}

CASES = [
    Case("single", f"<tool_call>\n{WEATHER}\n</tool_call>", "", (("get_weather", {"city": "paris"}),)),
    Case(
        "parallel",
        f'<tool_call>\n{WEATHER}\n</tool_call>\n<tool_call>\n{{"name": "search", "arguments": {{"q": "rain"}}}}\n'
        "</tool_call>",
        "",
        (("get_weather", {"city": "paris"}), ("search", {"q": "rain"})),
    ),
    Case(
        "content_before",
        f"Let me check the weather.\n\n<tool_call>\n{WEATHER}\n</tool_call>",
        "Let me check the weather.",
        (("get_weather", {"city": "paris"}),),
    ),
    Case(
        "qwen3_think_before",
        f"<think>\nI should call the tool.\n</think>\n\n<tool_call>\n{WEATHER}\n</tool_call>",
        "<think>\nI should call the tool.\n</think>",
        (("get_weather", {"city": "paris"}),),
    ),
    Case(
        "parameters",
        '<tool_call>\n{"name": "search", "parameters": {"q": "x", "k": 3}}\n</tool_call>',
        "",
        (("search", {"q": "x", "k": 3}),),
    ),
    Case(
        "nested_json",
        '<tool_call>\n{"name": "search", "arguments": ' + json.dumps(NESTED_ARGS) + "}\n</tool_call>",
        "",
        (("search", NESTED_ARGS),),
    ),
    Case(
        "nested_json_raw_unicode",
        '<tool_call>{"name": "search", "arguments": ' + json.dumps(NESTED_ARGS, ensure_ascii=False) + "}</tool_call>",
        "",
        (("search", NESTED_ARGS),),
    ),
    Case(
        "compact_no_newlines",  # what the project's own template writes
        '<tool_call>{"name": "get_weather", "arguments": {"city": "paris"}}</tool_call>',
        "",
        (("get_weather", {"city": "paris"}),),
    ),
    Case(
        "whitespace_variants",
        ' \n<tool_call>  \r\n\t{ "name" : "get_weather" ,\n  "arguments" : { "city" : "paris" } }  \n\n'
        '</tool_call>\n\n\n<tool_call>{"name":"search","arguments":{}}</tool_call>  \n',
        "",
        (("get_weather", {"city": "paris"}), ("search", {})),
    ),
    Case(
        "no_arguments_key",
        '<tool_call>\n{"name": "search"}\n</tool_call>',
        "",
        (("search", {}),),
    ),
    Case(
        "arguments_as_json_string",
        '<tool_call>\n{"name": "search", "arguments": "{\\"q\\": \\"x\\"}"}\n</tool_call>',
        "",
        (("search", {"q": "x"}),),
    ),
    Case(
        "content_between_and_after",
        f"First.\n<tool_call>{WEATHER}</tool_call>\nThen.\n<tool_call>{WEATHER}</tool_call>\nDone.",
        "First.\n\nThen.\n\nDone.",
        (("get_weather", {"city": "paris"}), ("get_weather", {"city": "paris"})),
    ),
    Case(
        "malformed_json",
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": paris}}\n</tool_call>',
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": paris}}\n</tool_call>',
        error="invalid JSON",
    ),
    Case(
        "malformed_missing_brace_then_valid_call",
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "paris"}\n</tool_call>\n'
        '<tool_call>\n{"name": "search", "arguments": {"q": "x"}}\n</tool_call>',
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "paris"}\n</tool_call>',
        (("search", {"q": "x"}),),
        error="invalid JSON",
    ),
    Case(
        "malformed_not_an_object",
        "<tool_call>\nget_weather(city='paris')\n</tool_call> ok",
        "<tool_call>\nget_weather(city='paris')\n</tool_call> ok",
        error="does not hold a JSON object",
    ),
    Case(
        "text_after_json",
        f"<tool_call>\n{WEATHER} oops\n</tool_call>",
        f"<tool_call>\n{WEATHER} oops\n</tool_call>",
        error="unexpected text",
    ),
    Case(
        "missing_name",
        '<tool_call>\n{"arguments": {"city": "paris"}}\n</tool_call>',
        '<tool_call>\n{"arguments": {"city": "paris"}}\n</tool_call>',
        error="no function name",
    ),
    Case(
        "arguments_not_object",
        '<tool_call>\n{"name": "search", "arguments": [1, 2]}\n</tool_call>',
        '<tool_call>\n{"name": "search", "arguments": [1, 2]}\n</tool_call>',
        error="not a JSON object",
    ),
    Case(
        "unterminated",
        f"Checking.\n<tool_call>\n{WEATHER}\n",
        f"Checking.\n<tool_call>\n{WEATHER}",
        error="unterminated",
    ),
    Case(
        "unterminated_json",
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "pa',
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "pa',
        error="unterminated",
    ),
    Case("unterminated_bare_tag", "Hmm <tool_call>", "Hmm <tool_call>", error="unterminated"),
    Case(
        "valid_then_unterminated",
        f"<tool_call>{WEATHER}</tool_call><tool_call>{WEATHER}",
        f"<tool_call>{WEATHER}",
        (("get_weather", {"city": "paris"}),),
        error="unterminated",
    ),
    Case(
        "unknown_tool",
        '<tool_call>\n{"name": "launch_missiles", "arguments": {}}\n</tool_call>',
        '<tool_call>\n{"name": "launch_missiles", "arguments": {}}\n</tool_call>',
        error="'launch_missiles', which is not an offered tool",
    ),
    Case("no_calls", "  The weather in Paris is sunny.\n", "The weather in Paris is sunny."),
    Case("empty", "", ""),
    Case(
        "mentions_tool_but_no_tag",
        "Use <tool or <tools> or <tool_cal> or <tool_call_x> or </tool_call> alone; a < b.",
        "Use <tool or <tools> or <tool_cal> or <tool_call_x> or </tool_call> alone; a < b.",
    ),
    Case("ends_with_partial_tag", "I will now <tool_ca", "I will now <tool_ca"),
]


def calls_of(result: ParseResult) -> list[tuple[str, dict[str, Any]]]:
    return [(call.name, json.loads(call.arguments)) for call in result.tool_calls]


@dataclass
class Streamed:
    content: str
    calls: list[tuple[str, dict[str, Any]]]
    error: str | None
    deltas: list[StreamDelta]


HEX_ID = r"call_[0-9a-f]{24}"


def run_stream(stream: ToolCallStream, chunks: list[str], id_pattern: str = HEX_ID) -> Streamed:
    deltas = [delta for chunk in chunks for delta in stream.feed(chunk)] + stream.finish()
    content: list[str] = []
    ids: list[str] = []
    names: list[str] = []
    arguments: list[str] = []
    for delta in deltas:
        if delta.content is not None:
            assert delta.index is None and delta.name is None and delta.arguments is None
            assert delta.content
            content.append(delta.content)
            continue
        assert delta.index is not None and delta.arguments is not None
        if delta.index == len(ids):  # the first delta of a call
            assert delta.id is not None and re.fullmatch(id_pattern, delta.id)
            assert delta.name
            ids.append(delta.id)
            names.append(delta.name)
            arguments.append(delta.arguments)
        else:
            assert delta.index == len(ids) - 1, "calls arrive in order, one at a time"
            assert delta.id is None and delta.name is None
            arguments[delta.index] += delta.arguments
    calls = [(name, json.loads(args)) for name, args in zip(names, arguments)]
    return Streamed("".join(content), calls, stream.error, deltas)


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
def test_parse_golden(case: Case) -> None:
    result = HermesToolParser(TOOLS).parse(case.text)
    assert result.content == case.content
    assert calls_of(result) == list(case.calls)
    if case.error is None:
        assert result.error is None
    else:
        assert result.error is not None and case.error in result.error
    for call in result.tool_calls:
        assert re.fullmatch(r"call_[0-9a-f]{24}", call.id)
        assert call.arguments == json.dumps(json.loads(call.arguments), ensure_ascii=False, separators=(",", ":"))
    assert len({call.id for call in result.tool_calls}) == len(result.tool_calls)


def assert_stream_agrees_at_every_split(parser: ToolParser, text: str, id_pattern: str = HEX_ID) -> None:
    """Every split into two and into three chunks, and one character at a time."""
    expected = parser.parse(text)
    n = len(text)
    splits: list[list[str]] = [[text], list(text)]
    splits += [[text[:i], text[i:]] for i in range(n + 1)]
    splits += [[text[:i], text[i:j], text[j:]] for i in range(1, n) for j in range(i + 1, n)]
    for chunks in splits:
        streamed = run_stream(parser.stream(), chunks, id_pattern)
        where = f"chunks={chunks!r}"
        assert streamed.content == expected.content, where
        assert streamed.calls == calls_of(expected), where
        assert streamed.error == expected.error, where


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
def test_stream_agrees_with_parse_at_every_split(case: Case) -> None:
    assert_stream_agrees_at_every_split(HermesToolParser(TOOLS), case.text)


def test_stream_shape_and_early_content() -> None:
    stream = HermesToolParser(TOOLS).stream()
    assert stream.feed("Let me check") == [StreamDelta(content="Let me check")]
    assert stream.feed(" the weather. <tool") == [StreamDelta(content=" the weather.")]  # the tag start is held
    assert stream.feed('_call>\n{"name": "get_weather", "arguments": {"city": "paris"}}\n') == []
    first, rest = stream.feed("</tool_call>")
    assert (first.index, first.name, first.arguments, first.content) == (0, "get_weather", "", None)
    assert first.id is not None and first.id.startswith("call_")
    assert rest == StreamDelta(index=0, arguments='{"city":"paris"}')
    assert stream.finish() == []
    assert stream.error is None


def test_stream_releases_held_back_text_that_is_not_a_tag() -> None:
    stream = HermesToolParser(TOOLS).stream()
    assert stream.feed("a <tool") == [StreamDelta(content="a")]
    assert stream.feed("s> b") == [StreamDelta(content=" <tools> b")]
    assert stream.feed("\n\n") == []  # trailing whitespace waits for more content
    assert stream.finish() == []


def test_stream_malformed_block_is_content_at_finish() -> None:
    stream = HermesToolParser(TOOLS).stream()
    assert stream.feed('<tool_call>\n{"name": "get_weather", "arguments": {') == []
    assert stream.finish() == [StreamDelta(content='<tool_call>\n{"name": "get_weather", "arguments": {')]
    assert stream.error == "unterminated <tool_call> block"


def test_stream_malformed_block_is_content_as_soon_as_it_closes() -> None:
    stream = HermesToolParser(TOOLS).stream()
    out = stream.feed('<tool_call>\n{"name": "nope", "arguments": {}}\n</tool_call>')
    assert out == [StreamDelta(content='<tool_call>\n{"name": "nope", "arguments": {}}\n</tool_call>')]
    assert stream.error is not None and "nope" in stream.error


def test_stream_does_not_wait_for_finish_on_json_that_cannot_close() -> None:
    """A missing closing brace: the `<` of `</tool_call>` cannot be JSON, so the block is decided there."""
    stream = HermesToolParser(TOOLS).stream()
    bad = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "paris"}\n</tool_call>'
    assert stream.feed(bad + "\nafter") == [StreamDelta(content=bad + "\nafter")]
    assert stream.error is not None and "invalid JSON" in stream.error


def test_any_tool_name_without_tool_names() -> None:
    result = HermesToolParser().parse('<tool_call>{"name": "anything", "arguments": {"a": 1}}</tool_call>')
    assert calls_of(result) == [("anything", {"a": 1})]


def test_long_streamed_arguments_are_scanned_incrementally() -> None:
    """Token-sized deltas of a large call: each feed rescans only its new text."""
    args = {"code": "x = {'a': [1, 2]}\n" * 3000}
    text = "<tool_call>\n" + json.dumps({"name": "search", "arguments": args}) + "\n</tool_call>"
    streamed = run_stream(HermesToolParser(TOOLS).stream(), [text[i : i + 3] for i in range(0, len(text), 3)])
    assert streamed.calls == [("search", args)] and streamed.content == ""


def test_stream_feed_after_finish_is_an_error() -> None:
    stream = HermesToolParser(TOOLS).stream()
    stream.finish()
    with pytest.raises(RuntimeError):
        stream.feed("x")


# --- choosing a parser from a chat template ------------------------------------------------------


def test_tool_parser_for_the_project_template() -> None:
    parser = tool_parser_for(CHAT_TEMPLATE)
    assert isinstance(parser, HermesToolParser)


def test_tool_parser_for_by_name_and_no_match() -> None:
    assert isinstance(tool_parser_for(None, "hermes"), HermesToolParser)
    assert isinstance(tool_parser_for("{{ messages }}", name="hermes"), HermesToolParser)
    assert tool_parser_for(None) is None
    assert tool_parser_for("") is None
    assert tool_parser_for("{% for m in messages %}{{ m.content }}{% endfor %}") is None
    with pytest.raises(ValueError, match="unknown tool parser"):
        tool_parser_for(CHAT_TEMPLATE, "nonexistent")
    parser = tool_parser_for(CHAT_TEMPLATE, tool_names=["search"])
    assert parser is not None and parser.parse(f"<tool_call>{WEATHER}</tool_call>").tool_calls == []


@pytest.mark.parametrize(
    ("filename", "expected"),
    [
        ("Qwen-Qwen2.5-7B-Instruct.jinja", "hermes"),
        ("Qwen-Qwen3-0.6B.jinja", "hermes"),
        ("NousResearch-Hermes-3-Llama-3.1-8B-tool_use.jinja", "hermes"),
        ("meta-llama-Llama-3.1-8B-Instruct.jinja", "llama3_json"),
        ("meta-llama-Llama-3.2-3B-Instruct.jinja", "llama3_json"),
        ("mistralai-Mistral-Nemo-Instruct-2407.jinja", "mistral"),
        ("deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja", "deepseek"),
        ("microsoft-Phi-3.5-mini-instruct.jinja", None),
        ("openai-gpt-oss-120b.jinja", None),  # harmony: not built yet
    ],
)
def test_tool_parser_for_real_templates(shared_fixtures: Path, filename: str, expected: str | None) -> None:
    path = shared_fixtures / "chat_templates" / filename
    if not path.is_file():
        pytest.skip(f"chat template fixture {path} is absent")
    parser = tool_parser_for(path.read_text(encoding="utf-8"))
    assert (parser.name if parser is not None else None) == expected
