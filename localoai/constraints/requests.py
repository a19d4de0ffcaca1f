"""Structured outputs from request fields, for chat completions and Responses alike.

`response_format` / `text.format` (json_object, json_schema), `tool_choice` required or a named
function, and `strict` function tools become one `OutputSpec`, written as a grammar into the request's
`SamplingParams.constraint` (a `GrammarSpec`), which the engine compiles and enforces by masking
every token the output may not contain. Every
check happens here, before generation: a schema keyword the grammar engine cannot enforce, a
model whose tool-call format is unknown asked to force a call, and options that contradict a
grammar (`ignore_eos`, `min_tokens`) are 400s naming the field.

What is enforced, and how:
- json_object: any JSON object; json_schema: the schema (whatever its `strict` says: a grammar
  guarantees the schema either way).
- `tool_choice: "required"`: the output is one or more calls (one if `parallel_tool_calls` is
  false) to the offered tools, in the model's own tool-call markup, each call's arguments valid
  against that tool's `parameters`; a named function: exactly one call to it.
- `strict` tools under `tool_choice: "auto"`: the text stays free, and once the model opens a
  call, the call must name an offered tool and a strict tool's arguments must fit its schema
  (a non-strict tool's must be a JSON object). Formats whose calls cannot follow text (Llama 3
  JSON) cannot be constrained that way: there `strict` is enforced only when calls are forced.
- A json answer together with offered tools (`auto`): the answer, or calls.
- `parallel_tool_calls: false` under `auto`: at most one call, and nothing after it (formats whose
  calls may follow text, or with a json answer; Llama 3 JSON's free text cannot be constrained).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from localoai.constraints.grammar import GrammarError, check_grammar, check_schema, schema_grammar, spec_grammar
from localoai.constraints.spec import ANY_OBJECT, GrammarSpec, OutputSpec, ToolSpec, schema_text
from localoai.engine.params import SamplingParams
from localoai.errors import InvalidRequestError, UnsupportedFieldError
from localoai.parsers.reasoning import OutputParser
from localoai.protocol.client_tools import function_definition, offered_name
from localoai.protocol.generate import StructuredOutputs
from localoai.protocol.chat import ChatCompletionRequest, JsonSchemaFormat, NamedToolChoice, ResponseFormatJsonObject
from localoai.protocol.responses import FunctionToolChoice, ResponseCreateRequest, TextFormatJsonObject
from localoai.served import ServedModel

NO_PARAMETERS: dict[str, Any] = {"type": "object", "properties": {}, "additionalProperties": False}


@dataclass(frozen=True)
class _Tool:
    name: str
    parameters: dict[str, Any] | None
    strict: bool
    param: str
    """Where its parameters are in the request, for errors."""


@dataclass(frozen=True)
class _Request:
    """The fields structured outputs read, whichever endpoint they came from."""

    answer: dict[str, Any] | None
    answer_param: str
    tools: Sequence[_Tool]
    tool_choice: Literal["none", "auto", "required"] | str
    """"none", "auto", "required", or the name of the function the model must call."""
    parallel: bool


def constrain_chat(
    served: ServedModel, request: ChatCompletionRequest, parser: OutputParser | None, params: SamplingParams
) -> SamplingParams:
    """`params` with the constraint this chat completion request asks for, if any; `parser`: the
    request's output parser (its tool-call format, and whether the output starts in reasoning)."""
    fmt = request.response_format
    answer: dict[str, Any] | None = None
    if isinstance(fmt, ResponseFormatJsonObject):
        answer = {"type": "object"}
    elif fmt is not None and fmt.type == "json_schema":
        answer = _schema_of(fmt.json_schema)
    choice = request.tool_choice
    fields = _Request(
        answer=answer,
        answer_param="response_format.json_schema.schema" if fmt is not None and fmt.type == "json_schema"
        else "response_format",
        tools=[
            _Tool(tool.function.name, tool.function.parameters, bool(tool.function.strict),
                  f"tools[{index}].function.parameters")
            for index, tool in enumerate(request.tools or [])
        ],
        tool_choice=choice.function.name if isinstance(choice, NamedToolChoice) else str(choice or "auto"),
        parallel=request.parallel_tool_calls is not False,
    )
    return _constrained(served, fields, parser, params)


