"""The request-level engine interface: what the server asks of whatever generates its tokens.

Handlers, episodes, the store and the widgets see an engine only through `GenerationEngine`:

- `submit(prompt_ids, params, stream)`: queue one request; its `SamplingParams` carry the output
  constraint as a neutral description (`localoai.constraints.spec`), which the engine compiles for
  itself, off the event loop. The engine puts per-step `list[SampleDelta]` (token ids, the logprob
  of the distribution sampled from, top alternatives, policy version, finish), `PromptLogprobs`
  when asked, then one `RequestDone` on the `RequestStream`; `stream.cancel()` cancels it.
- `pause(mode)` / `resume()` and `policy_version`: weight updates between steps.
- `call(run)`: run a callable on the model's thread between steps (embeddings, scoring, training).
- `capabilities`: which sampling fields, constraint kinds and logprob kinds it honours;
  `check_supported` (called for every generation by `handlers.common.Generation`) refuses what it
  cannot honour with a 400 naming the field, before anything is generated.

`localoai.engine.engine.Engine` is the local implementation (transformers, continuous batching;
its forward-pass `Backend` is private to it); `localoai.testing.ScriptedEngine` replays scripted
token ids for tests. The README's "Engines" section says how another engine would plug in.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol, TypeVar

from localoai.engine.params import SamplingParams
from localoai.engine.stream import RequestStream
from localoai.errors import UnsupportedFieldError

if TYPE_CHECKING:
    import torch

PauseMode = Literal["keep", "wait", "abort"]
PAUSE_MODES: tuple[str, ...] = ("keep", "wait", "abort")
Pooling = Literal["last", "mean"]
POOLINGS: tuple[str, ...] = ("last", "mean")
DEFAULT_MAX_BATCH_SIZE = 256
DEFAULT_MAX_QUEUED_REQUESTS = 1024
T = TypeVar("T")

SAMPLING_FIELDS: tuple[str, ...] = (
    "n", "temperature", "top_p", "top_k", "min_p", "presence_penalty", "frequency_penalty", "repetition_penalty",
    "logit_bias", "seed", "stop", "stop_token_ids", "ignore_eos", "min_tokens",
)
"""The `SamplingParams` fields an engine may not honour (`max_tokens` and the text options it must)."""
CONSTRAINT_KINDS: tuple[str, ...] = ("grammar",)
"""The output constraints an engine may enforce: `grammar`, a `localoai.constraints.spec.GrammarSpec`
(JSON schemas, forced or strict tool calls, vLLM's regex, choice, grammar and json all become one)."""


class QueueFull(Exception):
    """The engine's waiting queue is at its limit; the request was not taken."""


@dataclass(frozen=True)
class Capabilities:
    """What an engine honours; anything else asked for is refused before generation."""

    sampling: frozenset[str] = frozenset(SAMPLING_FIELDS)
    """The `SAMPLING_FIELDS` it applies when they are not at their default."""
    constraints: frozenset[str] = frozenset(CONSTRAINT_KINDS)
    top_logprobs: int | None = None
    """The most top alternatives it reports per sampled token (None: any number)."""
    prompt_logprobs: bool = True
    """Prompt tokens' logprobs (`echo` with logprobs, vLLM's `prompt_logprobs`, scoring)."""
    embeddings: bool = True
    """`embed()`: pooled last hidden states."""
    call: bool = True
    """`call()`: a callable run on the model's thread between steps."""


class EngineObserver(Protocol):
    """Told of every step and pause (the server's metrics); called on the engine's threads, cheap."""

    def step(self, rows: int) -> None: ...

    def paused(self, mode: str) -> None: ...

    def resumed(self) -> None: ...


class Unobserved:
    """The observer of an engine nobody observes."""

    def step(self, rows: int) -> None:
        pass

    def paused(self, mode: str) -> None:
        pass

    def resumed(self) -> None:
        pass


class GenerationEngine(Protocol):
    """A request-level engine (see the module docstring)."""

    capabilities: Capabilities
    policy_version: int
    """The weights' version; every delta is tagged with the version that computed it."""
    observer: EngineObserver
    max_batch_size: int

    @property
    def context_length(self) -> int: ...

    @property
    def vocab_size(self) -> int: ...

    @property
    def paused(self) -> bool: ...

    @property
    def queue_full(self) -> bool: ...

    def start(self) -> None: ...

    def stop(self, timeout: float = 10.0) -> None: ...

    def submit(self, prompt_ids: list[int], params: SamplingParams, stream: RequestStream) -> None:
        """Queue a request (`QueueFull` when the queue is at its limit); cancelled by `stream.cancel()`."""
        ...

    def pause(self, mode: PauseMode = "abort", timeout: float | None = None) -> None:
        """Return once no step runs: `keep` freezes running requests, `wait` lets them finish, `abort`
        ends them (finish reason `abort`); new requests wait until `resume()`."""
        ...

    def resume(self, *, bump_version: bool = True) -> int: ...

    def call(self, run: Callable[[], T]) -> Future[T]: ...

    def embed(self, prompts: Sequence[Sequence[int]], pooling: Pooling, normalize: bool) -> torch.Tensor:
        """Pooled last hidden states, one row per prompt; run it through `call()`."""
        ...

    def stats(self) -> dict[str, int]:
        """`waiting`, `running`, `jobs` and `rows` now (the metrics read them)."""
        ...

    def prefix_cache_stats(self) -> dict[str, int]: ...


def check_supported(capabilities: Capabilities, params: SamplingParams) -> None:
    """An `UnsupportedFieldError` (400) naming the first field of `params` the engine cannot honour."""
    defaults = SamplingParams(max_tokens=params.max_tokens)
    for name in SAMPLING_FIELDS:
        if name not in capabilities.sampling and getattr(params, name) != getattr(defaults, name):
            raise _refused(name, f"this engine does not apply '{name}'")
    if params.logprobs and capabilities.top_logprobs is not None and params.logprobs > capabilities.top_logprobs:
        raise _refused("top_logprobs", f"this engine reports at most {capabilities.top_logprobs} top logprobs")
    if (params.prompt_logprobs is not None or params.prompt_logprob_token_ids) and not capabilities.prompt_logprobs:
        raise _refused("prompt_logprobs", "this engine does not compute prompt logprobs")
    constraint = params.constraint
    if constraint is not None and "grammar" not in capabilities.constraints:
        raise _refused(constraint.param, "this engine does not enforce structured outputs")


def check_embeddings(capabilities: Capabilities) -> None:
    """An `UnsupportedFieldError` (400, `param: "model"`) when the engine computes no embeddings."""
    if not capabilities.embeddings:
        raise _refused("model", "the engine serving this model computes no embeddings")


def _refused(param: str, why: str) -> UnsupportedFieldError:
    return UnsupportedFieldError(f"Unsupported parameter: '{param}': {why}.", param=param)
