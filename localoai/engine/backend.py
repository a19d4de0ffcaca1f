"""The model-facing side of the local engine (`Engine`), private to it.

The local engine needs to read prompts (prefill) and then decode one step at a time for a batch
of rows that changes between steps: rows of a new request join, rows of a finished one
leave. Nothing outside `localoai.engine` uses `Backend`: another engine, one that schedules for
itself, plugs in at the request level instead (`localoai.engine.interface`).
`TransformersBackend` runs a `transformers` (or PEFT-wrapped) causal LM in-process
over a `DynamicCache` left-padded to a common width, with an attention mask and per-row
position ids; a row's keys were computed at its true positions, so padding changes nothing
but which columns are masked. Its layers are `GrowingLayer`s: a decode step writes its column in
place rather than copying the whole cache, and a batch that loses a run of rows is a view.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from localoai.engine.interface import POOLINGS, Pooling  # noqa: F401 - the names this module gave them
from localoai.engine.kv_buffer import GrowingLayer, room
from localoai.engine.prefix_cache import Prefix


@dataclass
class Rows:
    """A decode state over some rows: the KV cache (left-padded to a common width) and how many
    real tokens each row holds."""

    cache: Any
    lengths: list[int]
    mask: torch.Tensor | None = None
    """The decode attention mask, built at the first padded step and kept while these rows decode
    (each step adds one column to every row, so a row's padding never changes): bool, (rows, columns
    with room to spare), True from a row's first real column on."""


@dataclass
class Prefill:
    """The result of reading a prompt: its rows' decode state and the logits of the next token per row."""

    state: Rows
    next_logits: torch.Tensor
    prompt_logits: list[torch.Tensor] | None = None
    """Per prompt, the logits at each of its positions, when asked for prompt logprobs."""


