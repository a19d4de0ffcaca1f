"""Llama 3.1 / 3.2 / 3.3 JSON tool calls: `{"name": "f", "parameters": {...}}` as the output,
optionally after `<|python_tag|>`, several joined by `;`."""

from __future__ import annotations

from typing import ClassVar

from localoai.parsers.base import Slot, ToolCallFormat
from localoai.parsers.scanning import (
    _Bad,
    _Content,
    _Event,
    _loads,
    _make_call,
    _MarkerScanner,
    _ObjectScan,
    _Scanner,
    _ScannerToolParser,
    _skip_ws,
)

PYTHON_TAG = "<|python_tag|>"
TOOL_PROMPT = "Given the following functions"
_WHERE = "a Llama JSON tool call"


class _Llama3JsonScanner(_MarkerScanner):
    markers: ClassVar[tuple[str, ...]] = (PYTHON_TAG,)
    start_chars: ClassVar[str] = "{"

    def __init__(self, tool_names: frozenset[str] | None) -> None:
        super().__init__(tool_names)
        self.scan: _ObjectScan | None = None
        self.chained = False
        """Right after a call: whitespace, `;` and another object continue the list of calls."""
        self.expect_object = False
        """A JSON object starts at `buf[0]`."""
        self.tagged = False
        """The object at `buf[0]` follows a `;` or `<|python_tag|>`: it must be a call."""
        self.prefix = ""
        """The `<|python_tag|>` before the object: content again if the object is not a call."""

    def _step(self, buf: str, final: bool) -> tuple[list[_Event], int] | None:
        if self.rest_is_content:
            return super()._step(buf, final)
        if self.expect_object:
            return self._object(buf, final)
        if self.chained:
            i = _skip_ws(buf, 0)
            tagged = False
            if i < len(buf) and buf[i] == ";":
                i = _skip_ws(buf, i + 1)
                tagged = True
            if i == len(buf) and not final:
                return None
            self.chained = False
            if i < len(buf) and buf[i] == "{":
                self.expect_object, self.tagged = True, tagged
                return ([], i) if i > 0 else self._object(buf, final)
            return [_Content(buf[:i])], i
        return super()._step(buf, final)

    def _section(self, buf: str, final: bool) -> tuple[list[_Event], int] | None:
        if not buf.startswith(PYTHON_TAG):
            self.expect_object = True
            return self._object(buf, final)
        j = _skip_ws(buf, len(PYTHON_TAG))
        if j == len(buf):
            return self._rest(buf, f"unterminated {PYTHON_TAG} call") if final else None
        if buf[j] != "{":  # built-in tools (`brave_search.call(...)`) and code are not supported
            return self._rest(buf, f"{PYTHON_TAG} is not followed by a JSON tool call")
        self.expect_object = self.tagged = True
        self.prefix = buf[:j]
        return [], j

    def _object(self, buf: str, final: bool) -> tuple[list[_Event], int] | None:
        """The JSON object at `buf[0]`: a call, or (untagged and not shaped like one) content."""
        start = 0
        if self.scan is None:
            self.scan = _ObjectScan(start)
        scan = self.scan
        if not scan.advance(buf) and not final:
            return None
        self.scan = None
        self.expect_object = False
        tagged, self.tagged = self.tagged, False
        prefix, self.prefix = self.prefix, ""
        if scan.end is None:
            if tagged:
                return self._rest(prefix + buf, f"invalid or unterminated JSON in {_WHERE}")
            self.rest_is_content = True
            return [_Content(prefix + buf)], len(buf)
        end = scan.end
        try:
            obj = _loads(buf[start:end])
        except ValueError as e:
            if tagged:
                return [_Bad(prefix + buf[:end], f"invalid JSON in {_WHERE}: {e}")], end
            return [_Content(prefix + buf[:end])], end
        if not tagged and not (isinstance(obj, dict) and isinstance(obj.get("name"), str)):
            return [_Content(prefix + buf[:end])], end  # plain JSON content, not a call
        call = _make_call(obj, self.tool_names, _WHERE, args_keys=("parameters", "arguments"))
        if isinstance(call, str):
            return [_Bad(prefix + buf[:end], call)], end
        self.chained = True
        return [call], end


class Llama3JsonToolParser(_ScannerToolParser):
    """Llama 3.1 / 3.2 / 3.3 JSON tool calls, as their templates teach: the output is
    `{"name": "f", "parameters": {...}}` (`"arguments"` is accepted too), optionally after
    `<|python_tag|>`, and several calls may follow one another separated by `;` (or whitespace).

    The calls are the whole output: an untagged call is recognised only as the first
    non-whitespace of the output (a `{` later on is content), and a leading JSON object that is not
    shaped like a call (no string `"name"`) is plain content without an error. `<|python_tag|>` may
    come after content. Text after the calls is content. Built-in tools (`<|python_tag|>
    brave_search.call(...)`) and code after `<|python_tag|>` are not supported: content, with an
    error. Each call is emitted when its closing brace arrives."""

    name = "llama3_json"
    markup = (PYTHON_TAG,)

    @classmethod
    def matches(cls, chat_template: str) -> bool:
        return PYTHON_TAG in chat_template or TOOL_PROMPT in chat_template

    def _scanner(self) -> _Scanner:
        return _Llama3JsonScanner(self.tool_names)

    @classmethod
    def call_format(cls) -> ToolCallFormat:
        # Untagged calls are recognised only as the whole output, so none can follow text.
        return ToolCallFormat(
            call=('{"name": "', Slot.NAME, '", "parameters": ', Slot.ARGUMENTS, "}"),
            separator=("; ",),
            after_text=False,
        )
