"""Reasoning out of generated text, composed with the tool-call parsers (`ComposedOutputParser`, an
`OutputParser` of `localoai.parsers.output`): the model's raw text into reasoning, content and tool calls.

Formats (`reasoning_parser_for` chooses from the chat template; `localoai.start(reasoning_parser=...)`
forces one, `"none"` turns reasoning parsing off):

- `qwen3` / `deepseek_r1` (Qwen3, QwQ, DeepSeek-R1 and its distills): a leading
  `<think>...</think>` block is reasoning, what follows is content (tool calls included). They are
  one parser under vLLM's two names: where the output starts is read from the rendered prompt, not
  from the family. A prompt that ends with an open `<think>` (DeepSeek-R1's template, Qwen3's
  thinking-only models) makes the completion start inside the reasoning, so only `</think>` appears;
  otherwise a `<think>` must open the output (after whitespace) for there to be reasoning. A block
  that never closes (the budget ran out) is all reasoning: streaming has already sent it as such,
  and the non-streamed answer must agree.
- `harmony` (gpt-oss): OpenAI's harmony channels (`localoai.parsers.harmony`), which carry
  reasoning, content and tool calls at once.

Reasoning is stripped at both ends; the content after a `</think>` loses its leading whitespace
(an output with no reasoning is left exactly as it was). Both `parse` and `stream` run the same
scanner, fed in pieces, so a streamed answer and a non-streamed one can never disagree.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

from localoai.parsers.base import StreamDelta, ToolCallStream, ToolParser
from localoai.parsers.scanning import _partial_suffix
from localoai.parsers.output import OutputParser, OutputPiece, OutputStream, ReasoningDelta

OPEN_THINK = "<think>"
CLOSE_THINK = "</think>"
_WS = " \t\r\n"

THINK_FORMATS = ("qwen3", "deepseek_r1")
HARMONY_FORMAT = "harmony"
REASONING_PARSERS = (*THINK_FORMATS, HARMONY_FORMAT)
"""Every reasoning format by name (`"none"` turns parsing off)."""


def starts_in_reasoning(prompt_text: str) -> bool:
    """Whether the rendered prompt leaves a `<think>` block open, so the completion starts inside it."""
    return prompt_text.rstrip(_WS).endswith(OPEN_THINK)


# -- the <think> scanner -----------------------------------------------------------------------

_State = Literal["start", "reasoning", "content"]


class _ThinkScanner:
    """Splits an output into (is_reasoning, text) runs. Text that could still be part of a tag is
    held back until more arrives, or until `final` (the end of the output) decides it."""

    def __init__(self, *, in_reasoning: bool) -> None:
        self.state: _State = "start"
        self.default_reasoning = in_reasoning
        """The prompt opened the block: without a `<think>` the output is reasoning from its start."""
        self.buffer = ""

    def feed(self, text: str, *, final: bool) -> Iterator[tuple[bool, str]]:
        buf = self.buffer + text
        self.buffer = ""
        if self.state == "start":
            body = buf.lstrip(_WS)
            if body.startswith(OPEN_THINK):
                buf = body[len(OPEN_THINK):]
                self.state = "reasoning"
            elif not final and OPEN_THINK.startswith(body):  # nothing yet, or a `<think>` still arriving
                self.buffer = buf
                return
            else:
                self.state = "reasoning" if self.default_reasoning else "content"
        if self.state == "reasoning":
            close = buf.find(CLOSE_THINK)
            if close < 0:
                keep = len(buf) if final else len(buf) - _partial_suffix(buf, 0, (CLOSE_THINK,))
                if keep:
                    yield True, buf[:keep]
                self.buffer = buf[keep:]
                return
            if close:
                yield True, buf[:close]
            buf = buf[close + len(CLOSE_THINK):]
            self.state = "content"
            yield False, ""  # marks the end of the block: the content after it loses its leading whitespace
        if buf:
            yield False, buf


class ComposedOutputStream(OutputStream):
    """A `<think>` block (when the model has one) first, then the content through the tool-call
    stream (when tools were offered)."""

    def __init__(self, scanner: _ThinkScanner | None, tools: ToolCallStream | None) -> None:
        self._scanner = scanner
        self._tools = tools
        self._reasoning_started = False
        self._reasoning_ws = ""  # trailing whitespace of the reasoning, sent only if more follows
        self._after_block = False  # the content follows a `</think>`: its leading whitespace goes
        self._finished = False

    @property
    def error(self) -> str | None:
        return self._tools.error if self._tools is not None else None

    @property
    def in_reasoning(self) -> bool:
        scanner = self._scanner
        return scanner is not None and (scanner.state == "reasoning"
                                        or (scanner.state == "start" and scanner.default_reasoning))

    def feed(self, text_delta: str) -> list[OutputPiece]:
        if self._finished:
            raise RuntimeError("feed() after finish()")
        return self._pieces(text_delta, final=False)

    def finish(self) -> list[OutputPiece]:
        if self._finished:
            return []
        pieces = self._pieces("", final=True)
        self._finished = True
        if self._tools is not None:
            pieces += self._tools.finish()
        return pieces

    def _pieces(self, text: str, *, final: bool) -> list[OutputPiece]:
        runs = self._scanner.feed(text, final=final) if self._scanner is not None else iter([(False, text)])
        out: list[OutputPiece] = []
        for is_reasoning, run in runs:
            if is_reasoning:
                self._reasoning(run, out)
            elif not run:
                self._after_block = True
            else:
                self._content(run, out)
        return out

    def _reasoning(self, text: str, out: list[OutputPiece]) -> None:
        if not self._reasoning_started:
            text = text.lstrip(_WS)
            if not text:
                return
            self._reasoning_started = True
        body = text.rstrip(_WS)
        if not body:
            self._reasoning_ws += text
            return
        piece = self._reasoning_ws + body
        self._reasoning_ws = text[len(body):]
        if out and isinstance(out[-1], ReasoningDelta):
            out[-1].text += piece
        else:
            out.append(ReasoningDelta(piece))

    def _content(self, text: str, out: list[OutputPiece]) -> None:
        if self._after_block:
            text = text.lstrip(_WS)
            if not text:
                return
            self._after_block = False
        if self._tools is not None:
            out.extend(self._tools.feed(text))
        elif out and isinstance(out[-1], StreamDelta) and out[-1].content is not None:
            out[-1].content += text
        else:
            out.append(StreamDelta(content=text))


class ComposedOutputParser(OutputParser):
    """Reasoning by `<think>` (if `think`), then tool calls by `tools` (if given)."""

    def __init__(self, *, think: bool, in_reasoning: bool = False, tools: ToolParser | None = None) -> None:
        self.think = think
        self.in_reasoning = in_reasoning
        self.tools = tools

    @property
    def tool_parser(self) -> ToolParser | None:
        return self.tools

    @property
    def reasoning_end(self) -> str | None:
        return CLOSE_THINK if self.think and self.in_reasoning else None

    def stream(self) -> ComposedOutputStream:
        scanner = _ThinkScanner(in_reasoning=self.in_reasoning) if self.think else None
        return ComposedOutputStream(scanner, self.tools.stream() if self.tools is not None else None)


def reasoning_parser_for(chat_template: str | None, name: str | None = None) -> str | None:
    """The reasoning format of a model: the one named, else the one its chat template teaches;
    None for none (`"none"` included)."""
    if name is not None:
        if name == "none":
            return None
        if name not in REASONING_PARSERS:
            raise ValueError(f"unknown reasoning parser {name!r} (known: {', '.join(REASONING_PARSERS)}, none)")
        return name
    if not chat_template:
        return None
    if "<|channel|>" in chat_template:
        return HARMONY_FORMAT
    if OPEN_THINK in chat_template or CLOSE_THINK in chat_template:
        return "deepseek_r1" if "<｜Assistant｜>" in chat_template else "qwen3"
    return None
