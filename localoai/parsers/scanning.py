"""The machinery the tool-call formats share: a scanner (`_Scanner`, fed the output in pieces,
yielding content / call / bad-markup events), JSON object scanning, call checks, and the stream and
parser built on a scanner (`_EventToolCallStream`, `_ScannerToolParser`)."""

from __future__ import annotations

import json
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

from localoai.parsers.base import (
    ParsedToolCall,
    ParseResult,
    StreamDelta,
    ToolCallStream,
    ToolParser,
)


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
