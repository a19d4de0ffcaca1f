"""Unit tests of `localoai.engine.text`: stop strings found across deltas, text released safely,
and incremental detokenization that always adds up to the tokenizer's full decode."""

from __future__ import annotations

import copy
import random
from typing import Any

import pytest

from localoai.engine.text import IncrementalDetokenizer, StopStringMatcher, _decoder

# --- StopStringMatcher ----------------------------------------------------------------------


def feed_all(matcher: StopStringMatcher, deltas: list[str]) -> tuple[list[str], str | None]:
    """Feed deltas until a stop matches; return what was released per delta and the stop."""
    released: list[str] = []
    for delta in deltas:
        text, stop = matcher.feed(delta)
        released.append(text)
        if stop is not None:
            return released, stop
    released.append(matcher.flush())
    return released, None


def test_no_stops_releases_everything_at_once() -> None:
    matcher = StopStringMatcher([])
    assert matcher.feed("hello ") == ("hello ", None)
    assert matcher.feed("world") == ("world", None)
    assert matcher.flush() == ""
    assert matcher.text == "hello world"


def test_stop_inside_one_delta() -> None:
    matcher = StopStringMatcher(["STOP"])
    assert matcher.feed("hello STOP and more") == ("hello ", "STOP")
    assert matcher.text == "hello "


def test_stop_across_delta_boundary() -> None:
    matcher = StopStringMatcher(["STOP"])
    assert matcher.feed("hello ST") == ("hello ", None)  # "ST" may be the start of the stop: held back
    assert matcher.feed("O") == ("", None)
    assert matcher.feed("P trailing") == ("", "STOP")
    assert matcher.text == "hello "
    assert matcher.flush() == ""


def test_stop_split_over_many_single_characters() -> None:
    matcher = StopStringMatcher(["</answer>"])
    released, stop = feed_all(matcher, list("42</answer> ignored"))
    assert stop == "</answer>"
    assert "".join(released) == "42"


def test_held_back_prefix_released_when_not_a_stop() -> None:
    matcher = StopStringMatcher(["abc"])
    assert matcher.feed("xab") == ("x", None)
    assert matcher.feed("d") == ("abd", None)
    assert matcher.feed("a") == ("", None)
    assert matcher.feed("bx") == ("abx", None)
    assert matcher.text == "xabdabx"


def test_held_back_only_as_much_as_could_be_a_stop() -> None:
    matcher = StopStringMatcher(["abc"])
    # "b" alone is not a prefix of "abc"; only the trailing "a" is held.
    assert matcher.feed("ba") == ("b", None)
    assert matcher.feed("a") == ("a", None)  # the first "a" cannot start "abc" any more; the second can
    assert matcher.feed("bc") == ("", "abc")
    assert matcher.text == "ba"  # "b" + "a", then "abc"


def test_include_stop() -> None:
    matcher = StopStringMatcher(["STOP"], include_stop=True)
    assert matcher.feed("hello ST") == ("hello ", None)
    assert matcher.feed("OP more") == ("STOP", "STOP")
    assert matcher.text == "hello STOP"
    assert matcher.flush() == ""


@pytest.mark.parametrize("stops", [["world", "lo"], ["lo", "world"]])
def test_multiple_stops_pick_the_earliest(stops: list[str]) -> None:
    matcher = StopStringMatcher(stops)
    assert matcher.feed("hello world") == ("hel", "lo")
    assert matcher.text == "hel"


def test_multiple_stops_of_different_lengths_across_deltas() -> None:
    matcher = StopStringMatcher(["\n\n", "User:"])
    assert matcher.feed("answer\n") == ("answer", None)  # "\n" may start "\n\n"
    assert matcher.feed("Us") == ("\n", None)  # "Us" may start "User:"
    assert matcher.feed("er: hi\n\n") == ("", "User:")
    assert matcher.text == "answer\n"


def test_flush_releases_held_back_text() -> None:
    matcher = StopStringMatcher(["STOP"])
    assert matcher.feed("the end S") == ("the end ", None)
    assert matcher.flush() == "S"
    assert matcher.flush() == ""
    assert matcher.text == "the end S"


def _random_text(rng: random.Random, length: int) -> str:
    return "".join(rng.choice("abc ") for _ in range(length))


def test_random_deltas_match_reference() -> None:
    """Whatever the chunking, released text is the text up to the first stop, and never more."""
    rng = random.Random(1234)
    stop_sets = [["abc"], ["ca", "bb"], ["a b", "cc"], ["abca"]]  # no stop is a substring of another
    for _ in range(400):
        stops = rng.choice(stop_sets)
        include = rng.random() < 0.5
        text = _random_text(rng, rng.randint(0, 24))
        hits = [(text.find(stop), stop) for stop in stops if stop in text]
        if hits:
            position, expected_stop = min(hits)
            expected = text[: position + (len(expected_stop) if include else 0)]
        else:
            expected, expected_stop = text, None
        cuts = sorted(rng.sample(range(1, len(text)), k=min(len(text) - 1, rng.randint(0, 6)))) if len(text) > 1 else []
        deltas = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)])]
        matcher = StopStringMatcher(stops, include_stop=include)
        released: list[str] = []
        stop = None
        for delta in deltas:
            out, stop = matcher.feed(delta)
            released.append(out)
            assert expected.startswith("".join(released)), (text, deltas, stops)
            if stop is not None:
                break
        else:
            released.append(matcher.flush())
        assert "".join(released) == expected, (text, deltas, stops, include)
        assert stop == expected_stop


