"""The `Response` fields echoed from the request (`settings`), with OpenAI's defaults."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from openai.types.responses import Tool
from openai.types.shared import Reasoning
from pydantic import TypeAdapter

from localoai.handlers.common import new_id
from localoai.protocol.hosted_tools import HostedTool
from localoai.protocol.offered_tools import OfferedTools
from localoai.protocol.responses import ResponseCreateRequest

if TYPE_CHECKING:
    from localoai.handlers.responses.inputs import PreparedResponse

_TOOL: TypeAdapter[Tool] = TypeAdapter(Tool)


def settings(model_name: str, prepared: PreparedResponse) -> dict[str, Any]:
    """The `Response` fields echoed from the request, a new id and the creation time."""
    request = prepared.request
    return {
        "id": new_id("resp_"),
        "object": "response",
        "created_at": int(time.time()),
        "model": model_name,
        "background": request.background is True,
        "error": None,
        "incomplete_details": None,
        "instructions": request.instructions,
        "max_output_tokens": request.max_output_tokens,
        "max_tool_calls": request.max_tool_calls,
        "metadata": request.metadata or {},
        "parallel_tool_calls": request.parallel_tool_calls is not False,
        "previous_response_id": request.previous_response_id,
        "conversation": {"id": request.conversation_id} if request.conversation_id else None,
        "prompt_cache_key": request.prompt_cache_key,
        "reasoning": Reasoning(
            effort=request.reasoning.effort if request.reasoning is not None else None,
            summary=(request.reasoning.summary or request.reasoning.generate_summary)
            if request.reasoning is not None else None,
        ),
        "safety_identifier": request.safety_identifier,
        "service_tier": "default",
        "store": request.store is not False,
        "temperature": float(prepared.params.temperature),
        "text": {"format": _format(request),
                 "verbosity": request.text.verbosity if request.text and request.text.verbosity else "medium"},
        "tool_choice": _dumped(request.tool_choice) or "auto",
        # what the model was offered: a hosted tool with no implementation here is left out
        "tools": [_TOOL.validate_python(tool.model_dump(by_alias=True, exclude_none=tool.type != "function"))
                  for tool in request.tools or [] if _echoed(tool, prepared.offered)],
        "top_logprobs": request.top_logprobs or 0,
        "top_p": float(prepared.params.top_p),
        "truncation": request.truncation or "disabled",
        # `usage` comes with the terminal event; `user` only when given (neither is nullable in the reference)
        **({"user": request.user} if request.user is not None else {}),
    }


def _format(request: ResponseCreateRequest) -> dict[str, Any]:
    fmt = request.text.format if request.text is not None else None
    return fmt.model_dump(mode="json", by_alias=True, exclude_none=True) if fmt is not None else {"type": "text"}


def _echoed(tool: Any, offered: OfferedTools) -> bool:
    return not (isinstance(tool, HostedTool) and tool.type in offered.not_offered)


def _dumped(value: Any) -> Any:
    return value.model_dump(mode="json") if hasattr(value, "model_dump") else value
