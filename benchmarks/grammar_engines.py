"""xgrammar vs llguidance on CPU: grammar compile time and per-token mask cost for a nested JSON schema.

Both engines are measured in one run on the same tokenizers and the same token sequence (a valid
instance of the schema, tokenized): for each token, compute the next-token mask into a bitmask and
advance the matcher by the token, as a decode step does. Tokenizers: the tiny model's (~1k tokens,
`localoai.testing.build_tokenizer`), GPT-2's (50k, from the GGUF fixture, when present and the
`gguf` package is installed) and a byte-level BPE trained here to 151k tokens on the Python
sources installed on this machine (the size of Qwen's vocabulary; about 30 s to train, cached).

    python benchmarks/grammar_engines.py [--repeats 20] [--json]

Needs `pip install xgrammar llguidance` (xgrammar is not a localoai dependency).
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

# Benchmark this checkout, whether or not a (possibly different) localoai is installed.
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "id": {"type": "integer", "minimum": 0},
        "name": {"type": "string", "maxLength": 40},
        "status": {"enum": ["active", "inactive", "pending"]},
        "score": {"type": "number"},
        "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 5},
        "owner": {
            "type": "object",
            "properties": {
                "name": {"type": "string"},
                "email": {"type": "string"},
                "roles": {"type": "array", "items": {"enum": ["admin", "editor", "viewer"]}},
            },
            "required": ["name", "roles"],
            "additionalProperties": False,
        },
        "items": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "sku": {"type": "string"},
                    "quantity": {"type": "integer", "minimum": 1},
                    "price": {"type": "number"},
                    "options": {
                        "type": "object",
                        "properties": {"color": {"type": "string"}, "gift": {"type": "boolean"}},
                        "additionalProperties": False,
                    },
                },
                "required": ["sku", "quantity", "price"],
                "additionalProperties": False,
            },
        },
    },
    "required": ["id", "name", "status", "owner", "items"],
    "additionalProperties": False,
}

INSTANCE = {
    "id": 1042,
    "name": "Quarterly order for the Paris office",
    "status": "pending",
    "score": 0.875,
    "tags": ["office", "supplies", "q3"],
    "owner": {"name": "Ada Lovelace", "email": "ada@example.com", "roles": ["admin", "editor"]},
    "items": [
        {"sku": "PEN-001", "quantity": 12, "price": 1.5, "options": {"color": "blue", "gift": False}},
        {"sku": "NOTE-220", "quantity": 4, "price": 3.25},
        {"sku": "DESK-9", "quantity": 1, "price": 249.0, "options": {"gift": True}},
    ],
}
TEXT = json.dumps(INSTANCE)  # ", " and ": " separators: what both engines are configured to produce


def _unbounded(schema: Any) -> Any:
    """The schema without `maxLength` / `minimum`: xgrammar's compile time and masks suffer from them."""
    if isinstance(schema, dict):
        return {k: _unbounded(v) for k, v in schema.items() if k not in ("maxLength", "minimum")}
    return schema


SCHEMAS = {"bounded": SCHEMA, "unbounded": _unbounded(SCHEMA)}


