"""What an output must look like, in terms no grammar engine owns.

Requests (`localoai.constraints.requests`) describe the output as an `OutputSpec`; the grammar
module (`localoai.constraints.grammar`) writes it as a grammar, which travels to the engine in
`SamplingParams.constraint` as a `GrammarSpec`: text the engine compiles for its vocabulary. Schemas are kept
as canonical JSON text so that a spec is hashable and the compiled-grammar cache can key on it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from localoai.parsers.base import ToolCallFormat

ANY_OBJECT = '{"type":"object"}'


def schema_text(schema: dict[str, Any]) -> str:
    """A schema as canonical text. Keys keep their order: properties are generated in it."""
    return json.dumps(schema, ensure_ascii=False, separators=(",", ":"))


@dataclass(frozen=True)
class ToolSpec:
    name: str
    parameters: str
    """The JSON schema its arguments must satisfy, as `schema_text`."""


@dataclass(frozen=True)
class OutputSpec:
    """The output the model must write.

    - `answer`: a JSON schema (as `schema_text`) the answer must satisfy; None leaves it free text.
    - `tool_calls`: "required": the output is one or more calls (in `call_format`) to `tools` and
      nothing else; "optional": it is the answer, or calls; "none": the answer only. With an
      "optional" free-text answer, text is free and each call is constrained from its trigger on
      (the format must allow calls after text).
    - `parallel`: whether more than one call may be made (with "required").
    - `reasoning_end`: see below.
    """

    answer: str | None = None
    tools: tuple[ToolSpec, ...] = ()
    call_format: ToolCallFormat | None = None
    tool_calls: Literal["none", "optional", "required"] = "none"
    parallel: bool = True
    reasoning_end: str | None = None
    """The marker closing a reasoning block the prompt opened (DeepSeek-R1's `</think>`): the output
    is free reasoning up to it, then what the rest of the spec says."""

    def __post_init__(self) -> None:
        if self.tool_calls != "none" and (self.call_format is None or not self.tools):
            raise ValueError("tool calls need a call format and at least one tool")
        if self.tool_calls == "none" and self.answer is None:
            raise ValueError("an unconstrained output needs no spec")
        after_text = self.call_format is not None and self.call_format.after_text
        if self.tool_calls == "optional" and self.answer is None and not after_text:
            raise ValueError("calls after free text need a format whose calls may follow text")


@dataclass(frozen=True)
class GrammarSpec:
    """The output constraint a request hands the engine: a grammar in llguidance's Lark dialect (which
    vLLM's `structured_outputs.grammar` reads too), compiled by the engine, off the event loop. Its one
    field is what a generation's record keeps (`dataclasses.asdict`)."""

    grammar: str

    @classmethod
    def of(cls, grammar: str, *, param: str) -> GrammarSpec:
        """`param`: the request field that asked for it, named when an engine cannot enforce it (kept
        outside the fields, as the record has no use for it)."""
        spec = cls(grammar)
        object.__setattr__(spec, "_param", param)
        return spec

    @property
    def param(self) -> str:
        return getattr(self, "_param", "structured_outputs")
