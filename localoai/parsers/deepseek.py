"""DeepSeek V3 / R1 / V3.1: `<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>name
```json {...} ```<｜tool▁call▁end｜>...<｜tool▁calls▁end｜>`."""

from __future__ import annotations

import re
from typing import ClassVar

from localoai.parsers.base import Slot, ToolCallFormat
from localoai.parsers.scanning import (
    _Bad,
    _Call,
    _Content,
    _Event,
    _checked_call,
    _loads,
    _MarkerScanner,
    _Scanner,
    _ScannerToolParser,
    _skip_ws,
)

CALLS_BEGIN = "<｜tool▁calls▁begin｜>"
CALLS_END = "<｜tool▁calls▁end｜>"
CALL_BEGIN = "<｜tool▁call▁begin｜>"
CALL_END = "<｜tool▁call▁end｜>"
SEP = "<｜tool▁sep｜>"
_FENCED = re.compile(r"\s*([^\n`]+?)\s*\n\s*```(?:json)?[ \t]*\n(.*?)\n?\s*```\s*", re.DOTALL)
_WHERE = "a DeepSeek tool call"


class _DeepSeekScanner(_MarkerScanner):
    markers: ClassVar[tuple[str, ...]] = (CALLS_BEGIN,)

    def __init__(self, tool_names: frozenset[str] | None) -> None:
        super().__init__(tool_names)
        self.in_calls = False

    def _step(self, buf: str, final: bool) -> tuple[list[_Event], int] | None:
        if not self.in_calls or self.rest_is_content:
            return super()._step(buf, final)
        i = _skip_ws(buf, 0)
        if i == len(buf):
            # The end of the output closes the section too: the R1 template itself writes no
            # <｜tool▁calls▁end｜> after a single call, and the end-of-sentence token ends generation.
            return ([_Content(buf)], len(buf)) if final else None
        if buf.startswith(CALLS_END, i):
            self.in_calls = False
            return [_Content(buf[:i])], i + len(CALLS_END)
        if buf.startswith(CALL_BEGIN, i):
            end = buf.find(CALL_END, i + len(CALL_BEGIN))
            if end < 0:
                return self._rest(buf, f"unterminated {CALL_BEGIN} block") if final else None
            used = end + len(CALL_END)
            call = self._call(buf[i + len(CALL_BEGIN) : end])
            return [call if isinstance(call, _Call) else _Bad(buf[:used], call)], used
        rest = buf[i:]
        if not final and (CALLS_END.startswith(rest) or CALL_BEGIN.startswith(rest)):
            return None
        return self._rest(buf, f"unexpected text in a {CALLS_BEGIN} section")

    def _section(self, buf: str, final: bool) -> tuple[list[_Event], int] | None:
        self.in_calls = True
        return [], len(CALLS_BEGIN)

    def _call(self, block: str) -> _Call | str:
        if SEP not in block:
            return f"{_WHERE} has no {SEP}"
        left, right = block.split(SEP, 1)
        fenced = _FENCED.fullmatch(right)
        if fenced is not None:  # V3 / R1: type<sep>name\n```json\n{...}\n```
            name, payload = fenced.group(1), fenced.group(2)
        else:  # V3.1: name<sep>{...}
            name, payload = left.strip(), right
        if not name:
            return f"{_WHERE} has no function name"
        try:
            args = _loads(payload)
        except ValueError as e:
            return f"invalid JSON in {_WHERE}: {e}"
        return _checked_call(name, args, self.tool_names, _WHERE)


class DeepSeekToolParser(_ScannerToolParser):
    """DeepSeek V3 / R1 (`type<｜tool▁sep｜>name` then the arguments in a ```json fence) and V3.1
    (`name<｜tool▁sep｜>{...}`), inside `<｜tool▁calls▁begin｜>...<｜tool▁calls▁end｜>`, possibly
    after content (R1's reasoning, say). Each call is emitted when its `<｜tool▁call▁end｜>` arrives;
    a call block is delimited by that marker, so it must not appear inside the arguments."""

    name = "deepseek"
    markup = (CALLS_BEGIN, CALLS_END, CALL_BEGIN, CALL_END, SEP)

    @classmethod
    def matches(cls, chat_template: str) -> bool:
        return CALLS_BEGIN in chat_template

    def _scanner(self) -> _Scanner:
        return _DeepSeekScanner(self.tool_names)

    @classmethod
    def call_format(cls) -> ToolCallFormat:
        # V3 / R1's fenced form, as their templates write it (V3.1 output parses the same way).
        return ToolCallFormat(
            call=(CALL_BEGIN, "function", SEP, Slot.NAME, "\n```json\n", Slot.ARGUMENTS, "\n```", CALL_END),
            begin=(CALLS_BEGIN,),
            separator=(Slot.NEWLINE,),
            end=(CALLS_END,),
        )
