"""Mistral: `[TOOL_CALLS][{"name": ..., "arguments": {...}}, ...]`, or (tokenizer v11+)
`[TOOL_CALLS]name[ARGS]{...}`, one `[TOOL_CALLS]` per call."""

from __future__ import annotations

import re
import secrets
import string
from typing import ClassVar

from localoai.parsers.base import Slot, ToolCallFormat
from localoai.parsers.scanning import (
    _Bad,
    _Call,
    _Event,
    _loads,
    _make_call,
    _MarkerScanner,
    _ObjectScan,
    _Scanner,
    _ScannerToolParser,
    _skip_ws,
)

TOOL_CALLS = "[TOOL_CALLS]"
ARGS = "[ARGS]"
_NAME = re.compile(r"[A-Za-z0-9_.\-]+")
_ALPHANUMERIC = string.ascii_letters + string.digits
_WHERE = "a [TOOL_CALLS] block"


def new_mistral_call_id() -> str:
    """Mistral's templates refuse any tool-call id that is not 9 alphanumeric characters."""
    return "".join(secrets.choice(_ALPHANUMERIC) for _ in range(9))


class _MistralScanner(_MarkerScanner):
    markers: ClassVar[tuple[str, ...]] = (TOOL_CALLS,)

    def __init__(self, tool_names: frozenset[str] | None) -> None:
        super().__init__(tool_names)
        self.scan: _ObjectScan | None = None

    def _section(self, buf: str, final: bool) -> tuple[list[_Event], int] | None:
        j = _skip_ws(buf, len(TOOL_CALLS))
        if j == len(buf):
            return self._rest(buf, f"unterminated {TOOL_CALLS} block") if final else None
        if buf[j] in "[{":
            return self._json(buf, j, final, buf[j] == "[")
        m = _NAME.match(buf, j)
        if m is None:
            return self._rest(buf, f"{_WHERE} holds neither JSON nor name{ARGS}")
        k = m.end()
        if k == len(buf) or ARGS.startswith(buf[k:]):
            return self._rest(buf, f"unterminated {TOOL_CALLS} block") if final else None
        if not buf.startswith(ARGS, k):
            return self._rest(buf, f"{_WHERE} holds neither JSON nor name{ARGS}")
        a = _skip_ws(buf, k + len(ARGS))
        if a == len(buf):
            return self._rest(buf, f"unterminated {TOOL_CALLS} block") if final else None
        if buf[a] != "{":
            return self._rest(buf, f"the [ARGS] of {m.group()!r} are not a JSON object")
        extent = self._extent(buf, a, final)
        if extent is None:
            return None
        if isinstance(extent, str):
            return self._rest(buf, extent)
        try:
            args = _loads(buf[a:extent])
        except ValueError as e:
            return [_Bad(buf[:extent], f"invalid JSON in {_WHERE}: {e}")], extent
        call = _make_call({"name": m.group(), "arguments": args}, self.tool_names, _WHERE, args_keys=("arguments",))
        return [call if isinstance(call, _Call) else _Bad(buf[:extent], call)], extent

    def _extent(self, buf: str, start: int, final: bool) -> int | str | None:
        """Where the JSON value at `start` ends; an error when it cannot; None while unknown."""
        if self.scan is None:
            self.scan = _ObjectScan(start)
        scan = self.scan
        if not scan.advance(buf):
            if final:
                self.scan = None
                return f"unterminated {TOOL_CALLS} block"
            return None
        self.scan = None
        if scan.bad or scan.end is None:
            return f"invalid JSON in {_WHERE}"
        return scan.end

    def _json(self, buf: str, start: int, final: bool, is_list: bool) -> tuple[list[_Event], int] | None:
        extent = self._extent(buf, start, final)
        if extent is None:
            return None
        if isinstance(extent, str):
            return self._rest(buf, extent)
        try:
            value = _loads(buf[start:extent])
        except ValueError as e:
            return [_Bad(buf[:extent], f"invalid JSON in {_WHERE}: {e}")], extent
        items = value if is_list else [value]
        calls: list[_Event] = []
        for item in items:
            call = _make_call(item, self.tool_names, _WHERE, args_keys=("arguments", "parameters"))
            if isinstance(call, str):  # the calls of one block stand or fall together
                return [_Bad(buf[:extent], call)], extent
            calls.append(call)
        if not calls:
            return [_Bad(buf[:extent], f"{_WHERE} holds no call")], extent
        return calls, extent


class MistralToolParser(_ScannerToolParser):
    """Mistral (Nemo, Small, Large, ...): `[TOOL_CALLS]` then a JSON list of calls (a single object
    is accepted too; an `"id"` key, as Mistral's templates write, is ignored), or the newer
    `[TOOL_CALLS]name[ARGS]{...}` form. Content may come before. A list's calls are decided together,
    when its closing `]` arrives. Call ids are 9 alphanumeric characters (Mistral's templates
    reject any other id when the conversation is sent back)."""

    name = "mistral"
    markup = (TOOL_CALLS, ARGS)

    @classmethod
    def matches(cls, chat_template: str) -> bool:
        return TOOL_CALLS in chat_template

    @staticmethod
    def new_call_id() -> str:
        return new_mistral_call_id()

    def _scanner(self) -> _Scanner:
        return _MistralScanner(self.tool_names)

    @classmethod
    def call_format(cls) -> ToolCallFormat:
        # The JSON-list form, which every Mistral tokenizer version's output parses as.
        return ToolCallFormat(
            call=('{"name": "', Slot.NAME, '", "arguments": ', Slot.ARGUMENTS, "}"),
            begin=(TOOL_CALLS, "["),
            separator=(", ",),
            end=("]",),
        )