def constrain_response(
    served: ServedModel, request: ResponseCreateRequest, tools: Sequence[Any], parser: OutputParser | None,
    params: SamplingParams,
) -> SamplingParams:
    """`params` with the constraint this Responses request asks for, if any; `tools` as the model is
    offered them (`protocol.offered_tools`)."""
    fmt = request.text.format if request.text is not None else None
    answer: dict[str, Any] | None = None
    if isinstance(fmt, TextFormatJsonObject):
        answer = {"type": "object"}
    elif fmt is not None and fmt.type == "json_schema":
        answer = _schema_of(fmt)  # type: ignore[arg-type]
    choice = request.tool_choice
    fields = _Request(
        answer=answer,
        answer_param="text.format.schema" if fmt is not None and fmt.type == "json_schema" else "text.format",
        tools=[_response_tool(index, tool) for index, tool in enumerate(tools)],
        tool_choice=choice.name if isinstance(choice, FunctionToolChoice) else str(choice or "auto"),
        parallel=request.parallel_tool_calls is not False,
    )
    return _constrained(served, fields, parser, params)


def _response_tool(index: int, tool: Any) -> _Tool:
    if tool.type == "function":  # Responses' function tools are strict unless they say otherwise
        return _Tool(tool.name, tool.parameters, tool.strict is not False, f"tools[{index}].parameters")
    # A client-executed tool (custom, shell, apply_patch) is offered as a function of a fixed shape: its
    # calls must have that shape, or they could not become the tool's own call item.
    definition = function_definition(tool) or {}
    return _Tool(definition.get("name", offered_name(tool)), definition.get("parameters"), True, f"tools[{index}]")


def _arguments(tool: _Tool) -> dict[str, Any]:
    """A tool's arguments schema: no `parameters` is an empty parameter list (as OpenAI reads it), and
    the arguments are an object whatever the schema leaves open."""
    if tool.parameters is None:
        return NO_PARAMETERS
    return tool.parameters if "type" in tool.parameters else {**tool.parameters, "type": "object"}


def _schema_of(fmt: JsonSchemaFormat) -> dict[str, Any]:
    # OpenAI's schema is optional: without one, any JSON value a schema of `{}` allows.
    return fmt.schema_ if fmt.schema_ is not None else {}


def _constrained(
    served: ServedModel, fields: _Request, output: OutputParser | None, params: SamplingParams
) -> SamplingParams:
    spec = _spec(fields, output)
    if spec is None:
        return params
    if output is not None and output.reasoning_end is not None:
        spec = dataclasses.replace(spec, reasoning_end=output.reasoning_end)
    _check_compatible(params)
    param = fields.answer_param if spec.answer is not None else "tool_choice"
    try:
        grammar = spec_grammar(spec, served.tokenizer, served.vocab_size)
    except GrammarError as exc:
        raise UnsupportedFieldError(f"Structured outputs are not available for this request: {exc}.",
                                    param=param) from None
    return dataclasses.replace(params, constraint=GrammarSpec.of(grammar, param=param))


