"""Tool calls out of generated text: the model writes markup, the API returns `tool_calls`.

Pure text processing, no HTTP and no model. Each format is a `ToolParser` with a whole-text
`parse` and an incremental `stream`; both run the same scanner, so a streamed answer and a
non-streamed one can never disagree. Malformed markup never raises: it stays in the content.
"""

from __future__ import annotations

import json
import re
import secrets
from abc import ABC, abstractmethod
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar


@dataclass
class ParsedToolCall:
    """One function call, shaped as OpenAI's `tool_calls[i]` (`arguments` is a JSON string)."""

    id: str
    name: str
    arguments: str


@dataclass
class ParseResult:
    content: str
    """Text outside tool-call blocks (malformed blocks included), stripped; "" if none."""
    tool_calls: list[ParsedToolCall] = field(default_factory=list)
    error: str | None = None
    """Why some markup could not be parsed (several reasons joined by "; ")."""


@dataclass
class StreamDelta:
    """A content fragment, or a piece of tool call `index` in OpenAI's streaming shape: the first
    piece of a call carries `id` and `name`, later ones only `arguments` fragments."""

    content: str | None = None
    index: int | None = None
    id: str | None = None
    name: str | None = None
    arguments: str | None = None


def new_call_id() -> str:
    return "call_" + secrets.token_hex(12)


class ToolCallStream(ABC):
    """Turns text deltas into content and tool-call deltas. Content is stripped at both ends like
    `ParseResult.content` (leading whitespace is dropped, trailing whitespace held back), so the
    concatenated content deltas equal `parse(full_text).content`."""

    @property
    @abstractmethod
    def error(self) -> str | None:
        """Why some markup came back as content (several reasons joined by "; "), or None."""

    @abstractmethod
    def feed(self, text_delta: str) -> list[StreamDelta]: ...

    @abstractmethod
    def finish(self) -> list[StreamDelta]:
        """The end of the output: whatever was held back, unterminated markup as content."""


class ToolParser(ABC):
    """One tool-call format. `tool_names`: the tools offered to the model; a call to any other
    name is treated as malformed (left in the content). None accepts any name."""

    name: ClassVar[str]

    def __init__(self, tool_names: Collection[str] | None = None) -> None:
        self.tool_names = frozenset(tool_names) if tool_names is not None else None

    @classmethod
    @abstractmethod
    def matches(cls, chat_template: str) -> bool:
        """Whether a chat template teaches the model this format."""

    @abstractmethod
    def parse(self, text: str) -> ParseResult:
        """A complete output."""

    @abstractmethod
    def stream(self) -> ToolCallStream:
        """A fresh incremental parser for one output."""


# --- Hermes / Qwen2.5 / Qwen3 -------------------------------------------------------------------

OPEN = "<tool_call>"
CLOSE = "</tool_call>"
_WS = " \t\r\n"
_IN_STRING = re.compile(r'["\\]')
_OUTSIDE_STRING = re.compile(r'["{}\[\]<]')


@dataclass
class _Content:
    text: str


@dataclass
class _Call:
    name: str
    arguments: str


@dataclass
class _Bad:
    raw: str
    error: str


_Event = _Content | _Call | _Bad


class _ObjectScan:
    """Finds where the JSON object starting at `start` ends, resuming where the last call stopped
    (a streamed block is rescanned only over its new text). Only double-quoted strings and
    brackets are tracked; whether the object is valid JSON is `json.loads`'s call afterwards."""

    def __init__(self, start: int) -> None:
        self.start = start
        self.pos = start + 1
        self.depth = 1
        self.in_string = False
        self.end: int | None = None
        """Index just after the closing brace."""
        self.bad: bool = False
        """A `<` outside any string: cannot be JSON, so the block is malformed."""

    def advance(self, text: str) -> bool:
        """True once the object's extent is known (`end` set, or `bad`)."""
        if self.end is not None or self.bad:
            return True
        i, n = self.pos, len(text)
        while i < n:
            if self.in_string:
                m = _IN_STRING.search(text, i)
                if m is None:
                    i = n
                    break
                i = m.start()
                if text[i] == "\\":
                    i += 2  # past the escaped character, even one that has not arrived yet
                    continue
                self.in_string = False
                i += 1
                continue
            m = _OUTSIDE_STRING.search(text, i)
            if m is None:
                i = n
                break
            i, char = m.start(), m.group()
            if char == '"':
                self.in_string = True
            elif char == "<":
                self.bad = True
                return True
            elif char in "{[":
                self.depth += 1
            else:
                self.depth -= 1
                if self.depth == 0:
                    self.end = i + 1
                    return True
            i += 1
        self.pos = i
        return False


