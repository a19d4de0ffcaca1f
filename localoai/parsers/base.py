"""The tool-call parser interface and the machinery the formats share.

Each format is a `ToolParser` with a whole-text `parse` and an incremental `stream`; both run
the same scanner (a `_Scanner`, fed the output in pieces, yielding content / call / bad-markup
events), so a streamed answer and a non-streamed one can never disagree. Malformed markup never
raises: it stays in the content.
"""

from __future__ import annotations

import enum
import json
import re
import secrets
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Iterator
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


class Slot(enum.Enum):
    """A place in a `ToolCallFormat.call` that the grammar fills in."""

    NAME = "name"
    """The tool's name, verbatim."""
    ARGUMENTS = "arguments"
    """A JSON object valid against the tool's parameters schema."""
    NEWLINE = "newline"
    """An optional line break (templates differ on whether they write one there)."""


@dataclass(frozen=True)
class ToolCallFormat:
    """How a format writes tool calls, for a grammar that makes the model write them (forced or
    `strict` tool calls, `localoai.constraints`): `begin`, one or more calls separated by
    `separator`, then `end`; a call is `call`. Each is a sequence of literal text and `Slot`s; a
    literal that is a special token of the tokenizer is matched as that token. What the grammar
    lets the model write must be what the format's parser reads back as the same calls."""

    call: tuple[str | Slot, ...]
    begin: tuple[str | Slot, ...] = ()
    separator: tuple[str | Slot, ...] = ()
    end: tuple[str | Slot, ...] = ()
    parallel: bool = True
    """Whether one output may hold several calls (not in harmony, where a call ends the turn)."""
    after_text: bool = True
    """Whether calls may follow free text, starting at `trigger`: then, under `tool_choice: auto`,
    a grammar can leave the text free and constrain each call from its first marker on."""

    @property
    def trigger(self) -> str:
        """The literal that opens tool-call markup."""
        first = (self.begin or self.call)[0]
        return first if isinstance(first, str) else ""


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
    markup: ClassVar[tuple[str, ...]] = ()
    """The format's markers. Where a tokenizer has one as a special token (Mistral's `[TOOL_CALLS]`),
    the output is decoded keeping it (`LoadedModel.markup_token_ids`): else the parser never sees it."""

    def __init__(self, tool_names: Collection[str] | None = None) -> None:
        self.tool_names = frozenset(tool_names) if tool_names is not None else None

    @staticmethod
    def new_call_id() -> str:
        """An id for one parsed call (`call_` + 24 hex digits unless the format needs another)."""
        return new_call_id()

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

    @classmethod
    def call_format(cls) -> ToolCallFormat | None:
        """How this format writes calls, for constrained decoding; None when a grammar cannot
        describe it (then tool calls cannot be forced)."""
        return None



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



def _join_errors(errors: list[str]) -> str | None:
    return "; ".join(errors) if errors else None


def _partial_suffix(text: str, start: int, markers: tuple[str, ...]) -> int:
    """Length of the longest suffix of `text[start:]` that could be the start of one of `markers`."""
    best = 0
    for marker in markers:
        for k in range(min(len(marker) - 1, len(text) - start), best, -1):
            if text.endswith(marker[:k]):
                best = k
                break
    return best


def _compact(args: Any) -> str:
    return json.dumps(args, ensure_ascii=False, separators=(",", ":"))


def _make_call(obj: Any, tool_names: frozenset[str] | None, where: str, *, args_keys: tuple[str, ...]) -> _Call | str:
    """The call a decoded JSON object describes (`{"name": ..., <args key>: {...}}`), or why it is
    not one. `where` names the markup in error messages. String arguments are JSON-decoded (some
    models double-encode them); missing arguments are `{}`."""
    if not isinstance(obj, dict):
        return f"{where} does not hold a JSON object"
    name = obj.get("name")
    if not isinstance(name, str) or not name:
        return f"{where} has no function name"
    args: Any = None
    for key in args_keys:
        if key in obj:
            args = obj[key]
            break
    return _checked_call(name, args, tool_names, where)


def _checked_call(name: str, args: Any, tool_names: frozenset[str] | None, where: str) -> _Call | str:
    if tool_names is not None and name not in tool_names:
        offered = ", ".join(sorted(tool_names)) or "none"
        return f"the model called {name!r}, which is not an offered tool (offered: {offered})"
    if args is None:
        args = {}
    if isinstance(args, str):  # some models double-encode the arguments
        try:
            args = json.loads(args, strict=False)
        except (ValueError, RecursionError):
            pass
    if not isinstance(args, dict):
        return f"the arguments of {name!r} in {where} are not a JSON object"
    return _Call(name, _compact(args))


