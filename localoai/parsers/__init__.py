"""Parsers that turn a model's raw output text into API structure (tool calls for now).

Pure functions of text, shared by chat completions and the Responses API.
"""

from __future__ import annotations

from localoai.parsers.tool_calls import (
    TOOL_PARSERS,
    DeepSeekToolParser,
    Llama3JsonToolParser,
    MistralToolParser,
    PythonicToolParser,
    HermesToolCallStream,
    HermesToolParser,
    ParsedToolCall,
    ParseResult,
    StreamDelta,
    ToolCallStream,
    ToolParser,
    tool_parser_for,
)

__all__ = [
    "TOOL_PARSERS",
    "DeepSeekToolParser",
    "Llama3JsonToolParser",
    "MistralToolParser",
    "PythonicToolParser",
    "HermesToolCallStream",
    "HermesToolParser",
    "ParsedToolCall",
    "ParseResult",
    "StreamDelta",
    "ToolCallStream",
    "ToolParser",
    "tool_parser_for",
]
