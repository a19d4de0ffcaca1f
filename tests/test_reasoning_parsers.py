"""The reasoning parsers (`<think>` and harmony) composed with tool calls: golden strings, whole and
streamed at every split point, the format chosen from real chat templates, and what each real
template writes for an assistant turn (reasoning and a tool call) parsed back.

Pure text and templates: no model, no server.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from localoai.chat_template import effort_template_kwargs, render_chat
from localoai.errors import InvalidRequestError, UnsupportedFieldError
from localoai.handlers.responses.items import chat_messages, stored_items
from localoai.parsers import HermesToolParser
from localoai.parsers.harmony import HarmonyOutputParser
from localoai.parsers.output import OutputParser, ParsedOutput, ReasoningDelta, fold
from localoai.parsers.reasoning import ComposedOutputParser, reasoning_parser_for, starts_in_reasoning
from localoai.protocol.chat import ChatCompletionRequest
from localoai.protocol.responses import ResponseCreateRequest
from localoai.testing.tiny import CHAT_TEMPLATE, build_tokenizer

TOOLS = ("get_weather", "search")
WEATHER = ("get_weather", {"city": "paris"})
CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "paris"}}\n</tool_call>'


@dataclass(frozen=True)
class Case:
    id: str
    text: str
    reasoning: str | None
    content: str
    calls: tuple[tuple[str, dict[str, Any]], ...] = ()
    error: str | None = None


def think(in_reasoning: bool = False, tools: bool = False) -> ComposedOutputParser:
    return ComposedOutputParser(think=True, in_reasoning=in_reasoning, tools=HermesToolParser(TOOLS) if tools else None)


THINK_CASES = [  # the prompt did not open the block (Qwen3)
    Case("qwen3", "<think>\nI should greet.\n</think>\n\nHello!", "I should greet.", "Hello!"),
    Case("no_block_is_untouched", "  Hello there \n", None, "  Hello there \n"),
    Case("leading_whitespace", "\n\n<think>a b</think>c", "a b", "c"),
    Case("empty_block", "<think>\n\n</think>\n\nHello", None, "Hello"),
    Case("unclosed_is_reasoning", "<think>\nStill thinking about", "Still thinking about", ""),
    Case("only_the_leading_block", "Hi <think>x</think> there", None, "Hi <think>x</think> there"),
    Case("partial_open_tag_is_content", "<thin", None, "<thin"),
    Case("partial_close_tag_is_reasoning", "<think>a </thin", "a </thin", ""),
    Case("second_block_is_content", "<think>a</think>b<think>c</think>", "a", "b<think>c</think>"),
    Case("multiline", "<think>\nline one\n\nline two\n</think>\n\nok", "line one\n\nline two", "ok"),
    Case("unicode", "<think>café ✓</think>résumé", "café ✓", "résumé"),
]
OPENED_CASES = [  # the prompt opened the block (DeepSeek-R1, Qwen3 thinking models)
    Case("r1", "Let me think.\n</think>\n\nThe answer is 4.", "Let me think.", "The answer is 4."),
    Case("r1_repeats_the_tag", "<think>\nhmm\n</think>\n\nok", "hmm", "ok"),
    Case("r1_unclosed", "Let me think", "Let me think", ""),
    Case("r1_only_close", "</think>done", None, "done"),
]
TOOL_CASES = [  # reasoning, then the content through the Hermes parser
    Case("think_then_call", f"<think>\nCall the tool.\n</think>\n\n{CALL}", "Call the tool.", "", (WEATHER,)),
    Case("call_inside_reasoning_is_reasoning", f"<think>{CALL}</think>ok", CALL, "ok"),
    Case("think_content_call", f"<think>x</think>\n\nLet me check.\n{CALL}", "x", "Let me check.", (WEATHER,)),
    Case("bad_call_after_think", "<think>x</think><tool_call>{oops</tool_call>", "x",
         "<tool_call>{oops</tool_call>", (), "invalid JSON"),
    Case("no_think_call", CALL, None, "", (WEATHER,)),
]

HARMONY_CALL = ('<|start|>assistant to=functions.get_weather<|channel|>commentary <|constrain|>json<|message|>'
                '{"city": "paris"}<|call|>')
HARMONY_CASES = [
    Case("analysis_then_final",
         "<|channel|>analysis<|message|>User greets.<|end|><|start|>assistant<|channel|>final<|message|>Hi!<|return|>",
         "User greets.", "Hi!"),
    Case("analysis_then_call", "<|channel|>analysis<|message|>Need the weather.<|end|>" + HARMONY_CALL,
         "Need the weather.", "", (WEATHER,)),
    Case("recipient_after_channel",
         '<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>{"city": "paris"}<|call|>',
         None, "", (WEATHER,)),
    Case("call_without_stop_token",
         ' to=functions.get_weather<|channel|>commentary json<|message|>{"city": "paris"}', None, "", (WEATHER,)),
    Case("two_analysis_messages",
         "<|channel|>analysis<|message|>one<|end|><|start|>assistant<|channel|>analysis<|message|>two<|end|>"
         "<|start|>assistant<|channel|>final<|message|>done", "one\ntwo", "done"),
    Case("unterminated_analysis", "<|channel|>analysis<|message|>thinking about", "thinking about", ""),
    Case("plain_text", "Just text, no channels.", None, "Just text, no channels."),
    Case("builtin_tool_is_content",
         "<|channel|>analysis<|message|>x<|end|><|start|>assistant to=browser.search<|channel|>commentary<|message|>"
         '{"query": "x"}<|call|>', "x",
         '<|start|>assistant to=browser.search<|channel|>commentary<|message|>{"query": "x"}<|call|>', (),
         "not a function tool"),
    Case("unknown_function_is_content",
         '<|channel|>commentary to=functions.launch<|message|>{"n": 1}<|call|>', None,
         '<|channel|>commentary to=functions.launch<|message|>{"n": 1}<|call|>', (), "not an offered tool"),
    Case("bad_json_is_content",
         "<|channel|>commentary to=functions.search<|message|>{oops<|call|>", None,
         "<|channel|>commentary to=functions.search<|message|>{oops<|call|>", (), "invalid JSON"),
    Case("text_after_a_message", "<|channel|>final<|message|>a<|end|>stray", None, "astray", (),
         "outside a harmony message"),
    Case("markup_in_arguments",
         '<|channel|>commentary to=functions.search<|message|>{"q": "a } <b> [c]"}<|call|>', None, "",
         (("search", {"q": "a } <b> [c]"}),)),
]

PARSERS: list[tuple[str, OutputParser, list[Case]]] = [
    ("think", think(), THINK_CASES),
    ("opened", think(in_reasoning=True), OPENED_CASES),
    ("think_tools", think(tools=True), TOOL_CASES),
    ("harmony", HarmonyOutputParser(TOOLS), HARMONY_CASES),
]
ALL = [pytest.param(parser, case, id=f"{name}-{case.id}") for name, parser, cases in PARSERS for case in cases]


def check(parsed: ParsedOutput, case: Case) -> None:
    assert parsed.reasoning == case.reasoning
    assert parsed.content == case.content
    assert [(call.name, json.loads(call.arguments)) for call in parsed.tool_calls] == list(case.calls)
    assert all(call.id.startswith("call_") for call in parsed.tool_calls)
    if case.error is None:
        assert parsed.error is None
    else:
        assert parsed.error is not None and case.error in parsed.error


def streamed(parser: OutputParser, chunks: list[str]) -> tuple[ParsedOutput, list[Any]]:
    stream = parser.stream()
    pieces: list[Any] = []
    for chunk in chunks:
        pieces += stream.feed(chunk)
    pieces += stream.finish()
    return fold(pieces, stream.error), pieces


@pytest.mark.parametrize(("parser", "case"), ALL)
def test_parse_golden(parser: OutputParser, case: Case) -> None:
    check(parser.parse(case.text), case)


@pytest.mark.parametrize(("parser", "case"), ALL)
def test_stream_agrees_with_parse_at_every_split(parser: OutputParser, case: Case) -> None:
    text = case.text
    for split in range(len(text) + 1):
        check(streamed(parser, [text[:split], text[split:]])[0], case)
    for a in range(0, len(text), 3):  # three chunks
        for b in range(a, len(text), 5):
            check(streamed(parser, [text[:a], text[a:b], text[b:]])[0], case)
    parsed, pieces = streamed(parser, list(text))  # one character at a time
    check(parsed, case)
    for piece in pieces:  # a tool call's first piece carries id and name, then its arguments
        if not isinstance(piece, ReasoningDelta) and piece.index is not None and piece.id is not None:
            assert piece.name and piece.arguments == ""


def test_reasoning_streams_before_the_block_closes() -> None:
    stream = think().stream()
    assert stream.feed("<think>\nfirst ") == [ReasoningDelta("first")]
    assert stream.feed("second \n") == [ReasoningDelta(" second")]  # trailing whitespace held back
    assert stream.feed("</th") == []
    assert [getattr(p, "content", None) for p in stream.feed("ink>\n\nAnswer")] == ["Answer"]
    assert stream.finish() == []


def test_harmony_streams_reasoning_and_content_before_their_message_ends() -> None:
    stream = HarmonyOutputParser(TOOLS).stream()
    assert stream.feed("<|channel|>analysis<|message|>Need") == [ReasoningDelta("Need")]
    assert stream.feed(" it<|e") == [ReasoningDelta(" it")]
    pieces = stream.feed("nd|><|start|>assistant<|channel|>final<|message|>Sun")
    assert [getattr(p, "content", None) for p in pieces] == ["Sun"]
    assert HarmonyOutputParser().needs_special_tokens and not think().needs_special_tokens


def test_in_reasoning_follows_the_block() -> None:
    stream = think().stream()
    states = []
    for chunk in ("  ", "<think>", "a", "</think>", "b"):
        stream.feed(chunk)
        states.append(stream.in_reasoning)
    assert states == [False, True, True, False, False]
    opened = think(in_reasoning=True).stream()
    assert opened.in_reasoning and not ComposedOutputParser(think=False).stream().in_reasoning
    harmony = HarmonyOutputParser().stream()
    harmony.feed("<|channel|>analysis<|message|>x")
    assert harmony.in_reasoning
    harmony.feed("<|end|><|start|>assistant<|channel|>final<|message|>y")
    assert not harmony.in_reasoning


def test_feed_after_finish_is_an_error() -> None:
    for parser in (think(), HarmonyOutputParser()):
        stream = parser.stream()
        stream.finish()
        assert stream.finish() == []
        with pytest.raises(RuntimeError):
            stream.feed("x")


# -- choosing the format -------------------------------------------------------------------------


def test_reasoning_parser_for_names_and_the_project_template() -> None:
    assert reasoning_parser_for(CHAT_TEMPLATE) == "qwen3"  # it has Qwen3's enable_thinking switch
    assert reasoning_parser_for(None) is None and reasoning_parser_for("{{ messages }}") is None
    assert reasoning_parser_for(CHAT_TEMPLATE, "none") is None
    assert reasoning_parser_for(None, "deepseek_r1") == "deepseek_r1"
    with pytest.raises(ValueError, match="unknown reasoning parser"):
        reasoning_parser_for(CHAT_TEMPLATE, "bogus")


@pytest.mark.parametrize(("filename", "expected"), [
    ("Qwen-Qwen3-0.6B.jinja", "qwen3"),
    ("deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja", "deepseek_r1"),
    ("openai-gpt-oss-120b.jinja", "harmony"),
    ("Qwen-Qwen2.5-7B-Instruct.jinja", None),
    ("meta-llama-Llama-3.1-8B-Instruct.jinja", None),
    ("mistralai-Mistral-Nemo-Instruct-2407.jinja", None),
])
def test_reasoning_parser_for_real_templates(shared_fixtures: Path, filename: str, expected: str | None) -> None:
    assert reasoning_parser_for(template_text(shared_fixtures, filename)) == expected


def template_text(shared_fixtures: Path, filename: str) -> str:
    path = shared_fixtures / "chat_templates" / filename
    if not path.is_file():
        pytest.skip(f"chat template fixture {path} is absent")
    return path.read_text()


@pytest.fixture(scope="module")
def base_tokenizer() -> Any:
    return build_tokenizer()


def tokenizer_with(base_tokenizer: Any, template: str) -> Any:
    tokenizer = copy.deepcopy(base_tokenizer)
    tokenizer.chat_template = template
    return tokenizer


def messages(payload: list[dict[str, Any]]) -> list[Any]:
    return ChatCompletionRequest.model_validate({"model": "m", "messages": payload}).messages


TOOL_SPEC = {"type": "function", "function": {"name": "get_weather", "description": "Current weather",
                                              "parameters": {"type": "object",
                                                             "properties": {"city": {"type": "string"}}}}}


def tools() -> list[Any]:
    return ChatCompletionRequest.model_validate({"model": "m", "messages": [{"role": "user", "content": "x"}],
                                                 "tools": [TOOL_SPEC]}).tools


CONVERSATION = [
    {"role": "user", "content": "What is the weather in paris?"},
    {"role": "assistant", "content": None, "reasoning_content": "I need the weather tool.",
     "tool_calls": [{"id": "call_1", "type": "function",
                     "function": {"name": "get_weather", "arguments": '{"city": "paris"}'}}]},
    {"role": "tool", "tool_call_id": "call_1", "content": '{"celsius": 21}'},
]


def test_qwen3_template_reasoning_round_trip(shared_fixtures: Path, base_tokenizer: Any) -> None:
    """Qwen3's template shows the reasoning of the turn in progress; what it writes for an assistant
    turn parses back into that reasoning and call, and `enable_thinking` decides where output starts."""
    tokenizer = tokenizer_with(base_tokenizer, template_text(shared_fixtures, "Qwen-Qwen3-0.6B.jinja"))
    prompt = render_chat(tokenizer, messages(CONVERSATION), tools=tools()).text
    assert "<think>\nI need the weather tool.\n</think>" in prompt
    assert not starts_in_reasoning(prompt)
    turn = prompt.split("<|im_start|>assistant\n")[1].split("<|im_end|>")[0]
    parser = ComposedOutputParser(think=True, in_reasoning=False, tools=HermesToolParser(["get_weather"]))
    parsed = parser.parse(turn)
    assert parsed.reasoning == "I need the weather tool." and parsed.content == ""
    assert [(c.name, json.loads(c.arguments)) for c in parsed.tool_calls] == [WEATHER]
    off = render_chat(tokenizer, messages(CONVERSATION[:1]), reasoning_effort="none").text
    assert off.endswith("<think>\n\n</think>\n\n") and not starts_in_reasoning(off)


def test_deepseek_r1_template_opens_the_block(shared_fixtures: Path, base_tokenizer: Any) -> None:
    tokenizer = tokenizer_with(base_tokenizer,
                               template_text(shared_fixtures, "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja"))
    prompt = render_chat(tokenizer, messages([{"role": "user", "content": "2+2?"}])).text
    assert prompt.endswith("<｜Assistant｜><think>\n") and starts_in_reasoning(prompt)
    parsed = ComposedOutputParser(think=True, in_reasoning=True).parse("Add them.\n</think>\n\n4")
    assert (parsed.reasoning, parsed.content) == ("Add them.", "4")
    with pytest.raises(UnsupportedFieldError, match="no reasoning switch"):  # R1 always thinks
        render_chat(tokenizer, messages([{"role": "user", "content": "x"}]), reasoning_effort="low")


def test_gpt_oss_template_round_trip(shared_fixtures: Path, base_tokenizer: Any) -> None:
    """What gpt-oss's template writes for a reasoning + tool-call turn, parsed back; an earlier turn's
    reasoning reaches the template as `thinking`; `reasoning_effort` goes to the template as it is."""
    tokenizer = tokenizer_with(base_tokenizer, template_text(shared_fixtures, "openai-gpt-oss-120b.jinja"))
    prompt = render_chat(tokenizer, messages(CONVERSATION), tools=tools(), reasoning_effort="high").text
    assert "Reasoning: high" in prompt
    assert "<|channel|>analysis<|message|>I need the weather tool.<|end|>" in prompt
    turn = prompt.split("<|start|>assistant", 1)[1].split("<|start|>functions.")[0]
    parsed = HarmonyOutputParser(["get_weather"]).parse(turn)
    assert parsed.reasoning == "I need the weather tool." and parsed.content == "" and parsed.error is None
    assert [(c.name, json.loads(c.arguments)) for c in parsed.tool_calls] == [WEATHER]
    with pytest.raises(InvalidRequestError, match="low, medium, high"):
        render_chat(tokenizer, messages(CONVERSATION[:1]), reasoning_effort="minimal")


def test_harmony_parser_agrees_with_openai_harmony_when_its_vocabulary_is_available() -> None:
    """`openai-harmony` downloads (or reads from TIKTOKEN_ENCODINGS_BASE, SHA-256 checked) the o200k
    vocabulary; offline it cannot load, and this comparison skips."""
    harmony = pytest.importorskip("openai_harmony")
    try:
        encoding = harmony.load_harmony_encoding(harmony.HarmonyEncodingName.HARMONY_GPT_OSS)
    except Exception as exc:  # noqa: BLE001 - HarmonyError: no vocabulary without network
        pytest.skip(f"openai-harmony cannot load its vocabulary here: {exc}")
    for case in HARMONY_CASES[:2]:
        parser = harmony.StreamableParser(encoding, role=harmony.Role.ASSISTANT)
        for token in encoding.encode(case.text, allowed_special="all"):
            parser.process(token)
        parser.process_eos()
        reasoning = "\n".join(m.content[0].text for m in parser.messages if m.channel == "analysis") or None
        final = "".join(m.content[0].text for m in parser.messages if m.channel == "final" and not m.recipient)
        calls = [(m.recipient.removeprefix("functions."), json.loads(m.content[0].text))
                 for m in parser.messages if m.recipient]
        assert (reasoning, final, calls) == (case.reasoning, case.content, list(case.calls))


# -- effort and reasoning items --------------------------------------------------------------------


@pytest.mark.parametrize(("effort", "expected"), [
    ("none", False), ("minimal", False), ("low", True), ("medium", True), ("high", True), ("xhigh", True),
])
def test_effort_maps_onto_enable_thinking(effort: str, expected: bool) -> None:
    assert effort_template_kwargs(CHAT_TEMPLATE, effort, None, param="reasoning_effort") == {
        "enable_thinking": expected}


def test_effort_and_template_kwargs() -> None:
    assert effort_template_kwargs(CHAT_TEMPLATE, None, {"x": 1}, param="p") == {"x": 1}
    assert effort_template_kwargs(CHAT_TEMPLATE, "high", {"enable_thinking": True}, param="p") == {
        "enable_thinking": True}
    with pytest.raises(InvalidRequestError, match="chat_template_kwargs") as conflict:
        effort_template_kwargs(CHAT_TEMPLATE, "none", {"enable_thinking": True}, param="reasoning.effort")
    assert conflict.value.param == "reasoning.effort"
    with pytest.raises(UnsupportedFieldError, match="no reasoning switch") as refused:
        effort_template_kwargs("{{ messages }}", "high", None, param="reasoning_effort")
    assert refused.value.param == "reasoning_effort"
    gpt_oss = "{{ reasoning_effort }}"
    assert effort_template_kwargs(gpt_oss, "low", None, param="p") == {"reasoning_effort": "low"}


def test_reasoning_items_become_the_next_assistant_turns_reasoning() -> None:
    request = ResponseCreateRequest.model_validate({"model": "m", "input": [
        {"role": "user", "content": "weather?"},
        {"type": "reasoning", "id": "rs_1", "summary": [], "content": [{"type": "reasoning_text", "text": "Call it."}]},
        {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "call_1", "output": "21"},
        {"type": "reasoning", "summary": [{"type": "summary_text", "text": "only a summary"}]},
        {"type": "reasoning", "summary": [], "content": [{"type": "reasoning_text", "text": "Answer now."}]},
        {"role": "assistant", "content": "It is 21."},
    ]})
    rendered = chat_messages(None, stored_items(request.input))
    assert [m.role for m in rendered] == ["user", "assistant", "tool", "assistant"]
    assert rendered[1].reasoning_content == "Call it." and rendered[1].tool_calls
    assert rendered[3].reasoning_content == "Answer now." and rendered[3].content == "It is 21."


def test_responses_reasoning_settings_policy() -> None:
    ok = ResponseCreateRequest.model_validate({"model": "m", "input": "x",
                                               "reasoning": {"effort": "low", "summary": "auto"}})
    assert ok.reasoning is not None and ok.reasoning.effort == "low"
    for field in ("summary", "generate_summary"):
        with pytest.raises(Exception, match="summar"):
            ResponseCreateRequest.model_validate({"model": "m", "input": "x", "reasoning": {field: "detailed"}})
