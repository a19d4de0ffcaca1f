"""The model-facing side of the engine, behind a small interface.

The engine only needs to prefill a prompt and decode one step at a time with a KV cache;
anything that can do that (another framework, a remote worker) can stand behind `Backend`.
`TransformersBackend` runs a `transformers` (or PEFT-wrapped) causal LM in-process.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch


@dataclass
class Prefill:
    """The result of reading a prompt: a decode state and the logits of the next token per sample."""

    state: Any
    next_logits: torch.Tensor
    prompt_logits: torch.Tensor | None = None
    """Logits at every prompt position (row 0 only), when asked for prompt logprobs."""


class Backend(Protocol):
    vocab_size: int
    context_length: int
    device: torch.device

    def generation_mode(self) -> contextlib.AbstractContextManager[None]:
        """Everything the model needs around generation (eval mode, no autograd)."""
        ...

    def prefill(self, prompt_ids: Sequence[int], samples: int, *, prompt_logits: bool = False) -> Prefill: ...

    def decode(self, state: Any, tokens: torch.Tensor) -> torch.Tensor:
        """Feed one token per sample; return the next logits, shape (samples, vocab)."""
        ...


def _context_length(config: Any) -> int:
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return 2048


class TransformersBackend:
    """Decodes with a `transformers` model object, the very one the caller trains."""

    def __init__(self, model: Any) -> None:
        from transformers import DynamicCache

        self.model = model
        self._cache_class = DynamicCache
        config = model.config
        self.context_length = _context_length(config)
        self.device = next(model.parameters()).device
        self.vocab_size = int(model.get_output_embeddings().weight.shape[0])

    @contextlib.contextmanager
    def generation_mode(self) -> Iterator[None]:
        """Eval mode and inference mode for the duration; a policy in training goes back to train mode."""
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.inference_mode():
                yield
        finally:
            if was_training:
                self.model.train()

    def prefill(self, prompt_ids: Sequence[int], samples: int, *, prompt_logits: bool = False) -> Prefill:
        cache = self._cache_class(config=self.model.config)
        input_ids = torch.tensor([list(prompt_ids)], dtype=torch.long, device=self.device)
        output = self.model(
            input_ids=input_ids, past_key_values=cache, use_cache=True, logits_to_keep=0 if prompt_logits else 1
        )
        logits = output.logits[0]
        next_logits = logits[-1:].expand(samples, -1)
        if samples > 1:
            cache.batch_repeat_interleave(samples)
        return Prefill(state=cache, next_logits=next_logits, prompt_logits=logits if prompt_logits else None)

    def decode(self, state: Any, tokens: torch.Tensor) -> torch.Tensor:
        output = self.model(input_ids=tokens.view(-1, 1).to(self.device), past_key_values=state, use_cache=True)
        return output.logits[:, -1, :]