def _skip_ws(text: str, i: int) -> int:
    while i < len(text) and text[i] in _WS:
        i += 1
    return i


def _partial_open(text: str, start: int) -> int:
    """Length of the longest suffix of `text[start:]` that could be the start of `<tool_call>`."""
    for k in range(min(len(OPEN) - 1, len(text) - start), 0, -1):
        if text.endswith(OPEN[:k]):
            return k
    return 0


class _HermesScanner:
    """The state machine shared by `parse` and `stream`. Every decision it takes on a prefix of
    the output is the one it would take on the whole output, which is what makes streaming
    agree with `parse` for any split into chunks: a block is decided only once its extent is
    certain, and with `final` whatever is left is decided as the end of the output."""

    def __init__(self, tool_names: frozenset[str] | None) -> None:
        self.tool_names = tool_names
        self.buffer = ""
        self.scan: _ObjectScan | None = None

    def feed(self, text: str, *, final: bool) -> Iterator[_Event]:
        buf = self.buffer + text
        pos = 0
        while True:
            start = buf.find(OPEN, pos)
            if start < 0:
                keep = len(buf) if final else len(buf) - _partial_open(buf, pos)
                if keep > pos:
                    yield _Content(buf[pos:keep])
                buf = buf[keep:]
                break
            if start > pos:
                yield _Content(buf[pos:start])
            buf, pos = buf[start:], 0  # a pending block always starts at 0, so `scan` stays valid
            decided = self._block(buf, final)
            if decided is None:
                break
            event, end = decided
            self.scan = None
            yield event
            pos = end
        self.buffer = buf

    def _block(self, text: str, final: bool) -> tuple[_Event, int] | None:
        """The block at `text[0]`, and where it ends; None while that is not known yet."""
        after_tag = len(OPEN)
        j = _skip_ws(text, after_tag)
        if j == len(text):
            return self._unterminated(text) if final else None
        if text[j] != "{":
            return self._malformed(text, after_tag, "the <tool_call> block does not hold a JSON object", final)
        if self.scan is None:
            self.scan = _ObjectScan(j)
        scan = self.scan
        if not scan.advance(text):
            if final:
                return self._malformed(text, after_tag, "invalid JSON in a <tool_call> block", final)
            return None
        if scan.bad or scan.end is None:
            return self._malformed(text, after_tag, "invalid JSON in a <tool_call> block", final)
        k = _skip_ws(text, scan.end)
        if text.startswith(CLOSE, k):
            end = k + len(CLOSE)
            call = self._call(text[scan.start : scan.end])
            if isinstance(call, str):
                return _Bad(text[:end], call), end
            return call, end
        # Anything else is bad (`_malformed` waits while a `</tool_call>` may still be arriving).
        return self._malformed(text, scan.end, "unexpected text after the JSON in a <tool_call> block", final)

    @staticmethod
    def _unterminated(text: str) -> tuple[_Event, int]:
        return _Bad(text, "unterminated <tool_call> block"), len(text)

    def _malformed(self, text: str, search_from: int, error: str, final: bool) -> tuple[_Event, int] | None:
        """A block known to be bad: it runs to the next `</tool_call>`, or to the end of the output."""
        close = text.find(CLOSE, search_from)
        if close < 0:
            return self._unterminated(text) if final else None
        end = close + len(CLOSE)
        return _Bad(text[:end], error), end

    def _call(self, payload: str) -> _Call | str:
        """The call a block's JSON describes, or why it is not one."""
        try:
            obj = json.loads(payload, strict=False)  # strict=False: raw newlines inside strings
        except (ValueError, RecursionError) as e:
            return f"invalid JSON in a <tool_call> block: {e}"
        if not isinstance(obj, dict):
            return "the <tool_call> block does not hold a JSON object"
        name = obj.get("name")
        if not isinstance(name, str) or not name:
            return "a <tool_call> block has no function name"
        if self.tool_names is not None and name not in self.tool_names:
            offered = ", ".join(sorted(self.tool_names)) or "none"
            return f"the model called {name!r}, which is not an offered tool (offered: {offered})"
        args: Any = obj["arguments"] if "arguments" in obj else obj.get("parameters")
        if args is None:
            args = {}
        if isinstance(args, str):  # some models double-encode the arguments
            try:
                args = json.loads(args, strict=False)
            except (ValueError, RecursionError):
                pass
        if not isinstance(args, dict):
            return f"the arguments of {name!r} in a <tool_call> block are not a JSON object"
        return _Call(name, json.dumps(args, ensure_ascii=False, separators=(",", ":")))


