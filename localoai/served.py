"""The model a server serves, in two parts that handlers receive explicitly:

- `LoadedModel`: what the model is: its public name, weights, tokenizer and chat template, context
  length and vocabulary, the formats its output is parsed with, encode / decode, its fingerprint;
- `Services`: what the server wires around it: the engine, the store and its recorder, the
  conversations, the episodes' ledger, metrics, hosted tools and the prepare threads (`off_loop`).

`ServedModel` (what `Server.served` is) builds and holds both (`ServedModel.create`); `load_model`
loads a model from a local path and finds the tokenizer beside it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import hashlib
import os
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from localoai.chat_template import TemplatePolicy, check_prompt_chars

from localoai.engine.engine import Engine
from localoai.engine.interface import DEFAULT_MAX_BATCH_SIZE, DEFAULT_MAX_QUEUED_REQUESTS, GenerationEngine, Pooling
from localoai.engine.params import SamplingParams
from localoai.engine.text import special_token_ids
from localoai.episodes.ledger import EpisodeLedger
from localoai.errors import InvalidRequestError, model_not_found
from localoai.handlers.responses.hosted_tools import HostedTools
from localoai.metrics import ServingMetrics
from localoai.protocol.base import INT64_MAX, INT64_MIN
from localoai.parsers.harmony import HarmonyOutputParser
from localoai.parsers.output import OutputParser
from localoai.parsers.reasoning import CLOSE_THINK, HARMONY_FORMAT, OPEN_THINK, ComposedOutputParser, \
    reasoning_parser_for, starts_in_reasoning
from localoai.parsers.tool_calls import ToolParser, tool_parser_for
from localoai.store import ConversationStore, Recorder, Store, open_store
from localoai.tokens import TokenTexts


T = TypeVar("T")
PREPARE_WORKERS = 4
"""Threads that render templates and tokenize prompts: at most this many at once, off the event loop."""
PREPARE_TIMEOUT = 30.0
"""Seconds a request's rendering and tokenizing may take before it is refused."""


def load_model(source: Any, tokenizer: Any = None) -> tuple[Any, Any]:
    """Accept a model object or a local model directory; find the tokenizer if not given."""
    if isinstance(source, (str, os.PathLike)):
        from transformers import AutoModelForCausalLM

        path = os.fspath(source)
        if not os.path.isdir(path):
            raise FileNotFoundError(f"{path!r} is not a local model directory (no model hub is used)")
        source = AutoModelForCausalLM.from_pretrained(path)
    if tokenizer is None:
        tokenizer = _tokenizer_beside(source)
    elif isinstance(tokenizer, (str, os.PathLike)):
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(os.fspath(tokenizer))
    return source, tokenizer


def _name_or_path(model: Any) -> str:
    name = getattr(model, "name_or_path", None) or getattr(getattr(model, "config", None), "_name_or_path", None)
    return str(name or "")


def _tokenizer_beside(model: Any) -> Any:
    from transformers import AutoTokenizer

    path = _name_or_path(model)
    if path and os.path.isdir(path):
        return AutoTokenizer.from_pretrained(path)
    raise ValueError(
        "No tokenizer given and the model's name_or_path is not a local directory holding one: "
        "pass tokenizer=... to localoai.start()"
    )


def default_name(model: Any) -> str:
    """The model's id: its hub name as loaded, the directory name for a local path."""
    path = _name_or_path(model)
    if path and os.path.isdir(path):
        return os.path.basename(os.path.normpath(path))
    return path or "localoai-model"


def eos_token_ids(model: Any, tokenizer: Any) -> list[int]:
    ids: set[int] = set()
    for source in (getattr(model, "generation_config", None), getattr(model, "config", None)):
        value = getattr(source, "eos_token_id", None)
        ids.update([value] if isinstance(value, int) else value or [])
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return sorted(ids)


ENGINES = ("local", "vllm")


