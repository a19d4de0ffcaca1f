"""The grammar engine behind structured outputs: llguidance. The only module that imports it.

llguidance was chosen over xgrammar after measuring both on CPU (`benchmarks/grammar_engines.py`,
figures in benchmarks/README.md): it compiles a nested JSON schema in milliseconds where xgrammar
takes up to seconds on a 150k vocabulary, its per-token masks were as fast or faster, it names the
JSON Schema keywords it does not implement (xgrammar silently ignores them, which would break the
schema guarantee), and it reads Lark grammars, which Codex's `custom` tools with `format: grammar`
use. Swapping engines means rewriting this module only: it turns an `OutputSpec` into a grammar,
compiles it and implements the engine's `TokenConstraint` / `ConstraintState` protocols.

Grammars are llguidance's Lark dialect, JSON schemas embedded with `%json`, written with `", "` and
`": "` separators and no other whitespace (what `json.dumps` and chat templates' `tojson` write; a
free whitespace rule would let a model pad forever). Compiled grammars are cached per (grammar,
tokenizer) in an LRU; each sample decodes with its own copy of the compiled matcher. Building the
engine's view of a tokenizer costs ~10 ms for a 1k vocabulary and ~1 s for a 150k one, once per
tokenizer (cached; it runs in the request's `prepare`, off the event loop like the chat template).
Requests carry the grammar text (`spec.GrammarSpec`); the engine compiles it on a worker thread.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import weakref
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import llguidance
import torch

from localoai.constraints.spec import OutputSpec, ToolSpec
from localoai.parsers.base import Slot, ToolCallFormat

logger = logging.getLogger(__name__)

JSON_OPTIONS = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}
CACHE_SIZE = 256


class GrammarError(ValueError):
    """A schema or grammar the engine cannot compile; `keywords` names the unsupported JSON
    Schema keywords when that is the reason."""

    def __init__(self, message: str, keywords: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.keywords = tuple(keywords)


# -- tokenizers ----------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)  # compared and hashed by identity: a key of the compiled cache
class _Vocabulary:
    """llguidance's view of one tokenizer, and its tokens by text (to match markers as tokens)."""

    tokenizer: llguidance.LLTokenizer
    token_ids: dict[str, int]


_vocabularies: dict[tuple[int, int], _Vocabulary] = {}
_vocabularies_lock = threading.Lock()


def _vocabulary(tokenizer: Any, vocab_size: int) -> _Vocabulary:
    """Built once per (tokenizer, model vocabulary size); dropped with the tokenizer."""
    key = (id(tokenizer), vocab_size)
    with _vocabularies_lock:
        found = _vocabularies.get(key)
        if found is None:
            import llguidance.hf

            try:
                view = llguidance.hf.from_tokenizer(tokenizer, n_vocab=max(vocab_size, len(tokenizer)))
            except ValueError as exc:  # a slow (Python-only) tokenizer
                raise GrammarError(f"structured outputs need a fast tokenizer: {exc}") from None
            found = _vocabularies[key] = _Vocabulary(view, dict(tokenizer.get_vocab()))
            weakref.finalize(tokenizer, _vocabularies.pop, key, None)
    return found


# -- specs to Lark -------------------------------------------------------------------------


def _schema(text: str) -> str:
    schema = json.loads(text)
    if isinstance(schema, dict):
        schema = {**schema, "x-guidance": {**JSON_OPTIONS, **schema.get("x-guidance", {})}}
    return "%json " + json.dumps(schema, ensure_ascii=False)