# --- IncrementalDetokenizer -----------------------------------------------------------------


@pytest.fixture(scope="module")
def tokenizer(tiny: tuple[Any, Any]) -> Any:
    return tiny[1]


def stream_decode(tokenizer: Any, ids: list[int], *, skip_special_tokens: bool = True) -> list[str]:
    detokenizer = IncrementalDetokenizer(tokenizer, skip_special_tokens=skip_special_tokens)
    deltas = [detokenizer.push(token_id) for token_id in ids]
    deltas.append(detokenizer.flush())
    assert detokenizer.ids == ids
    return deltas


TEXTS = [
    "hello world",
    "café é à la crème",
    "日本 and 日本語",
    "emoji 😀 and 👍🏽 done",
    "mixed: é日😀é{\"name\": \"paris\"}",
    "<|im_start|>user\nhé<|im_end|>",
    "a<think>b</think>c",
]


@pytest.mark.parametrize("text", TEXTS)
def test_deltas_add_up_to_text(tokenizer: Any, text: str) -> None:
    ids = tokenizer.encode(text, add_special_tokens=False)
    deltas = stream_decode(tokenizer, ids)
    assert "".join(deltas) == tokenizer.decode(ids, skip_special_tokens=True)
    assert all("\ufffd" not in delta for delta in deltas)  # incomplete UTF-8 is held back, never sent


@pytest.mark.parametrize("text", ["é", "日本", "😀", "👍🏽"])
def test_multibyte_character_spans_several_tokens(tokenizer: Any, text: str) -> None:
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert len(ids) > 1  # byte-level BPE on an ASCII corpus: one token per byte
    deltas = stream_decode(tokenizer, ids)
    assert "".join(deltas) == text
    assert deltas[0] == ""  # the first byte alone is not a character


def test_special_tokens_skipped_or_kept(tokenizer: Any) -> None:
    ids = tokenizer.encode("<|im_start|>assistant\nok<|im_end|>", add_special_tokens=False)
    assert "".join(stream_decode(tokenizer, ids)) == "assistant\nok"
    kept = "".join(stream_decode(tokenizer, ids, skip_special_tokens=False))
    assert kept == "<|im_start|>assistant\nok<|im_end|>"


def test_flush_returns_incomplete_character(tokenizer: Any) -> None:
    first_byte = tokenizer.encode("é", add_special_tokens=False)[:1]
    detokenizer = IncrementalDetokenizer(tokenizer)
    assert detokenizer.push(first_byte[0]) == ""
    assert detokenizer.flush() == tokenizer.decode(first_byte, skip_special_tokens=True)
    assert detokenizer.flush() == ""


@pytest.mark.parametrize("skip_special_tokens", [True, False])
def test_random_ids_match_full_decode(tokenizer: Any, skip_special_tokens: bool) -> None:
    rng = random.Random(7)
    vocab = len(tokenizer)
    multibyte = [i for text in TEXTS for i in tokenizer.encode(text, add_special_tokens=False)]
    for _ in range(150):
        ids = [rng.choice(multibyte) if rng.random() < 0.5 else rng.randrange(vocab) for _ in range(rng.randint(1, 40))]
        deltas = stream_decode(tokenizer, ids, skip_special_tokens=skip_special_tokens)
        assert "".join(deltas) == tokenizer.decode(ids, skip_special_tokens=skip_special_tokens), ids


def test_plain_fast_tokenizer_decodes_in_rust_with_the_same_text(tokenizer: Any) -> None:
    assert _decoder(tokenizer) == tokenizer.backend_tokenizer.decode  # no Python layers per token
    ids = tokenizer.encode("one , two . <|im_end|> three", add_special_tokens=False)
    assert "".join(stream_decode(tokenizer, ids)) == tokenizer.decode(ids, skip_special_tokens=True)


def test_text_is_never_cleaned_up_so_deltas_add_up(tokenizer: Any) -> None:
    """transformers' clean-up of spaces rewrites text across token boundaries; applied to each
    decoded window it dropped the punctuation ("one  two  three"). Like vLLM, the stream is the
    decode without it, whatever the tokenizer's setting."""
    cleaning = copy.deepcopy(tokenizer)
    cleaning.clean_up_tokenization_spaces = True
    cleaning.clean_up_tokenization_spaces_for_bpe_even_though_it_will_corrupt_output = True
    ids = cleaning.encode("one , two . three", add_special_tokens=False)
    assert cleaning.decode(ids, skip_special_tokens=True) == "one, two. three"  # the setting is live
    assert "".join(stream_decode(cleaning, ids)) == "one , two . three"
    assert cleaning.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False) == "one , two . three"


def test_tokenizer_with_its_own_decode_keeps_it(tokenizer: Any) -> None:
    class Shouting(type(tokenizer)):  # type: ignore[misc]
        def _decode(self, *args: Any, **kwargs: Any) -> str:
            return super()._decode(*args, **kwargs).upper()

    shouting = copy.deepcopy(tokenizer)
    shouting.__class__ = Shouting
    assert _decoder(shouting) != shouting.backend_tokenizer.decode
    ids = shouting.encode("hello world", add_special_tokens=False)
    assert "".join(stream_decode(shouting, ids)) == "HELLO WORLD"