def constrain_generate(served: ServedModel, structured: StructuredOutputs | None, params: SamplingParams,
                       *, param: str) -> SamplingParams:
    """`params` with vLLM's `structured_outputs` (json, json_object, regex, choice or a Lark grammar)."""
    if structured is None:
        return params
    _check_compatible(params)
    if structured.grammar is not None:
        grammar, kind = structured.grammar, "grammar"
    elif structured.regex is not None:
        grammar, kind = "start: /" + structured.regex.replace("/", "\\/") + "/", "regex"
    elif structured.choice is not None:
        grammar = "start: " + " | ".join(json.dumps(choice, ensure_ascii=False) for choice in structured.choice)
        kind = "choice"
    else:
        schema = structured.json_ if structured.json_ is not None else {"type": "object"}
        kind = "json" if structured.json_ is not None else "json_object"
        if isinstance(schema, str):
            try:
                schema = json.loads(schema)
            except ValueError:
                raise InvalidRequestError(f"Invalid value for '{param}.json': not valid JSON.", param=f"{param}.json",
                                          code="invalid_value") from None
        grammar = schema_grammar(_checked(schema, f"{param}.{kind}"))
    try:
        check_grammar(grammar)
    except (GrammarError, ValueError, RuntimeError) as exc:
        raise InvalidRequestError(f"Invalid value for '{param}.{kind}': {exc}", param=f"{param}.{kind}",
                                  code="invalid_value") from None
    return dataclasses.replace(params, constraint=GrammarSpec.of(grammar, param=f"{param}.{kind}"))


def _check_compatible(params: SamplingParams) -> None:
    for name, conflict in (("ignore_eos", params.ignore_eos), ("min_tokens", params.min_tokens > 0)):
        if conflict:
            raise InvalidRequestError(
                f"Invalid value for '{name}': it cannot be combined with structured outputs (a response format, "
                "a forced or strict tool call): once the output is complete, only the end of sequence may follow.",
                param=name, code="invalid_value",
            )


def _checked(schema: dict[str, Any], param: str) -> str:
    text = schema_text(schema)
    try:
        check_schema(text)
    except GrammarError as exc:
        raise UnsupportedFieldError(f"Unsupported value for '{param}': {exc}.", param=param) from None
    return text


def _spec(fields: _Request, parser: OutputParser | None) -> OutputSpec | None:
    answer = _checked(fields.answer, fields.answer_param) if fields.answer is not None else None
    if fields.tool_choice in ("none", "auto"):
        return _optional_calls(fields, parser, answer)
    call_format = parser.call_format() if parser is not None else None
    name = parser.format_name if parser is not None else None
    if call_format is None:
        why = ("this model's tool-call format is not known (set tool_parser when starting the server)"
               if name is None else f"the '{name}' tool-call format cannot be described by a grammar")
        raise UnsupportedFieldError(f"Unsupported value for 'tool_choice': forcing a tool call needs the model's "
                                    f"tool-call format; {why}.", param="tool_choice")
    named = fields.tool_choice != "required"
    chosen = [tool for tool in fields.tools if not named or tool.name == fields.tool_choice]
    tools = tuple(ToolSpec(tool.name, _checked(_arguments(tool), tool.param)) for tool in chosen)
    return OutputSpec(tools=tools, call_format=call_format, tool_calls="required",
                      parallel=fields.parallel and not named and call_format.parallel)


def _optional_calls(fields: _Request, parser: OutputParser | None, answer: str | None) -> OutputSpec | None:
    """The answer (if constrained) or calls, when calls can be constrained; else the answer alone."""
    call_format = parser.call_format() if parser is not None and fields.tool_choice == "auto" else None
    if call_format is None:
        return OutputSpec(answer=answer) if answer is not None else None
    tools = fields.tools
    single = not fields.parallel  # at most one call: the grammar's to enforce
    if tools and (answer is not None or (call_format.after_text and (single or any(tool.strict for tool in tools)))):
        specs = tuple(
            ToolSpec(tool.name, _checked(_arguments(tool), tool.param) if tool.strict else ANY_OBJECT)
            for tool in tools
        )
        return OutputSpec(answer=answer, tools=specs, call_format=call_format, tool_calls="optional",
                          parallel=fields.parallel and call_format.parallel)
    return OutputSpec(answer=answer) if answer is not None else None
