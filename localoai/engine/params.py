"""What the engine is asked for and what it hands back, free of any HTTP or OpenAI type."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Protocol

if TYPE_CHECKING:
    import torch

    from localoai.constraints.spec import GrammarSpec

FinishReason = Literal["stop", "length", "abort"]


class ConstraintState(Protocol):
    """Where each sample of one request stands in a decoding constraint (a grammar)."""

    def allowed(self) -> torch.Tensor:
        """Which tokens each sample may take next: bool, (samples, vocab), on the logits' device.
        A sample whose constraint is complete may take only a stop token."""
        ...

    def advance(self, tokens: Sequence[int]) -> None:
        """Take each sample's sampled token (stop tokens end the sample and are not consumed)."""
        ...


class TokenConstraint(Protocol):
    """A compiled constraint on what a request may generate: the local engine compiles a request's
    `SamplingParams.constraint` into one (`localoai.constraints.grammar`), off the event loop."""

    def start(
        self, samples: int, *, vocab_size: int, stop_token_ids: Sequence[int], device: torch.device
    ) -> ConstraintState: ...


GREEDY_BELOW = 1e-5
LOWEST_TEMPERATURE = 1e-2


def usable_temperature(temperature: float) -> float:
    """As vLLM: below 1e-5 greedy, below 1e-2 raised to 1e-2. Logits divided by a temperature near
    1e-38 overflow to infinity and give NaN probabilities; 1e-2 already samples the argmax."""
    if temperature < GREEDY_BELOW:
        return 0.0
    return max(temperature, LOWEST_TEMPERATURE)


@dataclass(frozen=True)
class SamplingParams:
    """How to decode one request. `temperature == 0` means greedy."""

    max_tokens: int
    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    logit_bias: tuple[tuple[int, float], ...] = ()
    seed: int | None = None
    stop: tuple[str, ...] = ()
    stop_token_ids: tuple[int, ...] = ()
    ignore_eos: bool = False
    min_tokens: int = 0
    include_stop_str_in_output: bool = False
    skip_special_tokens: bool = True
    special_tokens_kept: tuple[int, ...] = ()
    """Special tokens the text keeps even when `skip_special_tokens` drops the others: the markup an
    output parser must see (`ServedModel.markup_token_ids`)."""
    logprobs: int | None = None
    """How many top alternatives to report per token. The sampled token's own logprob is always
    computed (every generation's trace keeps it); whether a response shows it is the handler's call."""
    prompt_logprobs: int | None = None
    """As `logprobs`, for every prompt token after the first (the legacy endpoint's `echo`, vLLM's
    `prompt_logprobs`), with each token's rank."""
    prompt_logprob_token_ids: tuple[tuple[int, ...], ...] | None = None
    """Per prompt position, token ids whose logprobs there are wanted besides the top ones (scoring
    given continuations; vLLM's name). Needs `prompt_logprobs`."""
    constraint: GrammarSpec | None = None
    """Structured outputs, described: the engine compiles it and masks the tokens outside it."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "temperature", usable_temperature(self.temperature))

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


@dataclass(frozen=True)
class TokenLogprob:
    token_id: int
    logprob: float
    top: tuple[tuple[int, float], ...] = ()
    rank: int | None = None
    """1 + how many tokens were more likely (given for prompt tokens)."""


@dataclass
class SampleDelta:
    """What one sample of a request produced in one decode step."""

    index: int
    token_ids: list[int]
    text: str
    logprobs: list[TokenLogprob] = field(default_factory=list)
    finish_reason: FinishReason | None = None
    stop_reason: str | int | None = None
    """The stop string or stop token id that ended the sample (vLLM's `stop_reason`)."""
    policy_version: int = 0
    """The policy version whose weights computed these tokens' distribution."""


def joined_deltas(deltas: list[SampleDelta]) -> list[SampleDelta]:
    """Each sample's consecutive deltas joined into one per policy version (a delta without tokens
    joins the one before it), in order of first appearance: the same tokens, text, logprobs, finish
    and version spans as `deltas`, for a reader that needs no step boundaries."""
    joined: list[tuple[SampleDelta, list[str]]] = []
    last: dict[int, tuple[SampleDelta, list[str]]] = {}
    for delta in deltas:
        entry = last.get(delta.index)
        if entry is None or entry[0].finish_reason is not None or (
                delta.token_ids and entry[0].token_ids and entry[0].policy_version != delta.policy_version):
            entry = last[delta.index] = (SampleDelta(delta.index, [], "", policy_version=delta.policy_version), [])
            joined.append(entry)
        into, texts = entry
        if delta.token_ids and not into.token_ids:
            into.policy_version = delta.policy_version
        into.token_ids += delta.token_ids
        texts.append(delta.text)
        into.logprobs += delta.logprobs
        into.finish_reason, into.stop_reason = delta.finish_reason, delta.stop_reason
    for into, texts in joined:
        into.text = "".join(texts)
    return [into for into, _ in joined]


@dataclass
class PromptLogprobs:
    """Published right after prefill when asked for: each prompt token's logprob (the first has none)."""

    entries: list[TokenLogprob | None]


@dataclass
class RequestDone:
    """The last item of a request's stream, with the error if generation failed."""

    error: BaseException | None = None
    timings: dict[str, float] = field(default_factory=dict)
    cached_tokens: int = 0
    """Prompt tokens whose KV came from the prefix cache rather than being read again."""
