"""gpt-oss's harmony format, parsed from the generated text: reasoning, content and tool calls.

After the template's generation prompt (`<|start|>assistant`) the model writes messages, each a
header and a body: `<|channel|>analysis<|message|>...<|end|>` is reasoning, `<|channel|>final
<|message|>...` is content, and `<|start|>assistant to=functions.f<|channel|>commentary json
<|message|>{...}<|call|>` (the recipient may also follow the channel) is a call of function tool
`f`. `<|return|>` and `<|call|>` end generation (they are gpt-oss's stop tokens, so they may not
reach the text); the end of the output ends the last message. A message to any other recipient
(the built-in `browser` / `python` tools), a call whose arguments are not a JSON object, or text
that breaks the format stays content, its reason in `error`, as for the other tool-call formats.
An output that does not start as harmony at all is plain content.

The markup is made of special tokens, so the output is decoded with them
(`needs_special_tokens`). The parser reads text rather than token ids: `openai-harmony`'s
`StreamableParser` needs the o200k vocabulary, which it downloads on first use (and checks by
SHA-256, even from `TIKTOKEN_ENCODINGS_BASE`), so it cannot run offline; the tests compare this
parser with it whenever that vocabulary is available.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass
from typing import Literal

from localoai.parsers.base import Slot, StreamDelta, ToolCallFormat, new_call_id
from localoai.parsers.output import OutputParser, OutputPiece, OutputStream, ReasoningDelta
from localoai.parsers.scanning import _checked_call, _join_errors, _loads, _partial_suffix

START, END, MESSAGE, CHANNEL = "<|start|>", "<|end|>", "<|message|>", "<|channel|>"
CALL, RETURN, CONSTRAIN = "<|call|>", "<|return|>", "<|constrain|>"
END_OF_TEXT = "<|endoftext|>"
_TERMINATORS = (END, CALL, RETURN, END_OF_TEXT, START)
_HEADER_OPENERS = (START, CHANNEL, CONSTRAIN, "to=")
_RECIPIENT = re.compile(r"(?:^|\s)to=([^\s<]+)")
_CHANNEL = re.compile(re.escape(CHANNEL) + r"\s*([A-Za-z_]+)")

_Kind = Literal["reasoning", "content", "call", "bad"]


@dataclass
class _Body:
    kind: _Kind
    header: str
    name: str = ""
    error: str = ""
    text: str = ""
    """What a call (or bad message) holds back until the message ends."""


class HarmonyOutputStream(OutputStream):
    def __init__(self, tool_names: frozenset[str] | None) -> None:
        self._tool_names = tool_names
        self._buffer = ""
        self._body: _Body | None = None
        self._first = True  # no message read yet: the first header has no `<|start|>`
        self._rest_is_content = False
        self._sent_reasoning = False
        self._message_has_reasoning = False
        self._calls = 0
        self._errors: list[str] = []
        self._finished = False

    @property
    def error(self) -> str | None:
        return _join_errors(self._errors)

    @property
    def in_reasoning(self) -> bool:
        return self._body is not None and self._body.kind == "reasoning"

    def feed(self, text_delta: str) -> list[OutputPiece]:
        if self._finished:
            raise RuntimeError("feed() after finish()")
        return self._scan(text_delta, final=False)

    def finish(self) -> list[OutputPiece]:
        if self._finished:
            return []
        self._finished = True
        return self._scan("", final=True)

    # -- scanning ------------------------------------------------------------------------------

    def _scan(self, text: str, *, final: bool) -> list[OutputPiece]:
        out: list[OutputPiece] = []
        buf = self._buffer + text
        while buf:
            if self._rest_is_content:
                _content(out, buf)
                buf = ""
                break
            used = self._header(buf, final, out) if self._body is None else self._in_body(buf, final, out)
            if used is None:
                break
            buf = buf[used:]
        self._buffer = buf
        if final and self._body is not None:
            self._close(out)
        return out

    def _header(self, buf: str, final: bool, out: list[OutputPiece]) -> int | None:
        """A message's header, up to its `<|message|>`; None while it is still arriving."""
        lead = len(buf) - len(buf.lstrip())
        head = buf[lead:]
        if not head:
            if not final:
                return None
            if self._first:  # an output of whitespace only
                _content(out, buf)
            return len(buf)
        openers = _HEADER_OPENERS if self._first else (START,)
        if not any(head.startswith(o) or (not final and o.startswith(head)) for o in openers):
            if not self._first:
                self._errors.append("text outside a harmony message")
            self._rest_is_content = True
            return 0
        end = buf.find(MESSAGE)
        stop = min((k for k in (buf.find(t, lead + 1) for t in _TERMINATORS) if k >= 0), default=-1)
        if end < 0 or (0 <= stop < end):
            if stop < 0 and not final:
                return None
            cut = stop if stop >= 0 else len(buf)
            self._errors.append("a harmony header without a message")
            _content(out, buf[:cut])
            self._first = False
            return cut
        header = buf[lead:end]
        self._body = self._classify(header)
        self._first = False
        self._message_has_reasoning = False
        return end + len(MESSAGE)

    def _classify(self, header: str) -> _Body:
        raw = header + MESSAGE
        recipient = _RECIPIENT.search(header)
        channel = _CHANNEL.search(header)
        if recipient is not None and recipient.group(1) != "assistant":
            target = recipient.group(1)
            if not target.startswith("functions."):
                return _Body("bad", raw, error=f"a harmony message to {target!r}, which is not a function tool")
            return _Body("call", raw, name=target.removeprefix("functions."))
        if channel is not None and channel.group(1) == "analysis":
            return _Body("reasoning", raw)
        return _Body("content", raw)

    def _in_body(self, buf: str, final: bool, out: list[OutputPiece]) -> int | None:
        body = self._body
        assert body is not None
        ends = [k for k in (buf.find(t) for t in _TERMINATORS) if k >= 0]
        end = min(ends) if ends else -1
        if end < 0:
            keep = len(buf) if final else len(buf) - _partial_suffix(buf, 0, _TERMINATORS)
            self._body_text(buf[:keep], out)
            return keep if keep else None
        self._body_text(buf[:end], out)
        used = end
        if not buf.startswith(START, end):
            used += len(next(t for t in _TERMINATORS if buf.startswith(t, end)))
        self._close(out, terminator=buf[end:used])
        return used

    def _body_text(self, text: str, out: list[OutputPiece]) -> None:
        body = self._body
        assert body is not None
        if not text:
            return
        if body.kind == "reasoning":
            if self._sent_reasoning and not self._message_has_reasoning:
                text = "\n" + text  # messages of reasoning, one per line
            self._sent_reasoning = self._message_has_reasoning = True
            if out and isinstance(out[-1], ReasoningDelta):
                out[-1].text += text
            else:
                out.append(ReasoningDelta(text))
        elif body.kind == "content":
            _content(out, text)
        else:
            body.text += text

    def _close(self, out: list[OutputPiece], terminator: str = "") -> None:
        """The end of the open message: a call is decided now."""
        body = self._body
        assert body is not None
        self._body = None
        if body.kind == "call":
            try:
                arguments = _loads(body.text.strip())
            except ValueError as e:
                self._bad(out, body.header + body.text + terminator,
                          f"invalid JSON in a harmony call of {body.name!r}: {e}")
                return
            call = _checked_call(body.name, arguments, self._tool_names, "a harmony call")
            if isinstance(call, str):
                self._bad(out, body.header + body.text + terminator, call)
                return
            index = self._calls
            self._calls += 1
            out.append(StreamDelta(index=index, id=new_call_id(), name=call.name, arguments=""))
            out.append(StreamDelta(index=index, arguments=call.arguments))
        elif body.kind == "bad":
            self._bad(out, body.header + body.text + terminator, body.error)

    def _bad(self, out: list[OutputPiece], raw: str, error: str) -> None:
        self._errors.append(error)
        _content(out, raw)


def _content(out: list[OutputPiece], text: str) -> None:
    if not text:
        return
    last = out[-1] if out else None
    if isinstance(last, StreamDelta) and last.content is not None:
        last.content += text
    else:
        out.append(StreamDelta(content=text))


class HarmonyOutputParser(OutputParser):
    """gpt-oss's output. `tool_names`: the function tools offered (None accepts any name; an empty
    collection makes every call content)."""

    needs_special_tokens = True

    def __init__(self, tool_names: Collection[str] | None = None) -> None:
        self.tool_names = frozenset(tool_names) if tool_names is not None else None

    def call_format(self) -> ToolCallFormat:
        # A forced call comes at once, without an analysis message first. It ends with `<|call|>`, one of
        # gpt-oss's stop tokens, which a grammar leaves to the end of sequence (stop tokens may only
        # come once the grammar is complete).
        return ToolCallFormat(
            call=(CHANNEL, "commentary to=functions.", Slot.NAME, " ", CONSTRAIN, "json", MESSAGE, Slot.ARGUMENTS),
            parallel=False,
            after_text=False,
        )

    @property
    def format_name(self) -> str:
        return "harmony"

    def stream(self) -> HarmonyOutputStream:
        return HarmonyOutputStream(self.tool_names)
