"""Chat completions: validate and render, then produce `ChatCompletionChunk`s.

The streamed and the non-streamed answers come from the same steps (`ChatCompletions._steps`:
the generation shaped into `ChoiceStep`s, in one `GenerationRun`): streamed, each step becomes a
chunk; not streamed, the steps are folded (`ChoiceFold`, see `handlers.run.Fold`) without
building chunks. The fold of a streamed request is its record, so the two can never disagree.

The model's text runs through the request's output parser (`LoadedModel.output_parser`), when it
has one: reasoning goes to `delta.reasoning_content` (vLLM's and DeepSeek's field; the SDK keeps
it as an extra field of the message), tool calls to `delta.tool_calls`, the rest to `content`.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from openai.types import CompletionUsage
from openai.types.completion_usage import CompletionTokensDetails, PromptTokensDetails
from openai.types.chat import ChatCompletion, ChatCompletionChunk, ChatCompletionTokenLogprob
from openai.types.chat import chat_completion_chunk as chunk_types
from openai.types.chat.chat_completion_token_logprob import TopLogprob

from localoai.chat_template import RenderedPrompt, render_chat
from localoai.constraints.requests import constrain_chat
from localoai.engine.params import PromptLogprobs, SampleDelta, SamplingParams, TokenLogprob
from localoai.episodes.ledger import EpisodeTurn
from localoai.episodes.routing import EpisodeRef
from localoai.handlers.chat.shaping import ChoiceFold, ChoiceStep, Output, finish_reason
from localoai.handlers.common import new_id, prompt_logprobs, sampling_params, scoring, token_budget, token_logprob
from localoai.handlers.recording import RecordFields
from localoai.handlers.run import GenerationRun, folded
from localoai.parsers.output import OutputParser
from localoai.protocol.chat import ChatCompletionRequest
from localoai.served import LoadedModel, Services


@dataclass(frozen=True)
class PreparedChat:
    """A validated request, rendered to token ids, ready to generate."""

    request: ChatCompletionRequest
    prompt: RenderedPrompt
    params: SamplingParams
    output_parser: OutputParser | None = None
    """Reasoning and tool calls (when tools are offered and not `tool_choice: none`) out of the text;
    None when the model has neither format (or no tools were offered): the text is the content."""
    episode: EpisodeTurn | None = None


class ChatCompletions:
    def __init__(self, model: LoadedModel, services: Services) -> None:
        self.model, self.services = model, services

    def prepare(self, request: ChatCompletionRequest, episode: EpisodeRef | None = None) -> PreparedChat:
        """Every check that can fail, before any generation starts. Blocking (it renders and tokenizes):
        the route runs it with `Services.off_loop`."""
        model, services = self.model, self.services
        model.check_model(request.model)
        tools = request.tools if request.tool_choice != "none" else None
        prompt = render_chat(
            model.tokenizer,
            request.messages,
            tools=tools,
            add_generation_prompt=request.add_generation_prompt,
            continue_final_message=request.continue_final_message,
            template_kwargs=request.chat_template_kwargs,
            reasoning_effort=request.reasoning_effort,
            policy=model.template_policy,
        )
        prompt, turn = services.episodes.attach(
            episode, request.messages, prompt,
            lambda history: render_chat(model.tokenizer, history, tools=tools, add_generation_prompt=False,
                                        template_kwargs=request.chat_template_kwargs,
                                        policy=model.template_policy).text,
            context=[[tool.model_dump(mode="json") for tool in tools or []], request.chat_template_kwargs])
        budget = token_budget(
            model,
            len(prompt.token_ids),
            request.max_new_tokens,
            param="max_completion_tokens" if request.max_completion_tokens is not None else "max_tokens",
        )
        logprobs = (request.top_logprobs or 0) if request.logprobs else None
        offered = request.tools if request.tool_choice != "none" else None
        parser = model.output_parser(prompt.text, [tool.function.name for tool in offered] if offered else None)
        scored = scoring(model, prompt.token_ids, request.prompt_logprobs, request.prompt_logprob_token_ids,
                         param="prompt_logprob_token_ids")
        params = sampling_params(model, request, max_tokens=budget, logprobs=logprobs,
                                 prompt_logprobs=scored.prompt_logprobs,
                                 prompt_logprob_token_ids=scored.prompt_logprob_token_ids)
        params = model.decoded_for(parser, params)  # the parser must see its markup
        params = constrain_chat(model, request, parser, params)
        return PreparedChat(request, prompt, params, parser, turn)

    async def create(self, prepared: PreparedChat) -> ChatCompletion:
        fold = self._fold(prepared, self._header(prepared))
        return await folded(self._steps(prepared, fold, live=False), fold)

    async def chunks(self, prepared: PreparedChat, *, include_usage: bool) -> AsyncIterator[ChatCompletionChunk]:
        """The response as OpenAI streams it: a role chunk per choice, content deltas, usage last."""
        header = self._header(prepared)
        if include_usage:
            header["usage"] = None
        fold = self._fold(prepared, header)
        first_extra = {"prompt_token_ids": prepared.prompt.token_ids} if prepared.request.return_token_ids else {}
        scored_sent = False
        async for steps in self._steps(prepared, fold, live=True):
            if fold.prompt_logprobs is not None and not scored_sent:  # vLLM's, on the chunk after the prefill
                first_extra, scored_sent = {**first_extra, "prompt_logprobs": fold.prompt_logprobs}, True
            yield ChatCompletionChunk(**header, choices=[self._chunk_choice(step) for step in steps], **first_extra)
            first_extra = {}
        if include_usage:
            yield ChatCompletionChunk(**{**header, "usage": fold.usage}, choices=[])

    def _fold(self, prepared: PreparedChat, header: dict[str, Any]) -> ChoiceFold:
        return ChoiceFold(header, prepared.prompt.token_ids if prepared.request.return_token_ids else None,
                          self._logprob)

    def _header(self, prepared: PreparedChat) -> dict[str, Any]:
        header: dict[str, Any] = {
            "id": new_id("chatcmpl-"),
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": self.model.name,
            "system_fingerprint": self.model.fingerprint(self.services.policy_version),
        }
        if prepared.request.service_tier is not None:
            header["service_tier"] = "default"
        return header

    async def _steps(self, prepared: PreparedChat, fold: ChoiceFold, *, live: bool) -> AsyncIterator[list[ChoiceStep]]:
        """The generation's steps shaped into choice parts (the role opening first), each folded
        into `fold` before it is yielded; the usage is set and the generation recorded at the end.
        Streamed, each step becomes a chunk; not streamed (`live=False`: see `Generation`), no
        chunk is built at all, and the fold is the answer. One shaping, so the two agree."""
        request, model, services = prepared.request, self.model, self.services
        with_ids = bool(request.return_token_ids)
        outputs = [Output(prepared.output_parser.stream()) for _ in range(prepared.params.n)] \
            if prepared.output_parser else None
        async with GenerationRun(services, self._record_fields(prepared, fold), fold.result) as run:
            # Reasoning tokens are counted per step (`Output.shape`): a reasoning model keeps its steps.
            async with run.generate(prepared.prompt.token_ids, prepared.params, live=live,
                                    steps=model.reasoning_format is not None) as generation:
                opening = [ChoiceStep(i, role=True, token_ids=[] if with_ids else None) for i in range(prepared.params.n)]
                # After submitting: the prefill runs while the role chunk goes out. While the engine is
                # paused the chunk waits for the first output, whose weights the fingerprint names.
                held = services.engine.paused
                if not held:
                    yield fold.add(opening)
                async for item in generation:
                    if isinstance(item, PromptLogprobs):
                        fold.prompt_logprobs = prompt_logprobs(model, item, request.prompt_logprobs,
                                                               prepared.params.prompt_logprobs)
                    if not isinstance(item, list):
                        continue
                    fold.header["system_fingerprint"] = model.fingerprint(generation.policy_version)
                    if held:
                        held = False
                        yield fold.add(opening)
                    steps = [
                        step
                        for delta in item
                        if (step := self._step(delta, with_ids=with_ids, logprobs=request.logprobs,
                                               output=outputs[delta.index] if outputs else None))
                    ]
                    if steps:
                        yield fold.add(steps)
                if held:  # ended without any output
                    yield fold.add(opening)
            for sample, output in zip(generation.samples, outputs or []):
                sample.tool_parse_error = output.stream.error
                sample.reasoning = "".join(output.reasoning) or None
            counts = run.counts
            details = {"completion_tokens_details": CompletionTokensDetails(
                reasoning_tokens=sum(output.reasoning_tokens for output in outputs))
            } if model.reasoning_format is not None and outputs else {}
            fold.usage = CompletionUsage(
                prompt_tokens=counts.prompt,
                completion_tokens=counts.output,
                total_tokens=counts.prompt + counts.output,
                prompt_tokens_details=PromptTokensDetails(cached_tokens=counts.cached),
                **details,
            )
            await run.finish(fold.result())

    def _record_fields(self, prepared: PreparedChat, fold: ChoiceFold) -> RecordFields:
        return RecordFields(
            model=self.model.name,
            record_id=fold.header["id"],
            kind="chat.completion",
            created=fold.header["created"],
            request=prepared.request,
            prompt_text=prepared.prompt.text,
            prompt_token_ids=prepared.prompt.token_ids,
            metadata=prepared.request.metadata,
            visible=bool(prepared.request.store),
            episode=prepared.episode,
        )

    @staticmethod
    def _step(delta: SampleDelta, *, with_ids: bool, logprobs: bool | None, output: Output | None) -> ChoiceStep | None:
        """One sample's part of one step; None when it has nothing to say."""
        content: str | None = delta.text
        reasoning = ""
        calls: list[dict[str, Any]] | None = None
        finish = finish_reason(delta)
        if output is not None:
            reasoning, content, calls = output.shape(delta.text, finished=delta.finish_reason is not None,
                                                     tokens=len(delta.token_ids))
            if finish == "stop" and output.called:
                finish = "tool_calls"
        if not (content or reasoning or calls or finish or with_ids or logprobs):
            return None
        return ChoiceStep(delta.index, content=content or "", reasoning=reasoning, calls=calls,
                          logprobs=delta.logprobs if logprobs else None,
                          token_ids=delta.token_ids if with_ids else None, finish_reason=finish,
                          ended=delta.finish_reason is not None, stop_reason=delta.stop_reason)

    def _chunk_choice(self, step: ChoiceStep) -> chunk_types.Choice:
        extra: dict[str, Any] = {"token_ids": step.token_ids} if step.token_ids is not None else {}
        if step.ended:
            extra["stop_reason"] = step.stop_reason
        if step.role:
            delta = chunk_types.ChoiceDelta(role="assistant", content="")
        elif step.content or step.calls or step.reasoning:
            delta = chunk_types.ChoiceDelta(
                content=step.content or None,
                tool_calls=[chunk_types.ChoiceDeltaToolCall(**call) for call in step.calls] if step.calls else None,
                **({"reasoning_content": step.reasoning} if step.reasoning else {}))
        else:
            delta = chunk_types.ChoiceDelta()
        return chunk_types.Choice(
            index=step.index,
            delta=delta,
            logprobs=chunk_types.ChoiceLogprobs(content=[self._logprob(e) for e in step.logprobs], refusal=None)
            if step.logprobs is not None
            else None,
            finish_reason=step.finish_reason,
            **extra,
        )

    def _logprob(self, entry: TokenLogprob) -> ChatCompletionTokenLogprob:
        fields = token_logprob(self.model, entry)
        top = [TopLogprob(**alternative) for alternative in fields.pop("top_logprobs")]
        return ChatCompletionTokenLogprob(**fields, top_logprobs=top)
