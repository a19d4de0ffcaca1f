"""Tool calls out of generated text: the model writes markup, the API returns `tool_calls`.

Pure text processing, no HTTP and no model. Each format is a `ToolParser` (one module per
format, the interface in `localoai.parsers.base`) with a whole-text `parse` and an incremental
`stream`; both run the same scanner, so a streamed answer and a non-streamed one can never
disagree. Malformed markup never raises: it stays in the content.

Formats, in the order `tool_parser_for` tries them against a chat template:

- `hermes` (Hermes / Qwen2.5 / Qwen3): `<tool_call>{...}</tool_call>`; templates with `<tool_call>`.
- `mistral`: `[TOOL_CALLS][{...}, ...]` or `[TOOL_CALLS]name[ARGS]{...}`; templates with
  `[TOOL_CALLS]`. Call ids are 9 alphanumeric characters, as Mistral's templates require.
- `deepseek` (DeepSeek V3 / R1 / V3.1): `<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>...`;
  templates with `<｜tool▁calls▁begin｜>`.
- `llama3_json` (Llama 3.1 / 3.2 / 3.3): `{"name": ..., "parameters": {...}}` as the whole output,
  optionally after `<|python_tag|>`, several joined by `;`; templates with `<|python_tag|>` or
  Llama 3.1's "Given the following functions" tool prompt.
- `pythonic` (Llama 3.2 pythonic / Llama 4 style): `[f(a=1), g(b="x")]`; only by name, no
  template marker.

gpt-oss writes tool calls in OpenAI's harmony format (`<|start|>assistant to=functions.f<|channel|>
commentary json<|message|>{...}<|call|>`), on channels that also carry its reasoning: that format
is parsed with its reasoning, by `localoai.parsers.harmony` (chosen by `reasoning_parser_for`), so
gpt-oss templates match no parser here. Reasoning and tool calls are composed per request by
`localoai.parsers.reasoning` (`LoadedModel.output_parser`).
"""

from __future__ import annotations

from collections.abc import Collection

from localoai.parsers.base import (
    ParsedToolCall,
    ParseResult,
    StreamDelta,
    ToolCallStream,
    ToolParser,
    new_call_id,
)
from localoai.parsers.deepseek import DeepSeekToolParser
from localoai.parsers.hermes import CLOSE, OPEN, HermesToolCallStream, HermesToolParser
from localoai.parsers.llama import Llama3JsonToolParser
from localoai.parsers.mistral import MistralToolParser, new_mistral_call_id
from localoai.parsers.pythonic import PythonicToolParser

__all__ = [
    "CLOSE",
    "OPEN",
    "TOOL_PARSERS",
    "DeepSeekToolParser",
    "HermesToolCallStream",
    "HermesToolParser",
    "Llama3JsonToolParser",
    "MistralToolParser",
    "ParseResult",
    "ParsedToolCall",
    "PythonicToolParser",
    "StreamDelta",
    "ToolCallStream",
    "ToolParser",
    "new_call_id",
    "new_mistral_call_id",
    "tool_parser_for",
]

TOOL_PARSERS: dict[str, type[ToolParser]] = {
    parser.name: parser
    for parser in (HermesToolParser, MistralToolParser, DeepSeekToolParser, Llama3JsonToolParser, PythonicToolParser)
}
"""Every format by name, in the order `tool_parser_for` tries them against a chat template.
Hermes comes first: Hermes-3 is a Llama 3.1 fine-tune whose template keeps Llama's markers."""


def tool_parser_for(
    chat_template: str | None, name: str | None = None, *, tool_names: Collection[str] | None = None
) -> ToolParser | None:
    """The parser for a model: the one named (e.g. `"hermes"`), else the first whose markup its
    chat template uses; None when no format matches (the output is then plain content)."""
    if name is not None:
        try:
            return TOOL_PARSERS[name](tool_names)
        except KeyError:
            raise ValueError(f"unknown tool parser {name!r} (known: {', '.join(TOOL_PARSERS)})") from None
    if not chat_template:
        return None
    for parser in TOOL_PARSERS.values():
        if parser.matches(chat_template):
            return parser(tool_names)
    return None