def _loads(payload: str) -> Any:
    """`json.loads` that tolerates raw newlines inside strings; raises ValueError on bad JSON."""
    try:
        return json.loads(payload, strict=False)
    except RecursionError as e:
        raise ValueError("JSON nested too deeply") from e


class _Scanner(ABC):
    """A format's state machine, shared by `parse` and `stream`. Every decision it takes on a
    prefix of the output must be the one it would take on the whole output (a piece of markup is
    decided only once its extent is certain; with `final` whatever is left is decided as the end
    of the output): that is what makes streaming agree with `parse` for any split into chunks."""

    @abstractmethod
    def feed(self, text: str, *, final: bool) -> Iterator[_Event]: ...


class _StepScanner(_Scanner):
    """A scanner written as `_step`: decide what starts at `buf[0]`, given the format's state."""

    def __init__(self, tool_names: frozenset[str] | None) -> None:
        self.tool_names = tool_names
        self.buffer = ""
        self.at_start = True
        """Nothing but whitespace consumed yet (some formats only open at the start of the output)."""

    def feed(self, text: str, *, final: bool) -> Iterator[_Event]:
        buf = self.buffer + text
        while buf:
            decided = self._step(buf, final)
            if decided is None:
                break
            events, used = decided
            if used == 0 and not events:
                break
            if self.at_start and buf[:used].strip(_WS):
                self.at_start = False
            yield from events
            buf = buf[used:]
        self.buffer = buf

    @abstractmethod
    def _step(self, buf: str, final: bool) -> tuple[list[_Event], int] | None:
        """The events `buf` starts with and how many characters they use up; None while that is
        not known yet (never with `final`, which must eventually use up everything)."""


class _EventToolCallStream(ToolCallStream):
    """A `ToolCallStream` over a scanner's events: each call goes out whole when it is decided
    (its id and name, then all its arguments in one fragment), bad markup as content."""

    def __init__(self, scanner: _Scanner, new_id: Callable[[], str]) -> None:
        self._scanner = scanner
        self._new_id = new_id
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
                out.append(StreamDelta(index=index, id=self._new_id(), name=event.name, arguments=""))
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


class _ScannerToolParser(ToolParser):
    """A format whose `parse` and `stream` both run `_scanner()`."""

    @abstractmethod
    def _scanner(self) -> _Scanner: ...

    def parse(self, text: str) -> ParseResult:
        content: list[str] = []
        calls: list[ParsedToolCall] = []
        errors: list[str] = []
        for event in self._scanner().feed(text, final=True):
            if isinstance(event, _Call):
                calls.append(ParsedToolCall(self.new_call_id(), event.name, event.arguments))
            elif isinstance(event, _Bad):
                content.append(event.raw)
                errors.append(event.error)
            else:
                content.append(event.text)
        return ParseResult("".join(content).strip(), calls, _join_errors(errors))

    def stream(self) -> ToolCallStream:
        return _EventToolCallStream(self._scanner(), self.new_call_id)


class _MarkerScanner(_StepScanner):
    """Content until a format's markup opens: one of `markers` anywhere, or one of `start_chars`
    as the first non-whitespace character of the output. `_section` then decides the markup at
    `buf[0]`. Markup whose extent cannot be known (no closing delimiter to look for) makes the
    rest of the output content (`_rest`), so a streamed output never waits on it."""

    markers: ClassVar[tuple[str, ...]] = ()
    start_chars: ClassVar[str] = ""

    def __init__(self, tool_names: frozenset[str] | None) -> None:
        super().__init__(tool_names)
        self.rest_is_content = False

    def _step(self, buf: str, final: bool) -> tuple[list[_Event], int] | None:
        if self.rest_is_content:
            return [_Content(buf)], len(buf)
        if self.at_start and self.start_chars:
            i = _skip_ws(buf, 0)
            if i == len(buf):
                return ([_Content(buf)], len(buf)) if final else None
            if i > 0:
                return [_Content(buf[:i])], i
            if buf[0] in self.start_chars:
                return self._section(buf, final)
        starts = [k for k in (buf.find(marker) for marker in self.markers) if k >= 0]
        if starts:
            start = min(starts)
            return ([_Content(buf[:start])], start) if start > 0 else self._section(buf, final)
        keep = len(buf) if final else len(buf) - _partial_suffix(buf, 0, self.markers)
        return ([_Content(buf[:keep])], keep) if keep > 0 else None

    @abstractmethod
    def _section(self, buf: str, final: bool) -> tuple[list[_Event], int] | None:
        """The markup at `buf[0]` (a marker, or a start character), as in `_step`."""

    def _rest(self, buf: str, error: str) -> tuple[list[_Event], int]:
        """Bad markup of unknown extent: it and the rest of the output are content."""
        self.rest_is_content = True
        return [_Bad(buf, error)], len(buf)
