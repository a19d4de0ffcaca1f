"""Token ids to text, incrementally, and stop strings found as soon as they appear.

Both run on the engine thread inside the decode loop, so that a stop string ends
decoding at the step it is produced instead of after `max_tokens`.
"""

from __future__ import annotations

import contextlib
import functools
import weakref
from collections.abc import Collection, Sequence
from typing import Any


class IncrementalDetokenizer:
    """Decodes a growing list of ids into text deltas, holding back incomplete UTF-8.

    Decodes a small window (`prefix_offset:`) each step rather than the whole sequence,
    and decodes as the tokenizer's own `decode` does (without its clean-up of spaces, see
    `_decoder`), so the concatenated deltas equal a full decode.
    """

    def __init__(self, tokenizer: Any, *, skip_special_tokens: bool = True, keep: Collection[int] = ()) -> None:
        """`keep`: special tokens decoded even when `skip_special_tokens` (the others are dropped)."""
        self._decode_ids = _decoder(tokenizer)
        self._skip_special = skip_special_tokens and not keep
        self._dropped = special_token_ids(tokenizer).difference(keep) if skip_special_tokens and keep else frozenset()
        self.ids: list[int] = []
        self._prefix_offset = 0
        self._read_offset = 0

    def _decode(self, ids: Sequence[int]) -> str:
        return self._decode_ids(ids, skip_special_tokens=self._skip_special)

    def push(self, token_id: int) -> str:
        """Add one id; return the text it completes (possibly empty)."""
        if token_id in self._dropped:
            return ""
        self.ids.append(token_id)
        prefix_text = self._decode(self.ids[self._prefix_offset : self._read_offset])
        full_text = self._decode(self.ids[self._prefix_offset :])
        if len(full_text) > len(prefix_text) and not full_text.endswith("\ufffd"):
            self._prefix_offset = self._read_offset
            self._read_offset = len(self.ids)
            return full_text[len(prefix_text) :]
        return ""

    def flush(self) -> str:
        """Text still held back (an incomplete character at the very end)."""
        prefix_text = self._decode(self.ids[self._prefix_offset : self._read_offset])
        full_text = self._decode(self.ids[self._prefix_offset :])
        self._prefix_offset = self._read_offset = len(self.ids)
        return full_text[len(prefix_text) :]


def special_token_ids(tokenizer: Any) -> frozenset[int]:
    """The ids `skip_special_tokens` drops: added tokens marked special (cached per tokenizer)."""
    try:
        return _special_ids[tokenizer]
    except (KeyError, TypeError):
        pass
    found = frozenset(token_id for token_id, token in tokenizer.added_tokens_decoder.items() if token.special)
    with contextlib.suppress(TypeError):  # not weakly referenceable: computed again next time
        _special_ids[tokenizer] = found
    return found


_special_ids: weakref.WeakKeyDictionary[Any, frozenset[int]] = weakref.WeakKeyDictionary()


def _decoder(tokenizer: Any) -> Any:
    """`decode` without transformers' clean-up of spaces (as vLLM streams): the clean-up rewrites
    text across token boundaries (" ," becomes ","), so deltas of cleaned windows would not add up
    to any decode. For a plain fast tokenizer that is exactly the Rust `tokenizers.Tokenizer.decode`
    it wraps, called directly: two calls per token per sample, on the engine thread between
    forward passes, without the Python layers around them."""
    from transformers.tokenization_utils_base import PreTrainedTokenizerBase

    try:
        from transformers.tokenization_utils_tokenizers import TokenizersBackend as FastTokenizer
    except ImportError:  # transformers 4.x, whose fast base class decodes the same way
        from transformers.tokenization_utils_fast import PreTrainedTokenizerFast as FastTokenizer

    backend = getattr(tokenizer, "_tokenizer", None)
    if (isinstance(tokenizer, FastTokenizer) and type(tokenizer)._decode is FastTokenizer._decode
            and type(tokenizer).decode is PreTrainedTokenizerBase.decode
            and type(backend).__module__.split(".")[0] == "tokenizers"):
        return backend.decode
    return functools.partial(tokenizer.decode, clean_up_tokenization_spaces=False)


class StopStringMatcher:
    """Finds stop strings in a growing text and decides how much text is safe to release.

    Text that could still turn out to be the start of a stop string is held back, so a
    streamed client never sees part of a stop sequence.
    """

    def __init__(self, stops: Sequence[str], *, include_stop: bool = False) -> None:
        self._stops = tuple(stops)
        self._include_stop = include_stop
        self._longest = max((len(s) for s in self._stops), default=0)
        self.text = ""
        self._released = 0

    def feed(self, delta: str) -> tuple[str, str | None]:
        """Add text; return (text safe to release now, the stop string matched or None)."""
        if not self._stops:
            self.text += delta
            self._released = len(self.text)
            return delta, None
        search_from = max(0, len(self.text) - self._longest + 1)
        self.text += delta
        match = self._find(search_from)
        if match is not None:
            position, stop = match
            end = position + len(stop) if self._include_stop else position
            self.text = self.text[:end]
            return self._release(end), stop
        return self._release(len(self.text) - self._held_back()), None

    def flush(self) -> str:
        """Release everything still held back (the sample ended without a stop string)."""
        return self._release(len(self.text))

    def _find(self, start: int) -> tuple[int, str] | None:
        best: tuple[int, str] | None = None
        for stop in self._stops:
            position = self.text.find(stop, start)
            if position != -1 and (best is None or position < best[0]):
                best = (position, stop)
        return best

    def _held_back(self) -> int:
        """Length of the longest text suffix that is a proper prefix of a stop string."""
        for size in range(min(self._longest - 1, len(self.text)), 0, -1):
            tail = self.text[-size:]
            if any(stop.startswith(tail) for stop in self._stops):
                return size
        return 0

    def _release(self, upto: int) -> str:
        upto = max(upto, self._released)
        released = self.text[self._released : upto]
        self._released = upto
        return released
