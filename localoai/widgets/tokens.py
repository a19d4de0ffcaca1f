"""What the inspector shows of a record's tokens, computed from plain record data: logprob colours, entropy,
top alternatives, policy versions, where re-sent history diverged from the sampled tokens, a group's prefix tree.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from localoai.store.records import GenerationRecord

# -- logprobs, colours, entropy ------------------------------------------------------------


def logprob_color(logprob: float | None) -> str:
    """A background colour for a sampled token: green when the model was sure, red when not.

    The hue follows the probability (0 -> red, 1 -> green); `None` (not computed) is grey."""
    if logprob is None or math.isnan(logprob):
        return "hsl(0, 0%, 90%)"
    probability = math.exp(min(0.0, logprob))
    return f"hsl({round(120 * probability)}, 75%, 82%)"


def entropy(top_logprobs: Iterable[float]) -> float | None:
    """Entropy (nats) of the top alternatives, with the mass they leave out counted as one more
    outcome: a lower bound on the full distribution's entropy, exact when they cover it."""
    probabilities = [math.exp(lp) for lp in top_logprobs if lp is not None and lp > -9999.0]
    if not probabilities:
        return None
    rest = max(0.0, 1.0 - sum(probabilities))
    return -sum(p * math.log(p) for p in [*probabilities, rest] if p > 0)


@dataclass
class TokenInfo:
    """One token of the token view."""

    token_id: int
    text: str
    logprob: float | None = None
    top: list[tuple[str, float]] = field(default_factory=list)
    policy_version: int | None = None
    trainable: bool = False
    """In the loss mask: the model sampled it (this record, or an earlier turn re-sent as history)."""
    diverged: bool = False
    """The first token where re-sent history differs from what the model sampled earlier."""

    @property
    def entropy(self) -> float | None:
        return entropy(lp for _, lp in self.top)


def top_alternatives(record: GenerationRecord, sample: int = 0) -> list[list[tuple[str, float]]]:
    """Per completion token, the top alternatives the response reported (empty when not requested)."""
    output = record.output or {}
    if record.kind == "response":
        positions: list[list[tuple[str, float]]] = []
        for item in output.get("output") or []:
            for part in item.get("content") or [] if item.get("type") == "message" else []:
                for token in part.get("logprobs") or []:
                    positions.append([(t["token"], t["logprob"]) for t in token.get("top_logprobs") or []])
        return positions
    choices = [c for c in output.get("choices") or [] if c.get("index", 0) == sample]
    logprobs = (choices[0].get("logprobs") or {}) if choices else {}
    if record.kind == "chat.completion":
        return [[(t["token"], t["logprob"]) for t in entry.get("top_logprobs") or []]
                for entry in logprobs.get("content") or []]
    return [sorted(entry.items(), key=lambda kv: -kv[1]) for entry in logprobs.get("top_logprobs") or [] if entry]


def policy_version_at(spans: Sequence[Sequence[int]] | None, index: int, default: int) -> int:
    """The policy version of token `index`, from a trace's `policy_versions` ([[start, version], ...])."""
    version = default
    for start, value in spans or []:
        if start <= index:
            version = value
        else:
            break
    return version


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


def trajectory_ids(record: GenerationRecord) -> list[int]:
    """The prompt and the first sample's tokens: the sequence an episode's last generation covers."""
    sampled = record.completions[0].get("completion_token_ids", []) if record.completions else []
    return [*record.prompt_token_ids, *sampled]


def completion_tokens(record: GenerationRecord, texts: Sequence[str] | None, sample: int = 0) -> list[TokenInfo]:
    """The sampled tokens of one sample with logprobs, alternatives and policy versions."""
    if sample >= len(record.completions):
        return []
    trace = record.completions[sample]
    ids = trace.get("completion_token_ids", [])
    logprobs = trace.get("logprobs") or []
    tops = top_alternatives(record, sample)
    spans = trace.get("policy_versions")  # type: ignore[typeddict-item]
    tokens = []
    for i, token_id in enumerate(ids):
        top = tops[i] if i < len(tops) else []
        tokens.append(TokenInfo(
            token_id=token_id,
            text=texts[i] if texts is not None and i < len(texts) else f"⟨{token_id}⟩",
            logprob=logprobs[i] if i < len(logprobs) else None,
            top=top,
            policy_version=policy_version_at(spans, i, record.policy_version),
            trainable=True,
        ))
    return tokens


def prompt_tokens(
    record: GenerationRecord, texts: Sequence[str] | None, previous: GenerationRecord | None = None
) -> list[TokenInfo]:
    """The prompt's tokens; with the episode's previous generation, the tokens it sampled that were
    re-sent unchanged are marked trainable, and the first re-sent token that differs is marked diverged."""
    ids = record.prompt_token_ids
    sampled_from, sampled_to, diverged_at = 0, 0, None
    if previous is not None and previous.completions:
        earlier = trajectory_ids(previous)
        shared = common_prefix(earlier, ids)
        sampled_from = len(previous.prompt_token_ids)
        sampled_to = max(sampled_from, shared)
        if shared < len(earlier) and shared >= sampled_from:
            diverged_at = shared
    return [
        TokenInfo(
            token_id=token_id,
            text=texts[i] if texts is not None and i < len(texts) else f"⟨{token_id}⟩",
            trainable=sampled_from <= i < sampled_to,
            diverged=i == diverged_at,
        )
        for i, token_id in enumerate(ids)
    ]


# -- groups --------------------------------------------------------------------------------


@dataclass
class PrefixNode:
    """A node of the branching tree of episodes: `length` tokens shared by every leaf below it."""

    length: int
    children: list[PrefixNode] = field(default_factory=list)
    leaves: list[str] = field(default_factory=list)


def prefix_tree(sequences: Mapping[str, Sequence[int]]) -> PrefixNode:
    """Where episodes branch: a radix tree over their token sequences (leaves are episode names)."""

    def build(names: list[str], depth: int) -> PrefixNode:
        seqs = [sequences[name] for name in names]
        length = depth
        while all(len(s) > length for s in seqs) and len({s[length] for s in seqs}) == 1:
            length += 1
        node = PrefixNode(length)
        branches: dict[int, list[str]] = {}
        for name in names:
            seq = sequences[name]
            if len(seq) == length:
                node.leaves.append(name)
            else:
                branches.setdefault(seq[length], []).append(name)
        if len(names) == 1:
            node.leaves, node.children = names, []
            return node
        node.children = [build(group, length) for group in branches.values()]
        return node

    names = list(sequences)
    return build(names, 0) if names else PrefixNode(0)