def named_engine(engine: GenerationEngine | str | None, options: Mapping[str, Any] | None, model: Any, tokenizer: Any,
                 *, max_batch_size: int, max_queued_requests: int) -> GenerationEngine | None:
    """The engine `start(engine=...)` names: None for the local one (built by the caller), a vLLM engine
    for `"vllm"` (vLLM imported only then), an engine object as it is. `options` go to vLLM only."""
    if engine is not None and not isinstance(engine, str):
        if options:
            raise ValueError("engine_options apply to a named engine (engine='vllm'), not to an engine object")
        return engine
    if engine not in (None, *ENGINES):
        raise ValueError(f"engine must be one of {ENGINES} or a GenerationEngine, not {engine!r}")
    if engine != "vllm":
        if options:
            raise ValueError("engine_options are vLLM's engine arguments: they need engine='vllm'")
        return None
    from localoai.engine.vllm_options import require_vllm

    require_vllm()
    from localoai.engine.vllm import VLLMEngine

    options = {"max_num_seqs": max_batch_size, **(options or {})}
    return VLLMEngine(model, tokenizer, eos_token_ids(model, tokenizer), engine_options=options,
                     max_queued_requests=max_queued_requests)


@dataclass
class LoadedModel:
    """What the model is (see the module); nothing here runs a request."""

    name: str
    model: Any
    tokenizer: Any
    context_length: int
    vocab_size: int
    created: int = field(default_factory=lambda: int(time.time()))
    tool_parser_class: type[ToolParser] | None = None
    """The format the model writes tool calls in, chosen from its chat template (or forced)."""
    reasoning_format: str | None = None
    """How the model writes its reasoning (`"qwen3"`, `"deepseek_r1"`, `"harmony"`), chosen from its
    chat template (or forced); None for none."""
    embedding_pooling: Pooling = "last"
    """How `/v1/embeddings` pools the last hidden states: the last token's (`"last"`) or the mean."""
    embedding_normalize: bool = True
    """Whether embeddings are scaled to unit length (as OpenAI's are)."""
    allow_client_chat_template: bool = False
    """Whether `chat_template_kwargs.chat_template` may replace the model's template (see `start`)."""
    token_texts: TokenTexts = field(init=False)

    def __post_init__(self) -> None:
        self.token_texts = TokenTexts(self.tokenizer)
        config = getattr(self.model, "config", None)
        identity = f"{self.name}:{getattr(config, 'model_type', '')}:{sum(p.numel() for p in self.model.parameters())}"
        self._identity = hashlib.sha256(identity.encode()).hexdigest()[:8]

    @functools.cached_property
    def template_policy(self) -> TemplatePolicy:
        # No token is longer (in characters) than its own string in the vocabulary: a text longer than
        # context * the longest token cannot fit, whatever the tokenizer makes of it.
        tokens = self.tokenizer.convert_ids_to_tokens(list(range(len(self.tokenizer))))
        longest = max((len(token) for token in tokens if isinstance(token, str)), default=1)
        return TemplatePolicy(self.allow_client_chat_template, self.context_length * max(longest, 1))

    def tool_parser(self, tool_names: Sequence[str]) -> ToolParser | None:
        """A parser for one request, knowing which tools were offered."""
        return self.tool_parser_class(tool_names=tool_names) if self.tool_parser_class else None

    def output_parser(self, prompt_text: str, tool_names: Sequence[str] | None) -> OutputParser | None:
        """The parser of one request's output: reasoning (read against the rendered prompt, which may
        open it) and, when tools are offered (`tool_names` not None), tool calls. None when neither
        applies: the output is then plain content."""
        if self.reasoning_format == HARMONY_FORMAT:  # harmony's channels carry reasoning and calls alike
            return HarmonyOutputParser(tool_names if tool_names is not None else ())
        tools = self.tool_parser(tool_names) if tool_names is not None else None
        if self.reasoning_format is None and tools is None:
            return None
        think = self.reasoning_format is not None
        return ComposedOutputParser(think=think, in_reasoning=think and starts_in_reasoning(prompt_text), tools=tools)

    def decoded_for(self, parser: OutputParser | None, params: SamplingParams) -> SamplingParams:
        """`params` decoding the text so that `parser` sees its markup: every special token when the
        format is made of them (harmony), else the special tokens among its markers (Mistral's
        `[TOOL_CALLS]` is one in Mistral's tokenizers, while `skip_special_tokens` drops the others)."""
        if parser is None:
            return params
        if parser.needs_special_tokens:
            return dataclasses.replace(params, skip_special_tokens=False)
        kept = self.markup_token_ids(parser.tool_parser, think=self.reasoning_format is not None)
        return dataclasses.replace(params, special_tokens_kept=kept) if kept else params

    def markup_token_ids(self, tools: ToolParser | None, *, think: bool) -> tuple[int, ...]:
        """The special tokens of the tokenizer among a format's markers (and `<think>` / `</think>`)."""
        markers = (*(tools.markup if tools is not None else ()), *((OPEN_THINK, CLOSE_THINK) if think else ()))
        special = special_token_ids(self.tokenizer)
        ids = {marker: self.tokenizer.convert_tokens_to_ids(marker) for marker in markers}
        return tuple(sorted({token for marker, token in ids.items()
                             if token in special and self.tokenizer.convert_ids_to_tokens(token) == marker}))

    @property
    def hidden_size(self) -> int:
        """The width of the last hidden states (an embedding's dimensions)."""
        return int(self.model.get_output_embeddings().weight.shape[1])

    def fingerprint(self, version: int) -> str:
        """The `system_fingerprint` of this model's weights at policy version `version`."""
        return f"fp_{self._identity}_v{version}"

    def check_model(self, requested: str | None) -> None:
        """404 for a model this server does not serve (checked before any work)."""
        if requested is not None and requested != self.name:
            raise model_not_found(requested)

    def decode(self, token_ids: Sequence[int], *, skip_special_tokens: bool = True) -> str:
        return self.tokenizer.decode(list(token_ids), skip_special_tokens=skip_special_tokens)

    def encode(self, text: str, *, add_special_tokens: bool = True, param: str = "prompt") -> list[int]:
        """Blocking: run it off the event loop (`off_loop`). Refuses a text too long for the context untokenized."""
        check_prompt_chars(text, self.template_policy, param=param)
        return list(self.tokenizer(text, add_special_tokens=add_special_tokens)["input_ids"])