def _join_errors(errors: list[str]) -> str | None:
    return "; ".join(errors) if errors else None


class HermesToolCallStream(ToolCallStream):
    def __init__(self, tool_names: frozenset[str] | None) -> None:
        self._scanner = _HermesScanner(tool_names)
        self._errors: list[str] = []
        self._calls = 0
        self._started = False  # whether any non-whitespace content went out
        self._pending_ws = ""
        self._finished = False

    @property
    def error(self) -> str | None:
        return _join_errors(self._errors)

    def feed(self, text_delta: str) -> list[StreamDelta]:
        if self._finished:
            raise RuntimeError("feed() after finish()")
        return self._deltas(self._scanner.feed(text_delta, final=False))

    def finish(self) -> list[StreamDelta]:
        if self._finished:
            return []
        self._finished = True
        return self._deltas(self._scanner.feed("", final=True))  # trailing whitespace is dropped

    def _deltas(self, events: Iterator[_Event]) -> list[StreamDelta]:
        out: list[StreamDelta] = []
        for event in events:
            if isinstance(event, _Call):
                index = self._calls
                self._calls += 1
                out.append(StreamDelta(index=index, id=new_call_id(), name=event.name, arguments=""))
                out.append(StreamDelta(index=index, arguments=event.arguments))
                continue
            if isinstance(event, _Bad):
                self._errors.append(event.error)
            self._content(event.raw if isinstance(event, _Bad) else event.text, out)
        return out

    def _content(self, text: str, out: list[StreamDelta]) -> None:
        if not self._started:
            text = text.lstrip()
            if not text:
                return
            self._started = True
        body = text.rstrip()
        if not body:
            self._pending_ws += text
            return
        piece = self._pending_ws + body
        self._pending_ws = text[len(body) :]
        if out and out[-1].content is not None:
            out[-1].content += piece
        else:
            out.append(StreamDelta(content=piece))


class HermesToolParser(ToolParser):
    """Hermes / Qwen2.5 / Qwen3: `<tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>`,
    one block per call, possibly after some content. `"parameters"` is accepted for `"arguments"`.

    A block's JSON is delimited by its braces, so `}` or `</tool_call>` inside a string argument
    do not end it. Streaming holds a block back until its `</tool_call>` and then emits the call
    whole (the name, then all its arguments in one fragment): only then is it known to be valid.
    """

    name = "hermes"

    @classmethod
    def matches(cls, chat_template: str) -> bool:
        return OPEN in chat_template

    def parse(self, text: str) -> ParseResult:
        content: list[str] = []
        calls: list[ParsedToolCall] = []
        errors: list[str] = []
        for event in _HermesScanner(self.tool_names).feed(text, final=True):
            if isinstance(event, _Call):
                calls.append(ParsedToolCall(new_call_id(), event.name, event.arguments))
            elif isinstance(event, _Bad):
                content.append(event.raw)
                errors.append(event.error)
            else:
                content.append(event.text)
        return ParseResult("".join(content).strip(), calls, _join_errors(errors))

    def stream(self) -> HermesToolCallStream:
        return HermesToolCallStream(self.tool_names)


TOOL_PARSERS: dict[str, type[ToolParser]] = {HermesToolParser.name: HermesToolParser}
"""Every format by name, in the order `tool_parser_for` tries them against a chat template."""


def tool_parser_for(
    chat_template: str | None, name: str | None = None, *, tool_names: Collection[str] | None = None
) -> ToolParser | None:
    """The parser for a model: the one named (e.g. `"hermes"`), else the first whose markup its
    chat template uses; None when no format matches (the output is then plain content)."""
    if name is not None:
        try:
            return TOOL_PARSERS[name](tool_names)
        except KeyError:
            raise ValueError(f"unknown tool parser {name!r} (known: {', '.join(TOOL_PARSERS)})") from None
    if not chat_template:
        return None
    for parser in TOOL_PARSERS.values():
        if parser.matches(chat_template):
            return parser(tool_names)
    return None