def trained_151k(cache: Path) -> Any:
    """A byte-level BPE with 151k tokens, trained on this machine's installed Python sources."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    path = cache / "bpe151k.json"
    if not path.exists():
        root = Path(sys.prefix) / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}"
        files = sorted(p for p in root.rglob("*") if p.suffix in (".py", ".md", ".txt", ".rst")
                       and p.is_file() and p.stat().st_size < 300_000)

        def texts(limit: int = 200_000_000) -> Any:
            total = 0
            for file in files:
                text = file.read_text(errors="ignore")
                total += len(text)
                yield text
                if total > limit:
                    return

        backend = Tokenizer(models.BPE())
        backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        backend.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=151_000, min_frequency=2, show_progress=False,
                                      special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
        backend.train_from_iterator(texts(), trainer=trainer)
        backend.save(str(path))
    return PreTrainedTokenizerFast(tokenizer_file=str(path), eos_token="<|im_end|>")


def tokenizers(cache: Path) -> dict[str, Any]:
    from localoai.testing.tiny import build_tokenizer

    found = {"tiny (build_tokenizer)": build_tokenizer()}
    gguf = ROOT.parent / "shared" / "fixtures" / "tokenizers"
    try:
        from transformers import AutoTokenizer

        found["gpt-2 (GGUF fixture)"] = AutoTokenizer.from_pretrained(str(gguf), gguf_file="ggml-vocab-gpt-2.gguf")
    except Exception as exc:  # noqa: BLE001 - optional: the fixture or the gguf package may be missing
        print(f"(skipping the GPT-2 GGUF tokenizer: {type(exc).__name__})", file=sys.stderr)
    found["trained BPE 151k"] = trained_151k(cache)
    return found


def _timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


class XGrammar:
    name = "xgrammar"

    @staticmethod
    def load() -> None:
        import xgrammar  # noqa: F401  (imported before the timed set-up)

    def __init__(self, tokenizer: Any) -> None:
        import xgrammar as xgr

        self.xgr = xgr
        self.vocab = len(tokenizer)
        self.info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=self.vocab)

    def compile(self, schema: dict[str, Any]) -> Any:
        compiler = self.xgr.GrammarCompiler(self.info, max_threads=1, cache_enabled=False)
        return compiler.compile_json_schema(json.dumps(schema), any_whitespace=False, separators=(", ", ": "))

    def matcher(self, compiled: Any) -> Any:
        return self.xgr.GrammarMatcher(compiled)

    def bitmask(self) -> torch.Tensor:
        return self.xgr.allocate_token_bitmask(1, self.vocab)

    def step(self, matcher: Any, bitmask: torch.Tensor, token: int) -> None:
        matcher.fill_next_token_bitmask(bitmask, 0)
        if not matcher.accept_token(token):
            raise RuntimeError("xgrammar refused a token of a valid instance")


class LLGuidance:
    name = "llguidance"

    @staticmethod
    def load() -> None:
        import llguidance.hf  # noqa: F401
        import llguidance.torch  # noqa: F401

    def __init__(self, tokenizer: Any) -> None:
        import llguidance
        import llguidance.hf
        import llguidance.torch

        self.llg = llguidance
        self.vocab = len(tokenizer)
        self.info = llguidance.hf.from_tokenizer(tokenizer, n_vocab=self.vocab)

    def compile(self, schema: dict[str, Any]) -> Any:
        grammar = self.llg.LLMatcher.grammar_from_json_schema(
            schema, defaults={"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "})
        matcher = self.llg.LLMatcher(self.info, grammar)
        if matcher.is_error():
            raise RuntimeError(matcher.get_error())
        return matcher

    def matcher(self, compiled: Any) -> Any:
        return compiled.deep_copy()

    def bitmask(self) -> torch.Tensor:
        return self.llg.torch.allocate_token_bitmask(1, self.vocab)

    def step(self, matcher: Any, bitmask: torch.Tensor, token: int) -> None:
        self.llg.torch.fill_next_token_bitmask(matcher, bitmask, 0)
        if not matcher.consume_token(token):
            raise RuntimeError(f"llguidance refused a token of a valid instance: {matcher.get_error()}")


def measure(engine_class: type, tokenizer: Any, schema: dict[str, Any], repeats: int) -> dict[str, float]:
    tokens = tokenizer.encode(TEXT, add_special_tokens=False)
    engine_class.load()  # imports are not set-up: llguidance.torch alone imports torch.compile (~4 s)
    setup, engine = _timed(lambda: engine_class(tokenizer))
    compiles = []
    for _ in range(3):
        gc.collect()
        seconds, compiled = _timed(lambda: engine.compile(schema))
        compiles.append(seconds)
    bitmask = engine.bitmask()
    first_masks, per_token = [], []
    for _ in range(repeats):
        matcher = engine.matcher(compiled)
        gc.collect()
        seconds, _ = _timed(lambda: engine.step(matcher, bitmask, tokens[0]))
        first_masks.append(seconds)
        start = time.perf_counter()
        for token in tokens[1:]:
            engine.step(matcher, bitmask, token)
        per_token.append((time.perf_counter() - start) / (len(tokens) - 1))
    return {
        "vocab": len(tokenizer),
        "tokens": len(tokens),
        "tokenizer_setup_ms": setup * 1e3,
        "compile_ms": statistics.median(compiles) * 1e3,
        "first_mask_ms": statistics.median(first_masks) * 1e3,
        "first_pass_per_token_us": per_token[0] * 1e6,
        "per_token_us": statistics.median(per_token) * 1e6,
        "per_token_min_us": min(per_token) * 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cache = Path(tempfile.gettempdir()) / "localoai-bench"
    cache.mkdir(exist_ok=True)
    results = []
    for label, tokenizer in tokenizers(cache).items():
        for (schema_name, schema), engine in itertools.product(SCHEMAS.items(), (XGrammar, LLGuidance)):
            figures = measure(engine, tokenizer, schema, args.repeats)
            results.append({"tokenizer": label, "schema": schema_name, "engine": engine.name, **figures})
            print(f"{label:22} {schema_name:9} {engine.name:10} vocab {figures['vocab']:>6}  "
                  f"{figures['tokens']:>3} tokens  setup {figures['tokenizer_setup_ms']:8.1f} ms  "
                  f"compile {figures['compile_ms']:7.1f} ms  first mask {figures['first_mask_ms']:6.2f} ms  "
                  f"per token {figures['per_token_us']:7.1f} us (first pass {figures['first_pass_per_token_us']:.1f}, "
                  f"min {figures['per_token_min_us']:.1f})", flush=True)
    if args.json:
        print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
