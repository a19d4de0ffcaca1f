"""Hermes / Qwen2.5 / Qwen3: `<tool_call>{json}</tool_call>` blocks."""

from __future__ import annotations

from collections.abc import Iterator

from localoai.parsers.base import Slot, ToolCallFormat, new_call_id
from localoai.parsers.scanning import (
    _Bad,
    _Call,
    _Content,
    _Event,
    _EventToolCallStream,
    _loads,
    _make_call,
    _ObjectScan,
    _Scanner,
    _ScannerToolParser,
    _skip_ws,
)


OPEN = "<tool_call>"
CLOSE = "</tool_call>"


def _partial_open(text: str, start: int) -> int:
    """Length of the longest suffix of `text[start:]` that could be the start of `<tool_call>`."""
    for k in range(min(len(OPEN) - 1, len(text) - start), 0, -1):
        if text.endswith(OPEN[:k]):
            return k
    return 0


class _HermesScanner(_Scanner):
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
            obj = _loads(payload)
        except ValueError as e:
            return f"invalid JSON in a <tool_call> block: {e}"
        return _make_call(obj, self.tool_names, "a <tool_call> block", args_keys=("arguments", "parameters"))


class HermesToolCallStream(_EventToolCallStream):
    def __init__(self, tool_names: frozenset[str] | None) -> None:
        super().__init__(_HermesScanner(tool_names), new_call_id)


class HermesToolParser(_ScannerToolParser):
    """Hermes / Qwen2.5 / Qwen3: `<tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>`,
    one block per call, possibly after some content. `"parameters"` is accepted for `"arguments"`.

    A block's JSON is delimited by its braces, so `}` or `</tool_call>` inside a string argument
    do not end it. Streaming holds a block back until its `</tool_call>` and then emits the call
    whole (the name, then all its arguments in one fragment): only then is it known to be valid.
    """

    name = "hermes"
    markup = (OPEN, CLOSE)

    @classmethod
    def matches(cls, chat_template: str) -> bool:
        return OPEN in chat_template

    def _scanner(self) -> _HermesScanner:
        return _HermesScanner(self.tool_names)

    @classmethod
    def call_format(cls) -> ToolCallFormat:
        return ToolCallFormat(
            call=(OPEN, Slot.NEWLINE, '{"name": "', Slot.NAME, '", "arguments": ', Slot.ARGUMENTS, "}",
                  Slot.NEWLINE, CLOSE),
            separator=(Slot.NEWLINE,),
        )

    def stream(self) -> HermesToolCallStream:
        return HermesToolCallStream(self.tool_names)