class Services:
    """What the server wires around the model (see the module)."""

    def __init__(self, engine: GenerationEngine, store: Store, recorder: Recorder, tokenizer: Any,
                 hosted_tools: HostedTools | None = None) -> None:
        self.engine = engine
        self.store = store
        self.recorder = recorder
        self.conversations = ConversationStore.beside(store)
        """The Conversations API's store: in `store`'s SQLite file (memory when `store` is not a file)."""
        self.episodes = EpisodeLedger(tokenizer)
        """Open episodes and their token ledger (see `localoai.episodes`)."""
        self.metrics = ServingMetrics()
        """This server's Prometheus metrics (`GET /metrics`), in a registry of its own."""
        self.hosted_tools = hosted_tools if hosted_tools is not None else HostedTools()
        """Implementations of hosted tools (`start(hosted_tools=...)`); none by default."""
        self.metrics.bind(
            engine_stats=engine.stats, store_stats=store.stats,
            recorder_stats=lambda: {"pending": recorder.pending, "failed": recorder.failed},
            versions=lambda: {"policy_version": self.policy_version, "paused": int(engine.paused)})
        engine.observer = self.metrics
        self._preparing = ThreadPoolExecutor(PREPARE_WORKERS, thread_name_prefix="localoai-prepare")

    async def off_loop(self, work: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run `work` (template rendering, tokenizing) on the prepare threads, never on the event loop,
        refusing the request after `PREPARE_TIMEOUT` seconds (the thread finishes on its own)."""
        future = asyncio.get_running_loop().run_in_executor(self._preparing, functools.partial(work, *args, **kwargs))
        try:
            return await asyncio.wait_for(future, PREPARE_TIMEOUT)
        except TimeoutError:
            raise InvalidRequestError(f"Preparing the prompt took longer than {PREPARE_TIMEOUT:.0f} seconds.",
                                      code="prompt_preparation_timeout") from None

    @property
    def policy_version(self) -> int:
        """The weights' version (the engine's: it tags every token with it)."""
        return self.engine.policy_version

    @policy_version.setter
    def policy_version(self, version: int) -> None:
        if isinstance(version, bool) or not isinstance(version, int):
            raise TypeError(f"policy_version must be an int, not {type(version).__name__}")
        if not INT64_MIN <= version <= INT64_MAX:  # every record carries it into an SQLite integer
            raise ValueError(f"policy_version must fit in 64 bits, got {version}")
        self.engine.policy_version = version

    def close(self) -> None:
        """Stop generating, then write every record still queued."""
        self.engine.stop()
        self._preparing.shutdown(wait=True, cancel_futures=True)
        self.recorder.close()
        self.conversations.close()


class ServedModel:
    """What `Server.served` is: the `loaded` model and the `services` wired around it. Handlers take
    the two parts; reading (or setting) an attribute of either part here reaches that part, for the
    server, tests and notebooks."""

    def __init__(self, loaded: LoadedModel, services: Services) -> None:
        object.__setattr__(self, "loaded", loaded)
        object.__setattr__(self, "services", services)

    loaded: LoadedModel
    services: Services

    def __getattr__(self, name: str) -> Any:
        for part in (self.__dict__.get("loaded"), self.__dict__.get("services")):
            if part is not None and hasattr(part, name):
                return getattr(part, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        for part in (self.services, self.loaded):
            if hasattr(part, name):
                setattr(part, name, value)
                return
        raise AttributeError(f"neither the loaded model nor the services have {name!r}")

    @property
    def system_fingerprint(self) -> str:
        return self.loaded.fingerprint(self.services.policy_version)

    @classmethod
    def create(
        cls, model: Any, tokenizer: Any, name: str | None = None, store: Any = None, tool_parser: str | None = None,
        reasoning_parser: str | None = None, *, max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
        max_queued_requests: int = DEFAULT_MAX_QUEUED_REQUESTS, prefix_cache: bool | int = True,
        engine: GenerationEngine | str | None = None, engine_options: Mapping[str, Any] | None = None,
    ) -> ServedModel:
        """`store`: a path, `":memory:"`, a `Store`, or None for a new `localoai-store/run-*.sqlite3`.
        `tool_parser`: a parser name (`"hermes"`), `"none"` to return tool-call markup as text, or
        None to choose from the chat template. `reasoning_parser`: likewise (`"qwen3"`, `"none"`, ...).
        `max_batch_size` / `max_queued_requests`: see `Engine`. `prefix_cache`: see `localoai.start`.
        `engine`: another `GenerationEngine` than the local one (the options above are then its own), or
        its name: `"local"` (the default) or `"vllm"` (`localoai.engine.vllm`, built here with `engine_options`)."""
        template = getattr(tokenizer, "chat_template", None)
        reasoning = reasoning_parser_for(template, reasoning_parser)  # a bad name fails before any work
        parser = None if tool_parser == "none" else tool_parser_for(template, tool_parser)
        engine = named_engine(engine, engine_options, model, tokenizer, max_batch_size=max_batch_size,
                              max_queued_requests=max_queued_requests)
        if engine is None:
            engine = Engine.for_model(model, tokenizer, eos_token_ids(model, tokenizer), max_batch_size=max_batch_size,
                                      max_queued_requests=max_queued_requests, prefix_cache=prefix_cache)
        opened = open_store(store)
        loaded = LoadedModel(name=name or default_name(model), model=model, tokenizer=tokenizer,
                             context_length=engine.context_length, vocab_size=engine.vocab_size,
                             tool_parser_class=type(parser) if parser else None, reasoning_format=reasoning)
        return cls(loaded, Services(engine, opened, Recorder(opened), tokenizer))