class _Lark:
    """Writes one spec's grammar for one tokenizer (markers that are special tokens become token
    references, which plain text can never spell)."""

    def __init__(self, vocabulary: _Vocabulary) -> None:
        self.vocabulary = vocabulary

    def literal(self, text: str) -> str:
        token_id = self.vocabulary.token_ids.get(text)
        if token_id is not None and self.vocabulary.tokenizer.is_special_token(token_id):
            return f"<[{token_id}]>"
        return json.dumps(text, ensure_ascii=False)

    def pieces(self, pieces: Sequence[str | Slot], tool: ToolSpec | None = None) -> str:
        out = []
        for piece in pieces:
            if piece is Slot.NEWLINE:
                out.append('"\\n"?')
            elif piece is Slot.NAME:
                assert tool is not None
                out.append(json.dumps(tool.name))
            elif piece is Slot.ARGUMENTS:
                assert tool is not None
                out.append(_schema(tool.parameters))
            elif isinstance(piece, str) and piece:
                out.append(self.literal(piece))
        return " ".join(out)

    def grammar(self, spec: OutputSpec) -> str:
        body = self._body(spec)
        if spec.reasoning_end is None:
            return body
        # The reasoning first, free up to its closing marker (and the blank line models write after it).
        lines = [line for line in body.splitlines() if line != "%llguidance {}"]
        lines = [f"body:{line[len('start:'):]}" if line.startswith("start:") else line for line in lines]
        end = self.literal(spec.reasoning_end)
        if end.startswith("<["):  # a special token: the reasoning is any other token
            thought = [f"thought: <[^{end[2:-2]}]>* {end}"]
        else:
            thought = [f"thought[lazy]: THOUGHT {end}", "THOUGHT: /(.|\\n)*/"]
        return "\n".join(["%llguidance {}", 'start: thought "\\n"? "\\n"? body', *thought, *lines])

    def _body(self, spec: OutputSpec) -> str:
        rules = []
        starts = []
        if spec.answer is not None:
            rules.append(f"answer: {_schema(spec.answer)}")
            starts.append("answer")
        if spec.tool_calls != "none":
            fmt = spec.call_format
            assert fmt is not None
            rules += [f"call_{i}: {self.pieces(fmt.call, tool)}" for i, tool in enumerate(spec.tools)]
            rules.append("call: " + " | ".join(f"call_{i}" for i in range(len(spec.tools))))
            if spec.tool_calls == "optional" and spec.answer is None:
                return self._after_text(spec, fmt, rules)
            more = f"({self.pieces(fmt.separator)} call)*" if spec.parallel else ""
            rules.append(f"calls: {self.pieces(fmt.begin)} call {more} {self.pieces(fmt.end)}")
            starts.append("calls")
        return "\n".join([f"start: {' | '.join(starts)}", *rules])

    def _after_text(self, spec: OutputSpec, fmt: ToolCallFormat, rules: list[str]) -> str:
        """Free text, in which each call is constrained from its trigger on. Without `parallel`, the
        output is text or text then one call, which ends it."""
        trigger = fmt.trigger
        if fmt.begin:
            more = f"({self.pieces(fmt.separator)} call)*" if spec.parallel else ""
            body = f"{self.pieces(fmt.begin[1:])} call {more} {self.pieces(fmt.end)}"
        else:  # the trigger opens each call: what follows it differs per tool
            rules = [f"rest_{i}: {self.pieces(fmt.call[1:], tool)}" for i, tool in enumerate(spec.tools)]
            body = "(" + " | ".join(f"rest_{i}" for i in range(len(spec.tools))) + ")"
        literal = self.literal(trigger)
        if literal.startswith("<["):  # a special token: text is any other token, special ones included
            token_id = literal[2:-2]
            rules.append(f"markup: {literal} {body}")
            text = "<[^" + token_id + "]>"
            start = f"({text} | markup)*" if spec.parallel else f"{text}* markup?"
            return "\n".join(["%llguidance {}", f"start: {start}", *rules])
        # A lazy text lexeme ends at the first trigger, as llguidance's `StructTag` does (text
        # lexemes cannot hold special tokens: here they cannot be written in the text).
        rules += [f"opening[lazy]: TEXT {literal}", f"markup: opening {body}"]
        start = "markup* TEXT" if spec.parallel else "TEXT | markup"
        return "\n".join(["%llguidance {}", f"start: {start}", "TEXT: /(.|\\n)*/", *rules])


