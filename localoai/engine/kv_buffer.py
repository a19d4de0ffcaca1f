"""A KV cache layer that decodes in place: its keys and values are views of buffers with spare columns.

transformers' `DynamicLayer.update` concatenates, so every decode step copies the layer's whole
cache; for a batch of long rows (16 rows of 3000 columns) that copy costs more than the step's
attention. `GrowingLayer` writes a step's columns into spare room at the right of its buffers and
re-allocates, with room to spare again (amortized O(1) per step), only when the room runs out or
when its tensors were replaced by ones it did not allocate (a prefill's, a join's). Its keys may be
any rows x columns slice of its buffers (a batch that lost rows at either end, or its leading
padding columns, is a view), and a step still writes in place. A cached prefill writes each row's
prefix where it ends up and marks the input's padding columns `unwritten`, so its rows come out
left-padded with no copy after the forward pass.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers.cache_utils import DynamicLayer


def room(width: int) -> int:
    """Spare columns allocated past `width`."""
    return max(64, width // 4)


class GrowingLayer(DynamicLayer):
    """A `DynamicLayer` whose `update` appends in place; shape (rows, kv heads, columns, head dim)."""

    def __init__(self) -> None:
        super().__init__()
        self.buffers: tuple[torch.Tensor, torch.Tensor] | None = None
        """The tensors `keys` and `values` are views of, when they are."""
        self.unwritten: torch.Tensor | None = None
        """For the next update only: bool (rows, 1, new columns, 1), True where the buffer keeps what it
        holds instead of the update's column (an input's padding, over a row's cached prefix)."""

    def allocate(self, like: torch.Tensor, rows: int, width: int, coming: int = 0, *, zeroed: bool = True) -> None:
        """Make `keys` and `values` fresh tensors of `rows` x `width` columns, with room after them for
        `coming` columns and more, and `like`'s heads and head dim (a layer's or a row's KV); the
        caller fills them. Zeros, unless `zeroed` is False: then the caller writes every column of
        `keys` and `values` (padding as zeros: a masked column must still hold finite numbers), and
        the room is written by the steps that take it before anything reads it."""
        shape = (rows, like.shape[-3], width + coming + room(width + coming), like.shape[-1])
        make = like.new_zeros if zeroed else like.new_empty
        self.buffers = (make(shape), make(shape))
        self.keys, self.values = (buffer[:, :, :width] for buffer in self.buffers)
        self.is_initialized, self.device = True, like.device

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any,
               **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        width, new = self.get_seq_length(), key_states.shape[-2]
        origin = self._origin(width + new)
        if origin is None:
            old_keys, old_values = self.keys, self.values
            self.allocate(key_states, key_states.shape[0], width + new, zeroed=self.unwritten is not None)
            if width:
                self.keys[:, :, :width] = old_keys
                self.values[:, :, :width] = old_values
            origin = (0, 0)
        assert self.buffers is not None
        row, column = origin
        rows = slice(row, row + key_states.shape[0])
        keys, values = (buffer[rows, :, column:column + width + new] for buffer in self.buffers)
        if self.unwritten is None:
            keys[:, :, width:] = key_states
            values[:, :, width:] = value_states
        else:
            keys[:, :, width:] = torch.where(self.unwritten, keys[:, :, width:], key_states)
            values[:, :, width:] = torch.where(self.unwritten, values[:, :, width:], value_states)
            self.unwritten = None
        self.keys, self.values = keys, values
        return keys, values

    def _origin(self, width: int) -> tuple[int, int] | None:
        """The (row, column) in `buffers` where `keys` and `values` start, if both are views of them
        with room for `width` columns; else None."""
        if self.buffers is None or self.get_seq_length() == 0:
            return None
        origins = {_origin_in(tensor, buffer) for tensor, buffer in zip((self.keys, self.values), self.buffers)}
        if len(origins) != 1:
            return None
        origin = origins.pop()
        if origin is None or origin[1] + width > self.buffers[0].shape[2]:
            return None
        return origin


def _origin_in(view: torch.Tensor, buffer: torch.Tensor) -> tuple[int, int] | None:
    """Where `view` starts in `buffer` (row, column), if it is a slice of whole heads of it."""
    if (view.untyped_storage().data_ptr() != buffer.untyped_storage().data_ptr() or view.stride() != buffer.stride()
            or view.dtype != buffer.dtype or view.shape[1] != buffer.shape[1]):
        return None
    offset = view.storage_offset() - buffer.storage_offset()
    row, within = divmod(offset, buffer.stride(0))
    if within % buffer.stride(2) or within >= buffer.stride(1) or row + view.shape[0] > buffer.shape[0]:
        return None
    return row, within // buffer.stride(2)
