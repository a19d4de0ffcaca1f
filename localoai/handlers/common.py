"""What the families share: turning request fields into `SamplingParams` (with the checks that
need the model), token budgets, prompt ids, logprobs as OpenAI and vLLM show them, ids."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from localoai.engine.interface import QueueFull
from localoai.engine.params import PromptLogprobs, SamplingParams, TokenLogprob
from localoai.errors import InvalidRequestError, RateLimitError, ServerError
from localoai.protocol.generate import GenerateSamplingParams
from localoai.protocol.sampling import SamplingFields
from localoai.served import LoadedModel, Services

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


async def on_engine(services: Services, run: Callable[[], T]) -> T:
    """`run()`'s result, computed on the engine thread between decode steps (see `Engine.call`): a
    429 when the queue is full, a 500 (details logged) when it fails; cancelled with the request."""
    try:
        future = services.engine.call(run)
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


def token_logprob(model: LoadedModel, entry: TokenLogprob) -> dict[str, Any]:
    """One sampled token's logprob as OpenAI shows it (chat completions and Responses alike):
    `token`, `bytes`, `logprob` and `top_logprobs` (each alternative's token, bytes and logprob)."""
    text, data = model.token_texts(entry.token_id)
    top = []
    for token_id, value in entry.top:
        alt_text, alt_bytes = model.token_texts(token_id)
        top.append({"token": alt_text, "bytes": alt_bytes, "logprob": value})
    return {"token": text, "bytes": data, "logprob": entry.logprob, "top_logprobs": top}


def prompt_logprobs(model: LoadedModel, item: PromptLogprobs, top: int | None,
                    computed: int | None = None) -> list[dict[str, Any] | None]:
    """vLLM's `prompt_logprobs`: per prompt token (the first has none) `{token_id: {"logprob", "rank",
    "decoded_token"}}` for the token itself, the `top` most likely and any candidate ids asked for.
    `computed`: how many top alternatives the engine computed (when more than `top`); candidates follow."""
    decode = model.tokenizer.decode
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


def scoring(model: LoadedModel, token_ids: Sequence[int], top: int | None,
            candidates: Sequence[Sequence[int]] | None, *, param: str) -> Scoring:
    """The prompt scoring asked for: `top` alternatives per prompt token, and per position the
    `candidates` (one list per prompt token, ids in the vocabulary; they imply `top` 0)."""
    if candidates is None:
        return Scoring(top, None)
    if len(candidates) != len(token_ids):
        raise InvalidRequestError(
            f"Invalid value for '{param}': give one list per prompt token ({len(token_ids)}), not {len(candidates)}.",
            param=param, code="invalid_value")
    check_token_ids(model, [token for ids in candidates for token in ids], param=param)
    return Scoring(top if top is not None else 0, tuple(map(tuple, candidates)))


def token_budget(model: LoadedModel, prompt_tokens: int, requested: int | None, *, param: str) -> int:
    """The completion's token budget; a 400 when the prompt plus it exceed the context window."""
    window = model.context_length
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


def prompt_ids(model: LoadedModel, prompt: str | Sequence[int], *, param: str) -> tuple[list[int], str]:
    """A prompt given as text or token ids: its token ids and its text; a 400 for ids outside the
    vocabulary or an empty prompt."""
    if isinstance(prompt, str):
        token_ids, text = model.encode(prompt), prompt
    else:
        token_ids = list(prompt)
        check_token_ids(model, token_ids, param=param)
        text = model.decode(token_ids, skip_special_tokens=False)
    if not token_ids:
        raise InvalidRequestError(f"Invalid value for '{param}': the prompt is empty.", param=param)
    return token_ids, text


def check_token_ids(model: LoadedModel, values: Sequence[int], *, param: str) -> None:
    """Every id inside the vocabulary, or a 400 naming `param` (the protocol bounded them already)."""
    for value in values:
        if not 0 <= value < model.vocab_size:
            raise InvalidRequestError(
                f"Invalid value for '{param}': token id {value} is outside the vocabulary [0, {model.vocab_size}).",
                param=param,
                code="invalid_value",
            )


def sampling_params(
    model: LoadedModel,
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
    check_token_ids(model, [token for token, _ in bias], param="logit_bias")
    check_token_ids(model, request.stop_token_ids or [], param="stop_token_ids")
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