class Backend(Protocol):
    vocab_size: int
    context_length: int
    device: torch.device
    batches: bool
    """Whether rows of different requests can share a batch; when not, requests decode one at a time."""
    prefix_cacheable: bool
    """Whether `prefill_cached` and `row_kv` work (a plain per-layer KV cache), so prefixes can be reused."""

    def generation_mode(self) -> contextlib.AbstractContextManager[None]:
        """Everything the model needs around generation (eval mode, no autograd)."""
        ...

    def prefill(self, prompt_ids: Sequence[int], samples: int, *, prompt_logits: bool = False) -> Prefill:
        """Read one prompt once; its state has `samples` rows sharing that prefill."""
        ...

    def prefill_rows(self, rows: Sequence[Sequence[int]]) -> Prefill:
        """Read several sequences of equal length from scratch (a cache rebuilt after a weight update)."""
        ...

    def prefill_many(self, prompts: Sequence[Sequence[int]], samples: Sequence[int], *,
                     prompt_logits: bool = False) -> Prefill:
        """Read several prompts in one forward pass; prompt i gets `samples[i]` rows."""
        ...

    def join(self, batch: Rows | None, new: Rows) -> Rows:
        """The rows of `batch` followed by those of `new`, as one batch."""
        ...

    def prefill_cached(self, prompts: Sequence[Sequence[int]], samples: Sequence[int],
                       prefixes: Sequence[Prefix | None]) -> Prefill:
        """Like `prefill_many`, reading only the tokens after each prompt's cached `prefixes[i]`
        (its KV, from `row_kv`). Only when `prefix_cacheable`."""
        ...

    def row_kv(self, state: Rows, row: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Per layer, the KV of `row`'s tokens (without padding), shape (kv heads, tokens, head dim)."""
        ...

    def keep(self, batch: Rows, rows: Sequence[int]) -> Rows:
        """Only the given rows of `batch`, in that order."""
        ...

    def decode(self, batch: Rows, tokens: torch.Tensor) -> torch.Tensor:
        """Feed one token per row; return the next logits, shape (rows, vocab)."""
        ...

    def embed(self, prompts: Sequence[Sequence[int]], pooling: Pooling, normalize: bool) -> torch.Tensor:
        """One vector per prompt from the last hidden states (what the LM head reads), read in one
        padded forward pass: shape (prompts, hidden), float32."""
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
        from transformers.cache_utils import DynamicLayer

        self.model = model
        self._cache_class = DynamicCache
        self._cache_argument = cache_argument(model)
        config = model.config
        self.context_length = _context_length(config)
        self.device = next(model.parameters()).device
        self.vocab_size = int(model.get_output_embeddings().weight.shape[0])
        # Sliding-window, static, quantized or linear-attention layers keep their own bookkeeping
        # that left-padding would break; such models decode one request at a time.
        self.batches = all(type(layer) is DynamicLayer for layer in DynamicCache(config=config).layers)
        self.prefix_cacheable = self.batches

    def _new_cache(self) -> Any:
        """An empty cache; its layers decode in place (`GrowingLayer`) when they are plain ones."""
        cache = self._cache_class(config=self.model.config)
        if self.batches:
            cache.layers = [GrowingLayer() for _ in cache.layers]
        return cache

    @contextlib.contextmanager
    def generation_mode(self) -> Iterator[None]:
        """Eval mode and inference mode for one step; the modules that were in train mode (a policy in
        training) go back to it. Their flags are set directly: `eval()` and `train()` walk the module
        tree recursively, twice per step."""
        training = [module for module in self.model.modules() if module.training]
        for module in training:
            object.__setattr__(module, "training", False)  # past `nn.Module.__setattr__`, which is slow
        try:
            with torch.inference_mode():
                yield
        finally:
            for module in training:
                object.__setattr__(module, "training", True)

    def prefill(self, prompt_ids: Sequence[int], samples: int, *, prompt_logits: bool = False) -> Prefill:
        cache = self._new_cache()
        input_ids = torch.tensor([list(prompt_ids)], dtype=torch.long, device=self.device)
        output = self._forward(input_ids=input_ids, cache=cache, logits_to_keep=0 if prompt_logits else 1)
        logits = output.logits[0]
        next_logits = logits[-1:].expand(samples, -1)
        if samples > 1:
            cache.batch_repeat_interleave(samples)
        return Prefill(Rows(cache, [len(prompt_ids)] * samples), next_logits, [logits] if prompt_logits else None)

    def prefill_rows(self, rows: Sequence[Sequence[int]]) -> Prefill:
        cache = self._new_cache()
        input_ids = torch.tensor([list(row) for row in rows], dtype=torch.long, device=self.device)
        output = self._forward(input_ids=input_ids, cache=cache, logits_to_keep=1)
        return Prefill(Rows(cache, [input_ids.shape[1]] * len(rows)), output.logits[:, -1, :])

    def embed(self, prompts: Sequence[Sequence[int]], pooling: Pooling, normalize: bool) -> torch.Tensor:
        input_ids, mask, positions = self._left_padded(prompts)
        output = self.model(input_ids=input_ids, attention_mask=mask, position_ids=positions,
                            output_hidden_states=True, use_cache=False, logits_to_keep=1)
        hidden = output.hidden_states[-1].float()
        if pooling == "last":
            pooled = hidden[:, -1, :]  # left-padded: every row's last column is its last token
        else:
            weights = mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * weights).sum(1) / weights.sum(1)
        return torch.nn.functional.normalize(pooled, dim=-1) if normalize else pooled

    def _left_padded(self, prompts: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Prompts left-padded to one width: input ids, attention mask and per-row positions."""
        width = max(len(prompt) for prompt in prompts)
        lengths = torch.tensor([len(prompt) for prompt in prompts], device=self.device)
        input_ids = torch.tensor([[0] * (width - len(p)) + list(p) for p in prompts], dtype=torch.long,
                                 device=self.device)
        mask = (torch.arange(width, device=self.device).unsqueeze(0) >= (width - lengths).unsqueeze(1)).long()
        return input_ids, mask, (mask.cumsum(-1) - 1).clamp(min=0)

    def prefill_many(self, prompts: Sequence[Sequence[int]], samples: Sequence[int], *,
                     prompt_logits: bool = False) -> Prefill:
        if len(prompts) == 1:
            return self.prefill(prompts[0], samples[0], prompt_logits=prompt_logits)
        input_ids, mask, positions = self._left_padded(prompts)
        cache = self._new_cache()
        output = self._forward(input_ids=input_ids, attention_mask=mask, position_ids=positions, cache=cache,
                               logits_to_keep=0 if prompt_logits else 1)
        width = input_ids.shape[1]
        every = [output.logits[i, width - len(p):] for i, p in enumerate(prompts)] if prompt_logits else None
        repeat = torch.repeat_interleave(torch.arange(len(prompts), device=self.device),
                                         torch.tensor(list(samples), device=self.device))
        padding = (mask == 0)[repeat][:, None, :, None]
        for layer in cache.layers:
            # Padding columns are masked, but zeroed as well so no value computed there can reach a row.
            layer.keys = layer.keys.index_select(0, repeat).masked_fill(padding, 0.0)
            layer.values = layer.values.index_select(0, repeat).masked_fill(padding, 0.0)
        rows = Rows(cache, [len(prompts[int(i)]) for i in repeat.tolist()])
        return Prefill(rows, output.logits[:, -1, :].index_select(0, repeat), every)

    def join(self, batch: Rows | None, new: Rows) -> Rows:
        if batch is None:
            return new
        width, before = max(_width(batch), _width(new)), len(batch.lengths)
        for into, layer in zip(batch.cache.layers, new.cache.layers):
            if not isinstance(into, GrowingLayer):
                into.keys = torch.cat([_pad_left(into.keys, width), _pad_left(layer.keys, width)], dim=0)
                into.values = torch.cat([_pad_left(into.values, width), _pad_left(layer.values, width)], dim=0)
                continue
            parts = [(into.keys, into.values), (layer.keys, layer.values)]
            # Written once, right-aligned after zeros, with room
            into.allocate(layer.keys, before + len(new.lengths), width, zeroed=False)
            for rows, (keys, values) in zip((slice(0, before), slice(before, None)), parts):
                into.keys[rows, :, :width - keys.shape[2]].zero_()
                into.values[rows, :, :width - values.shape[2]].zero_()
                into.keys[rows, :, width - keys.shape[2]:] = keys
                into.values[rows, :, width - values.shape[2]:] = values
        return Rows(batch.cache, batch.lengths + new.lengths)

    def prefill_cached(self, prompts: Sequence[Sequence[int]], samples: Sequence[int],
                       prefixes: Sequence[Prefix | None]) -> Prefill:
        # Row i ends up as [padding][its prefix][its suffix], right-aligned to `total` columns. The
        # input (suffixes left-padded to `width`) is written at columns past..total, except where it
        # is padding: there the tail of a row's prefix, written beforehand, stays (`unwritten`).
        cached = [prefix.length if prefix is not None else 0 for prefix in prefixes]
        suffixes = [list(prompt[length:]) for prompt, length in zip(prompts, cached)]
        lengths = [c + len(s) for c, s in zip(cached, suffixes)]
        width = max(len(suffix) for suffix in suffixes)
        total = max(lengths) + (max(lengths) == width)  # a past of 0 columns: re-allocated, prefixes lost
        past, device = total - width, self.device
        suffix_t = torch.tensor([len(suffix) for suffix in suffixes], device=device)
        starts = total - torch.tensor(lengths, device=device)
        mask = torch.arange(total, device=device).unsqueeze(0) >= starts.unsqueeze(1)
        input_ids = torch.tensor([[0] * (width - len(s)) + s for s in suffixes], dtype=torch.long, device=device)
        positions = torch.arange(width, device=device) - (width - suffix_t).unsqueeze(1) + torch.tensor(
            cached, device=device).unsqueeze(1)
        unwritten = ((torch.arange(width, device=device) < (width - suffix_t).unsqueeze(1))[:, None, :, None]
                     if len(set(map(len, suffixes))) > 1 else None)
        cache = self._new_cache()
        template = next(prefix for prefix in prefixes if prefix is not None).blocks[0]
        for number, layer in enumerate(cache.layers):  # GrowingLayers: prefix_cacheable means plain layers
            # not zeroed: each row's padding is zeroed below, its prefix written, the rest is the forward's
            layer.allocate(template.keys[number], len(prompts), past, coming=width, zeroed=False)
            assert layer.buffers is not None
            for row, prefix in enumerate(prefixes):
                end, start = total - len(suffixes[row]), total - lengths[row]
                for buffer in layer.buffers:
                    buffer[row, :, :start].zero_()
                if prefix is not None:
                    prefix.write(number, layer.buffers[0][row, :, start:end], layer.buffers[1][row, :, start:end])
            layer.unwritten = unwritten
        output = self._forward(input_ids=input_ids, attention_mask=None if bool(mask.all()) else mask.long(),
                               position_ids=positions.clamp(min=0), cache=cache, logits_to_keep=1)
        repeat = torch.repeat_interleave(torch.arange(len(prompts), device=device),
                                         torch.tensor(list(samples), device=device))
        if len(repeat) > len(prompts):
            for layer in cache.layers:
                layer.keys, layer.values = layer.keys.index_select(0, repeat), layer.values.index_select(0, repeat)
        rows = Rows(cache, [lengths[int(i)] for i in repeat.tolist()])
        return Prefill(rows, output.logits[:, -1, :].index_select(0, repeat))

    def row_kv(self, state: Rows, row: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        start = _width(state) - state.lengths[row]
        return ([layer.keys[row, :, start:] for layer in state.cache.layers],
                [layer.values[row, :, start:] for layer in state.cache.layers])

    def keep(self, batch: Rows, rows: Sequence[int]) -> Rows:
        lengths = [batch.lengths[row] for row in rows]
        unused = _width(batch) - max(lengths)  # columns that are padding in every remaining row
        first = rows[0]
        if list(rows) == list(range(first, first + len(rows))):  # a run of rows: a view, no copy
            for layer in batch.cache.layers:
                layer.keys = layer.keys[first:first + len(rows), :, unused:]
                layer.values = layer.values[first:first + len(rows), :, unused:]
            return Rows(batch.cache, lengths)
        runs = _runs(rows)
        for layer in batch.cache.layers:
            keys, values = layer.keys, layer.values
            if isinstance(layer, GrowingLayer):  # copied once, with room for the next steps
                layer.allocate(keys, len(rows), keys.shape[2] - unused, zeroed=False)
            else:
                layer.keys = keys.new_empty((len(rows), keys.shape[1], keys.shape[2] - unused, keys.shape[3]))
                layer.values = torch.empty_like(layer.keys)
            for into, source in runs:
                layer.keys[into] = keys[source, :, unused:]
                layer.values[into] = values[source, :, unused:]
        return Rows(batch.cache, lengths)

    def decode(self, batch: Rows, tokens: torch.Tensor) -> torch.Tensor:
        width = _width(batch)
        input_ids = tokens.view(-1, 1).to(self.device)
        if all(length == width for length in batch.lengths):
            # No padding: exactly the single-request computation.
            output = self._forward(input_ids=input_ids, cache=batch.cache)
        else:
            lengths = torch.tensor(batch.lengths, dtype=torch.long, device=self.device)
            output = self._forward(input_ids=input_ids, attention_mask=self._decode_mask(batch, width),
                                   position_ids=lengths.unsqueeze(1), cache=batch.cache)
        batch.lengths = [length + 1 for length in batch.lengths]
        return output.logits[:, -1, :]

    def _decode_mask(self, batch: Rows, width: int) -> torch.Tensor:
        """The mask of a decode step over `width` cached columns and the new one: `batch.mask`'s first
        columns, 4D (what SDPA reads as is, so transformers builds nothing per step) under SDPA, else 2D."""
        if batch.mask is None or batch.mask.shape[1] <= width:
            pads = torch.tensor([width - length for length in batch.lengths], device=self.device)
            columns = torch.arange(width + 1 + room(width + 1), device=self.device)
            batch.mask = columns.unsqueeze(0) >= pads.unsqueeze(1)
        mask = batch.mask[:, :width + 1]
        sdpa = getattr(self.model.config, "_attn_implementation", None) == "sdpa"
        return mask[:, None, None, :] if sdpa else mask

    def _forward(self, *, cache: Any, **inputs: Any) -> Any:
        """One forward pass reading and extending `cache`, under the argument name this transformers takes."""
        return self.model(**inputs, **{self._cache_argument: cache}, use_cache=True)


def cache_argument(model: Any) -> str:
    """`cache`, the forward argument transformers 5.x takes (`past_key_values` is deprecated there
    and removed in 5.40), or `past_key_values` for a model whose forward has no `cache` (4.x). A
    PEFT wrapper forwards keyword arguments to its base model, so the base model's forward decides."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"


def _width(rows: Rows) -> int:
    return int(rows.cache.get_seq_length())


def _runs(rows: Sequence[int]) -> list[tuple[slice, slice]]:
    """`rows` as runs of consecutive rows: (where in the result, where in the source) per run."""
    runs: list[tuple[slice, slice]] = []
    start = 0
    for end in range(1, len(rows) + 1):
        if end == len(rows) or rows[end] != rows[end - 1] + 1:
            runs.append((slice(start, end), slice(rows[start], rows[end - 1] + 1)))
            start = end
    return runs


def _pad_left(tensor: torch.Tensor, width: int) -> torch.Tensor:
    missing = width - tensor.shape[-2]
    return torch.nn.functional.pad(tensor, (0, 0, missing, 0)) if missing else tensor