# -- compiling -----------------------------------------------------------------------------


_UNIMPLEMENTED = re.compile(r"Unimplemented keys: (\[[^\]]*\])")


def _error(message: str) -> GrammarError:
    found = _UNIMPLEMENTED.search(message)
    if found is not None:
        keywords = json.loads(found.group(1))
        names = ", ".join(f"'{keyword}'" for keyword in keywords)
        return GrammarError(f"the JSON Schema keyword(s) {names} are not supported by the grammar engine that "
                            "enforces structured outputs", keywords)
    first = message.strip().splitlines()[0] if message.strip() else "invalid grammar"
    return GrammarError("it cannot be compiled into a grammar: " + re.sub(r"^at \d+\(\d+\): ", "", first))


@lru_cache(maxsize=CACHE_SIZE)
def check_schema(text: str) -> None:
    """Raise `GrammarError` for a schema (as `schema_text`) the engine cannot enforce."""
    check_grammar(schema_grammar(text))


class _CompiledCache:
    """Compiled matchers by (grammar, vocabulary), least recently used evicted first."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._entries: OrderedDict[tuple[str, _Vocabulary], llguidance.LLMatcher] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, grammar: str, vocabulary: _Vocabulary) -> llguidance.LLMatcher:
        key = (grammar, vocabulary)
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                return self._entries[key]
        matcher = llguidance.LLMatcher(vocabulary.tokenizer, llguidance.LLMatcher.grammar_from_lark(grammar),
                                       log_level=0)
        if matcher.is_error():
            raise _error(matcher.get_error())
        with self._lock:
            self._entries[key] = matcher
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)
        return matcher


_compiled = _CompiledCache(CACHE_SIZE)


def spec_grammar(spec: OutputSpec, tokenizer: Any, vocab_size: int) -> str:
    """`spec` as a grammar for this tokenizer (its markers that are special tokens become token
    references); `GrammarError` when the grammar engine could not compile it."""
    grammar = _Lark(_vocabulary(tokenizer, vocab_size)).grammar(spec)
    check_grammar(grammar)
    return grammar


@lru_cache(maxsize=CACHE_SIZE)
def check_grammar(grammar: str) -> None:
    """Raise `GrammarError` for a grammar that does not compile (checked without a tokenizer: cheap,
    so the request is refused before it reaches the engine, which compiles it for its vocabulary)."""
    is_error, messages = llguidance.LLMatcher.validate_grammar_with_warnings(
        llguidance.LLMatcher.grammar_from_lark(grammar))
    if is_error:
        raise _error(messages[0])


def compile_grammar(grammar: str, tokenizer: Any, vocab_size: int) -> GrammarConstraint:
    """The compiled constraint for a grammar in llguidance's Lark dialect (a request's `GrammarSpec`),
    cached; `GrammarError` when it does not compile. Blocking: the engine runs it on its compile thread."""
    vocabulary = _vocabulary(tokenizer, vocab_size)
    return GrammarConstraint.of(grammar, _compiled.get(grammar, vocabulary), vocabulary)


def schema_grammar(schema_text: str) -> str:
    """A grammar whose output is JSON valid against the schema (given as `schema_text`)."""
    return f"start: {_schema(schema_text)}"


# -- decoding ------------------------------------------------------------------------------


@dataclass(frozen=True)
class GrammarConstraint:
    """A compiled grammar, as the engine's `TokenConstraint`. Its one field, the grammar, is what
    a generation's record keeps of it: the compiled matcher is held outside the dataclass fields,
    so `dataclasses.asdict` (how params are recorded) never sees it."""

    grammar: str

    @classmethod
    def of(cls, grammar: str, prototype: llguidance.LLMatcher, vocabulary: _Vocabulary) -> GrammarConstraint:
        constraint = cls(grammar)
        object.__setattr__(constraint, "_prototype", prototype)
        object.__setattr__(constraint, "_vocabulary", vocabulary)
        return constraint

    def start(
        self, samples: int, *, vocab_size: int, stop_token_ids: Sequence[int], device: torch.device
    ) -> GrammarMatchers:
        prototype: llguidance.LLMatcher = object.__getattribute__(self, "_prototype")
        vocabulary: _Vocabulary = object.__getattribute__(self, "_vocabulary")
        return GrammarMatchers([prototype.deep_copy() for _ in range(samples)], vocabulary.tokenizer,
                               vocab_size=vocab_size, stop_token_ids=stop_token_ids, device=device)


_SHIFTS = torch.arange(32, dtype=torch.int32)
_executor: llguidance.LLExecutor | None = None


def _parallel() -> llguidance.LLExecutor:
    global _executor
    if _executor is None:
        _executor = llguidance.LLExecutor(num_threads=max(1, min(4, (os.cpu_count() or 2) // 2)))
    return _executor


class GrammarMatchers:
    """One matcher per sample: each step, the tokens its grammar allows next (a stop token only
    where the grammar may end, and nothing else once it must), then the sampled tokens consumed."""

    def __init__(
        self, matchers: list[llguidance.LLMatcher], tokenizer: llguidance.LLTokenizer, *, vocab_size: int,
        stop_token_ids: Sequence[int], device: torch.device,
    ) -> None:
        self.matchers = matchers
        self.vocab_size = vocab_size
        self.words = (tokenizer.vocab_size + 31) // 32
        # The engine's stop tokens end a sample, not the grammar's own idea of EOS.
        self._grammar_eos = torch.tensor([t for t in tokenizer.eos_tokens if t < vocab_size], dtype=torch.long,
                                         device=device)
        self.bitmask = torch.zeros(len(matchers), self.words, dtype=torch.int32)
        self.stop_ids = frozenset(stop_token_ids)
        self._stop_index = torch.tensor(sorted(self.stop_ids), dtype=torch.long, device=device)
        self._shifts = _SHIFTS.to(device)
        self.device = device
        self._reported: set[int] = set()

    def allowed(self) -> torch.Tensor:
        self.bitmask.zero_()
        live = [(matcher, row) for row, matcher in enumerate(self.matchers) if not matcher.is_stopped()]
        row_bytes = self.words * 4
        if len(live) > 1:
            _parallel().unsafe_compute_mask_ptr(live, self.bitmask.data_ptr(), row_bytes, len(self.matchers))
        elif live:
            matcher, row = live[0]
            matcher.unsafe_compute_mask_ptr(self.bitmask[row].data_ptr(), row_bytes)
        bits = self.bitmask.to(self.device)
        unpacked = ((bits.unsqueeze(-1) >> self._shifts) & 1).bool().view(len(self.matchers), -1)
        allowed = torch.zeros(len(self.matchers), self.vocab_size, dtype=torch.bool, device=self.device)
        width = min(self.vocab_size, unpacked.shape[1])
        allowed[:, :width] = unpacked[:, :width]
        may_end = torch.tensor([self._may_end(row, m) for row, m in enumerate(self.matchers)], device=self.device)
        if self._grammar_eos.numel():
            allowed[:, self._grammar_eos] = False
        if self._stop_index.numel():
            allowed[:, self._stop_index] = may_end.unsqueeze(1)
        return allowed

    def _may_end(self, row: int, matcher: llguidance.LLMatcher) -> bool:
        if matcher.is_error():  # never expected (only allowed tokens are consumed): end the sample
            if row not in self._reported:
                self._reported.add(row)
                logger.error("grammar matcher failed: %s", matcher.get_error())
            return True
        return matcher.is_accepting()

    def advance(self, tokens: Sequence[int]) -> None:
        for matcher, token in zip(self.matchers, tokens):
            if token not in self.stop_ids and not matcher.is_stopped():
                matcher.consume_token(token)
