"""What chat completions and completions share: turning request fields into
`SamplingParams` (with the checks that need the model), running a generation and keeping
its trace, ids."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

from localoai.engine.interface import QueueFull, check_supported
from localoai.engine.params import PromptLogprobs, RequestDone, SampleDelta, SamplingParams, TokenLogprob
from localoai.engine.stream import RequestStream
from localoai.errors import InvalidRequestError, RateLimitError, ServerError
from localoai.protocol.generate import GenerateSamplingParams
from localoai.protocol.sampling import SamplingFields
from localoai.served import ServedModel
from localoai.store.records import CompletionTrace, RecordStatus

T = TypeVar("T")


async def interleave(iterators: Sequence[AsyncIterator[T]]) -> AsyncIterator[T]:
    """The items of several async iterators, all running at once, in the order they come.

    The first failure ends it (the others are cancelled) and is raised; leaving it early cancels
    every iterator still running and waits for them to end, so each one's clean-up has run.
    """
    if len(iterators) == 1:
        async for item in iterators[0]:
            yield item
        return
    queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

    async def pump(iterator: AsyncIterator[T]) -> None:
        try:
            async for item in iterator:
                queue.put_nowait(("item", item))
        except Exception as exc:  # noqa: BLE001 - handed to the consumer, which raises it
            queue.put_nowait(("error", exc))
        finally:
            queue.put_nowait(("done", None))

    tasks = [asyncio.create_task(pump(iterator)) for iterator in iterators]
    try:
        running = len(tasks)
        while running:
            kind, value = await queue.get()
            if kind == "item":
                yield value
            elif kind == "error":
                raise value
            else:
                running -= 1
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def on_engine(served: ServedModel, run: Callable[[], T]) -> T:
    """`run()`'s result, computed on the engine thread between decode steps (see `Engine.call`): a
    429 when the queue is full, a 500 (details logged) when it fails; cancelled with the request."""
    try:
        future = served.engine.call(run)
    except QueueFull:
        raise RateLimitError("Too many requests are waiting for the model; try again shortly.",
                             retry_after=1) from None
    try:
        return await asyncio.wrap_future(future)
    except asyncio.CancelledError:
        future.cancel()
        raise
    except Exception as exc:
        raise ServerError("The model failed while processing this request.") from exc


def new_id(prefix: str) -> str:
    return f"{prefix}{secrets.token_hex(12)}"


def token_logprob(served: ServedModel, entry: TokenLogprob) -> dict[str, Any]:
    """One sampled token's logprob as OpenAI shows it (chat completions and Responses alike):
    `token`, `bytes`, `logprob` and `top_logprobs` (each alternative's token, bytes and logprob)."""
    text, data = served.token_texts(entry.token_id)
    top = []
    for token_id, value in entry.top:
        alt_text, alt_bytes = served.token_texts(token_id)
        top.append({"token": alt_text, "bytes": alt_bytes, "logprob": value})
    return {"token": text, "bytes": data, "logprob": entry.logprob, "top_logprobs": top}


def prompt_logprobs(served: ServedModel, item: PromptLogprobs, top: int | None,
                    computed: int | None = None) -> list[dict[str, Any] | None]:
    """vLLM's `prompt_logprobs`: per prompt token (the first has none) `{token_id: {"logprob", "rank",
    "decoded_token"}}` for the token itself, the `top` most likely and any candidate ids asked for.
    `computed`: how many top alternatives the engine computed (when more than `top`); candidates follow."""
    decode = served.tokenizer.decode
    top, computed = top or 0, max(computed or 0, top or 0)
    result: list[dict[str, Any] | None] = []
    for entry in item.entries:
        if entry is None:
            result.append(None)
            continue
        shown = {str(entry.token_id): {"logprob": entry.logprob, "rank": entry.rank,
                                       "decoded_token": decode([entry.token_id])}}
        for position, (token, value) in enumerate(entry.top):
            if top <= position < computed:  # an alternative computed for someone else (the echo)
                continue
            shown.setdefault(str(token), {"logprob": value, "rank": position + 1 if position < top else None,
                                          "decoded_token": decode([token])})
        result.append(shown)
    return result


@dataclass(frozen=True)
class Scoring:
    prompt_logprobs: int | None
    prompt_logprob_token_ids: tuple[tuple[int, ...], ...] | None


def scoring(served: ServedModel, token_ids: Sequence[int], top: int | None,
            candidates: Sequence[Sequence[int]] | None, *, param: str) -> Scoring:
    """The prompt scoring asked for: `top` alternatives per prompt token, and per position the
    `candidates` (one list per prompt token, ids in the vocabulary; they imply `top` 0)."""
    if candidates is None:
        return Scoring(top, None)
    if len(candidates) != len(token_ids):
        raise InvalidRequestError(
            f"Invalid value for '{param}': give one list per prompt token ({len(token_ids)}), not {len(candidates)}.",
            param=param, code="invalid_value")
    check_token_ids(served, [token for ids in candidates for token in ids], param=param)
    return Scoring(top if top is not None else 0, tuple(map(tuple, candidates)))


def token_budget(served: ServedModel, prompt_tokens: int, requested: int | None, *, param: str) -> int:
    """The completion's token budget; a 400 when the prompt plus it exceed the context window."""
    window = served.context_length
    if requested is None:
        if prompt_tokens >= window:
            raise _context_exceeded(window, prompt_tokens, 0, param="messages" if param != "max_tokens" else "prompt")
        return window - prompt_tokens
    if prompt_tokens + requested > window:
        raise _context_exceeded(window, prompt_tokens, requested, param=param)
    return requested


def _context_exceeded(window: int, prompt: int, completion: int, *, param: str) -> InvalidRequestError:
    return InvalidRequestError(
        f"This model's maximum context length is {window} tokens. However, you requested "
        f"{prompt + completion} tokens ({prompt} in the prompt, {completion} in the completion). "
        "Please reduce the length of the prompt or the completion.",
        param=param,
        code="context_length_exceeded",
    )


def prompt_ids(served: ServedModel, prompt: str | Sequence[int], *, param: str) -> tuple[list[int], str]:
    """A prompt given as text or token ids: its token ids and its text; a 400 for ids outside the
    vocabulary or an empty prompt."""
    if isinstance(prompt, str):
        token_ids, text = served.encode(prompt), prompt
    else:
        token_ids = list(prompt)
        check_token_ids(served, token_ids, param=param)
        text = served.decode(token_ids, skip_special_tokens=False)
    if not token_ids:
        raise InvalidRequestError(f"Invalid value for '{param}': the prompt is empty.", param=param)
    return token_ids, text


def check_token_ids(served: ServedModel, values: Sequence[int], *, param: str) -> None:
    """Every id inside the vocabulary, or a 400 naming `param` (the protocol bounded them already)."""
    for value in values:
        if not 0 <= value < served.vocab_size:
            raise InvalidRequestError(
                f"Invalid value for '{param}': token id {value} is outside the vocabulary [0, {served.vocab_size}).",
                param=param,
                code="invalid_value",
            )


def sampling_params(
    served: ServedModel,
    request: SamplingFields | GenerateSamplingParams,
    *,
    max_tokens: int,
    n: int | None = None,
    logprobs: int | None = None,
    prompt_logprobs: int | None = None,
    prompt_logprob_token_ids: tuple[tuple[int, ...], ...] | None = None,
) -> SamplingParams:
    """Build the engine's parameters; OpenAI's defaults where a field is absent."""
    bias = [(int(key), float(value)) for key, value in (request.logit_bias or {}).items()]
    check_token_ids(served, [token for token, _ in bias], param="logit_bias")
    check_token_ids(served, request.stop_token_ids or [], param="stop_token_ids")
    return SamplingParams(
        max_tokens=max_tokens,
        n=n if n is not None else request.n or 1,
        temperature=float(request.temperature if request.temperature is not None else 1.0),
        top_p=float(request.top_p if request.top_p is not None else 1.0),
        top_k=max(request.top_k or 0, 0),
        min_p=float(request.min_p or 0.0),
        presence_penalty=float(request.presence_penalty or 0.0),
        frequency_penalty=float(request.frequency_penalty or 0.0),
        repetition_penalty=float(request.repetition_penalty or 1.0),
        logit_bias=tuple(bias),
        seed=request.seed,
        stop=request.stop_sequences,
        stop_token_ids=tuple(request.stop_token_ids or ()),
        ignore_eos=bool(request.ignore_eos),
        min_tokens=request.min_tokens or 0,
        include_stop_str_in_output=bool(request.include_stop_str_in_output),
        skip_special_tokens=request.skip_special_tokens is not False,
        logprobs=logprobs,
        prompt_logprobs=prompt_logprobs,
        prompt_logprob_token_ids=prompt_logprob_token_ids,
    )


@dataclass
class SampleTrace:
    """What one sample produced, token for token, as the engine reported it."""

    token_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    text: list[str] = field(default_factory=list)
    finish_reason: str | None = None
    tool_parse_error: str | None = None
    """Why tool-call markup in the output could not be parsed (it was returned as text)."""
    reasoning: str | None = None
    """The reasoning the output parser found in `text` (returned as `reasoning_content` / reasoning items)."""
    policy_versions: list[list[int]] = field(default_factory=list)
    """`[start_token_index, version]` spans: which weights' version produced each token."""

    def add(self, delta: SampleDelta) -> None:
        if delta.token_ids and (not self.policy_versions or self.policy_versions[-1][1] != delta.policy_version):
            self.policy_versions.append([len(self.token_ids), delta.policy_version])
        self.token_ids.extend(delta.token_ids)
        self.logprobs.extend(entry.logprob for entry in delta.logprobs)
        self.text.append(delta.text)
        self.finish_reason = delta.finish_reason or self.finish_reason

    def version_spans(self) -> list[tuple[int, int]]:
        """`(tokens, version)`: how many tokens each run of one policy version produced."""
        ends = [start for start, _ in self.policy_versions[1:]] + [len(self.token_ids)]
        return [(end - start, version) for (start, version), end in zip(self.policy_versions, ends)]

    def as_record(self, index: int) -> CompletionTrace:
        trace = CompletionTrace(index=index, completion_token_ids=self.token_ids, logprobs=self.logprobs,
                                text="".join(self.text), finish_reason=self.finish_reason,
                                policy_versions=self.policy_versions)
        if self.tool_parse_error is not None:
            trace["tool_parse_error"] = self.tool_parse_error
        if self.reasoning is not None:
            trace["reasoning_content"] = self.reasoning
        return trace


class Generation:
    """One submitted generation: iterate its outputs, and it keeps the trace as they go by.

    Leaving its `running()` block before the end (a client disconnect, a failure) cancels the
    generation on the engine; `status` then says how it ended. `live=False` (an answer nobody
    reads before it is complete) delivers every output at once at the end (`RequestStream`'s
    `each_step=False`): the same items in the same order, without a wake-up per step.
    """

    def __init__(self, served: ServedModel, prompt_ids: list[int], params: SamplingParams, *,
                 live: bool = True) -> None:
        self.params = params
        self.samples = [SampleTrace() for _ in range(params.n)]
        self.timings: dict[str, float] = {}
        self.cached_tokens = 0
        """Prompt tokens whose KV the prefix cache supplied (known at the end)."""
        self.status: RecordStatus = "in_progress"
        self.error: dict[str, Any] | None = None
        self.policy_version = served.policy_version
        """The version at the start: the first token's, or the server's at submission if none came."""
        self._served = served
        self._prompt_tokens = len(prompt_ids)
        check_supported(served.engine.capabilities, params)
        self._stream = RequestStream(each_step=live)
        try:
            served.engine.submit(prompt_ids, params, self._stream)
        except QueueFull:
            served.metrics.queue_rejected()
            self.status = "cancelled"
            raise RateLimitError(
                "Too many requests are waiting for the model; try again shortly.", retry_after=1
            ) from None

    @classmethod
    @asynccontextmanager
    async def running(
        cls, served: ServedModel, prompt_ids: list[int], params: SamplingParams, *, live: bool = True
    ) -> AsyncIterator[Generation]:
        generation = cls(served, prompt_ids, params, live=live)
        try:
            yield generation
        finally:
            if generation.status == "in_progress":
                generation._stream.cancel()
                generation.status = "cancelled"

    async def __aiter__(self) -> AsyncIterator[list[SampleDelta] | PromptLogprobs]:
        async for item in self._stream:
            if isinstance(item, RequestDone):
                self.timings, self.cached_tokens = item.timings, item.cached_tokens
                self.status = "failed" if item.error is not None else "completed"
                self._observe()
                if item.error is not None:
                    self.error = {"type": type(item.error).__name__, "message": str(item.error)}
                    raise ServerError("The model failed while generating this response.") from item.error
                return
            if isinstance(item, list):
                for delta in item:
                    if delta.token_ids and not any(sample.token_ids for sample in self.samples):
                        self.policy_version = delta.policy_version
                    self.samples[delta.index].add(delta)
            yield item

    def _observe(self) -> None:
        """Count the ended generation in the server's metrics (once, at its end)."""
        spans = [sample.version_spans() for sample in self.samples]
        self._served.metrics.generation(status=self.status, prompt_tokens=self._prompt_tokens, samples=spans,
                                        timings=self.timings, current_version=self._served.policy_version,
                                        cached_tokens=self.cached_tokens)

    def traces(self, first_index: int = 0) -> list[CompletionTrace]:
        return [sample.as_record(first_index + i) for i, sample in enumerate(self.samples)]
