"""Each sample's answer as the assistant message(s) a chat template reads: what a finished turn hands the
episode's token ledger (`EpisodeLedger.finish`), so the ledger knows no endpoint's output shape."""

from __future__ import annotations

from typing import Any

from anthropic.types import Message as AnthropicMessage
from openai.types.chat import ChatCompletion
from openai.types.responses import CompactedResponse, Response

from localoai.chat_template import template_messages
from localoai.handlers.messages.content import answer_message
from localoai.handlers.responses.items import chat_messages
from localoai.protocol.response_items import compaction_summary


def answers(output: Any) -> list[list[dict[str, Any]]]:
    """Per sample, from a `ChatCompletion`, a `Response`, a Messages `Message` or a compaction (its summary);
    none from anything else."""
    if isinstance(output, ChatCompletion):
        result = []
        for choice in sorted(output.choices, key=lambda choice: choice.index):
            message: dict[str, Any] = {"role": "assistant", "content": choice.message.content}
            if choice.message.tool_calls:
                message["tool_calls"] = [call.model_dump() for call in choice.message.tool_calls]
            result.append([message])
        return result
    if isinstance(output, Response):  # a compaction item first (`context_management`) is no part of the answer
        items = [item.model_dump(mode="json", exclude_none=True) for item in output.output if item.type != "compaction"]
        return [template_messages(chat_messages(None, items))]
    if isinstance(output, CompactedResponse):
        summaries = [compaction_summary(item.encrypted_content) for item in output.output
                     if getattr(item, "type", None) == "compaction"]
        return [[{"role": "assistant", "content": summary} for summary in summaries]]
    if isinstance(output, AnthropicMessage):
        return [template_messages([answer_message(output)])]
    return []
