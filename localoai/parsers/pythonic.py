"""Pythonic tool calls: `[get_weather(city="paris"), search(q="x", k=3)]`, read with `ast`."""

from __future__ import annotations

import ast
import json
import re
from typing import Any, ClassVar

from localoai.parsers.scanning import (
    _Bad,
    _Call,
    _Content,
    _Event,
    _checked_call,
    _MarkerScanner,
    _Scanner,
    _ScannerToolParser,
)

_WHERE = "a pythonic tool call"
_LOOKS_LIKE_CALLS = re.compile(r"\[\s*[A-Za-z_][\w.]*\s*\(")


class _ListScan:
    """Finds where the Python list at `buf[0]` ends, resuming where the last call stopped. Tracks
    brackets and '...' / "..." strings with backslash escapes (not triple quotes); whether the
    text is a valid list of calls is `ast`'s call afterwards."""

    def __init__(self) -> None:
        self.pos = 1
        self.depth = 1
        self.quote: str | None = None
        self.end: int | None = None

    def advance(self, text: str) -> bool:
        i, n = self.pos, len(text)
        while i < n and self.end is None:
            char = text[i]
            if self.quote is not None:
                if char == "\\":
                    i += 2
                    continue
                if char == self.quote:
                    self.quote = None
            elif char in "'\"":
                self.quote = char
            elif char in "([{":
                self.depth += 1
            elif char in ")]}":
                self.depth -= 1
                if self.depth == 0:
                    self.end = i + 1
            i += 1
        self.pos = i
        return self.end is not None


def _literal(node: ast.expr) -> Any:
    """A keyword argument's value: a Python literal made JSON (tuples as lists). Never evaluates
    anything but literals (`ast.literal_eval` on the node); raises ValueError otherwise."""
    try:
        value = ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, RecursionError, MemoryError):
        raise ValueError(f"{_source(node)} is not a literal") from None
    try:
        return json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError, RecursionError) as e:
        raise ValueError(f"{_source(node)} is not a JSON value") from e


def _source(node: ast.expr) -> str:
    try:
        return repr(ast.unparse(node))
    except (ValueError, RecursionError):
        return "the value"


class _PythonicScanner(_MarkerScanner):
    start_chars: ClassVar[str] = "["

    def __init__(self, tool_names: frozenset[str] | None) -> None:
        super().__init__(tool_names)
        self.scan: _ListScan | None = None

    def _section(self, buf: str, final: bool) -> tuple[list[_Event], int] | None:
        if self.scan is None:
            self.scan = _ListScan()
        if not self.scan.advance(buf):
            if not final:
                return None
            self.scan = None
            if _LOOKS_LIKE_CALLS.match(buf):
                return self._rest(buf, f"unterminated {_WHERE} list")
            return [_Content(buf)], len(buf)
        end, self.scan = self.scan.end, None
        assert end is not None
        text = buf[:end]
        calls = self._calls(text)
        if calls is None:  # not a list of calls: plain content
            return [_Content(text)], end
        if isinstance(calls, str):
            return [_Bad(text, calls)], end
        return list(calls), end

    def _calls(self, text: str) -> list[_Call] | str | None:
        try:
            tree = ast.parse(text, mode="eval")
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            return f"invalid Python in {_WHERE}" if _LOOKS_LIKE_CALLS.match(text) else None
        body = tree.body
        if not isinstance(body, ast.List) or not body.elts or not all(isinstance(e, ast.Call) for e in body.elts):
            return None
        calls: list[_Call] = []
        for node in body.elts:
            assert isinstance(node, ast.Call)
            name = ast.unparse(node.func)
            if not re.fullmatch(r"[A-Za-z_][\w.]*", name):
                return f"{_WHERE} calls {name!r}, which is not a function name"
            if node.args or any(keyword.arg is None for keyword in node.keywords):
                return f"{_WHERE} to {name!r} has positional or ** arguments (only keyword arguments are allowed)"
            args: dict[str, Any] = {}
            for keyword in node.keywords:
                try:
                    args[str(keyword.arg)] = _literal(keyword.value)
                except (ValueError, TypeError, SyntaxError, RecursionError, MemoryError) as e:
                    return f"argument {keyword.arg!r} of {name!r} in {_WHERE}: {e}"
            call = _checked_call(name, args, self.tool_names, _WHERE)
            if isinstance(call, str):
                return call
            calls.append(call)
        return calls


class PythonicToolParser(_ScannerToolParser):
    """Pythonic tool calls (Llama 3.2 / Llama 4 and others when prompted so, e.g. vLLM's
    `pythonic` templates): the output starts with a Python list of calls with keyword arguments,
    `[get_weather(city="paris"), search(q="x", k=3)]`. It is read with `ast` and only literals
    are accepted (`ast.literal_eval`, never `eval`); tuples become lists, `None`/`True` JSON null
    and true. The list must be the first non-whitespace of the output (text after it is content);
    a list that is not made of calls is plain content. No chat template marks this format: it is
    chosen by name only."""

    name = "pythonic"

    @classmethod
    def matches(cls, chat_template: str) -> bool:
        return False

    def _scanner(self) -> _Scanner:
        return _PythonicScanner(self.tool_names)
