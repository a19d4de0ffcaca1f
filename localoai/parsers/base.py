"""The tool-call parser interface: each format is a `ToolParser` with a whole-text `parse` and an
incremental `stream` (`ToolCallStream`), both run on the same scanner (`localoai.parsers.scanning`),
so a streamed answer and a non-streamed one can never disagree. Malformed markup never raises: it
stays in the content.
"""

from __future__ import annotations

import enum
import secrets
from abc import ABC, abstractmethod
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import ClassVar


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
