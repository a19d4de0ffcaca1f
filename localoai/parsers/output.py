"""The output-parser interface: one `OutputParser` per request turns the model's raw text into
reasoning (`ReasoningDelta`), content and tool-call pieces (`StreamDelta`), streamed
(`OutputStream`) or whole (`parse`, the fold of the same stream). Implementations: reasoning with
tool calls (`localoai.parsers.reasoning`), harmony's channels (`localoai.parsers.harmony`)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

from localoai.parsers.base import ParsedToolCall, StreamDelta, ToolCallFormat, ToolParser


@dataclass
class ReasoningDelta:
    """A fragment of the model's reasoning (chat's `delta.reasoning_content`)."""

    text: str


OutputPiece = ReasoningDelta | StreamDelta
"""What an output stream hands out: reasoning, or content / a tool-call piece (`StreamDelta`)."""


@dataclass
class ParsedOutput:
    content: str
    reasoning: str | None = None
    """None when the model wrote no (or only empty) reasoning."""
    tool_calls: list[ParsedToolCall] = field(default_factory=list)
    error: str | None = None
    """Why some markup came back as content, as `ParseResult.error`."""


class OutputStream(ABC):
    """Turns text deltas into reasoning, content and tool-call pieces."""

    @property
    @abstractmethod
    def error(self) -> str | None:
        """Why some markup came back as content (several reasons joined by "; "), or None."""

    @abstractmethod
    def feed(self, text_delta: str) -> list[OutputPiece]: ...

    @abstractmethod
    def finish(self) -> list[OutputPiece]:
        """The end of the output: whatever was held back."""

    @property
    def in_reasoning(self) -> bool:
        """Whether the text fed so far ends inside the reasoning. A token counts as a reasoning token
        (`reasoning_tokens` in usage) when the stream is in the reasoning before or after it."""
        return False


class OutputParser(ABC):
    """The parser of one request's output. `parse` folds `stream` over the whole text, so the two
    agree by construction."""

    needs_special_tokens: bool = False
    """Whether the format's markup is made of special tokens (harmony's `<|channel|>`), so the
    output must be decoded with them (`skip_special_tokens=False`) for the parser to see it."""

    @property
    def tool_parser(self) -> ToolParser | None:
        """The tool-call parser inside, whose markup a forced call is written in (None: no such format)."""
        return None

    def call_format(self) -> ToolCallFormat | None:
        """How the model writes tool calls, for a grammar that forces them (None: none can)."""
        return self.tool_parser.call_format() if self.tool_parser is not None else None

    @property
    def format_name(self) -> str | None:
        """The tool-call format's name (None: not known)."""
        return self.tool_parser.name if self.tool_parser is not None else None

    @property
    def reasoning_end(self) -> str | None:
        """The marker that closes the reasoning when the output starts inside it (the prompt opened the
        block, as DeepSeek-R1's does): a grammar leaves the reasoning free up to it."""
        return None

    @abstractmethod
    def stream(self) -> OutputStream: ...

    def parse(self, text: str) -> ParsedOutput:
        stream = self.stream()
        return fold(stream.feed(text) + stream.finish(), stream.error)


def fold(pieces: list[OutputPiece], error: str | None = None) -> ParsedOutput:
    """Stream pieces -> the whole output they describe."""
    reasoning: list[str] = []
    content: list[str] = []
    calls: dict[int, ParsedToolCall] = {}
    for piece in pieces:
        if isinstance(piece, ReasoningDelta):
            reasoning.append(piece.text)
        elif piece.index is not None:
            call = calls.setdefault(piece.index, ParsedToolCall(piece.id or "", piece.name or "", ""))
            call.arguments += piece.arguments or ""
        elif piece.content:
            content.append(piece.content)
    return ParsedOutput("".join(content), "".join(reasoning) or None, [calls[i] for i in sorted(calls)], error)
