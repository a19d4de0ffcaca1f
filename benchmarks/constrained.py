"""Per-token cost of constrained decoding vs unconstrained, on the same model, in one run.

For each model, chat completions through the server (official `openai` SDK) alternate in pairs:
a `json_schema`-constrained one (a nested schema, bounded so that a random model finishes it) and
an unconstrained one (`ignore_eos`, the same `max_tokens`). Per generated token: the process's CPU
time over the request (server and client threads together; with one torch thread this is what the
work costs, and it holds on a machine shared with other jobs, where wall times do not), and the
engine's decode wall time from each generation's record (`(total - first_token) /
(completion_tokens - 1)`). Medians.

Models: `build_tiny_model` at hidden 512 / 8 layers with its ~1k vocabulary (per-token compute
dominates, the mask is cheap), and hidden 256 / 4 layers with a byte-level BPE trained here to 151k
tokens (Qwen's vocabulary size: the mask and the LM head are as wide as a real model's).

    python benchmarks/constrained.py [--repeats 6] [--threads 1] [--json]

Target: constrained decoding costs under 20% extra per token.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

TARGET = 1.20
MAX_TOKENS = 160
MESSAGES = [{"role": "user", "content": "Describe the order as JSON."}]
SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "id": {"type": "integer", "minimum": 0, "maximum": 99999},
        "status": {"enum": ["active", "inactive", "pending"]},
        "owner": {
            "type": "object",
            "properties": {"name": {"type": "string", "maxLength": 12},
                           "roles": {"type": "array", "items": {"enum": ["admin", "editor", "viewer"]}, "maxItems": 3}},
            "required": ["name", "roles"],
            "additionalProperties": False,
        },
        "items": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"sku": {"type": "string", "maxLength": 8},
                               "quantity": {"type": "integer", "minimum": 1, "maximum": 99},
                               "gift": {"type": "boolean"}},
                "required": ["sku", "quantity", "gift"],
                "additionalProperties": False,
            },
            "maxItems": 3,
        },
    },
    "required": ["id", "status", "owner", "items"],
    "additionalProperties": False,
}
FORMAT = {"type": "json_schema", "json_schema": {"name": "order", "schema": SCHEMA, "strict": True}}


def models(cache: Path) -> dict[str, tuple[Any, Any]]:
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from grammar_engines import trained_151k
    from localoai.testing.tiny import CHAT_TEMPLATE, build_tiny_model

    built = {"tiny vocab (1k), hidden 512 x 8": build_tiny_model(hidden_size=512, num_layers=8, num_heads=8)}
    tokenizer = trained_151k(cache)
    tokenizer.chat_template = CHAT_TEMPLATE
    config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=256, intermediate_size=512, num_hidden_layers=4,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True,
                         eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"))
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = Qwen2ForCausalLM(config).eval()
    model.name_or_path = "bpe151k"
    built["151k vocab, hidden 256 x 4"] = (model, tokenizer)
    return built


def measure(server: Any, repeats: int) -> dict[str, Any]:
    client = server.client(max_retries=0)
    figures: dict[str, list[float]] = {"constrained": [], "plain": [], "constrained_cpu": [], "plain_cpu": []}
    tokens: dict[str, list[int]] = {"constrained": [], "plain": []}

    def run(kind: str, seed: int) -> None:
        import time

        extra = {"response_format": FORMAT} if kind == "constrained" else {"extra_body": {"ignore_eos": True}}
        gc.collect()
        start = time.process_time()
        completion = client.chat.completions.create(model=server.model, messages=MESSAGES, max_tokens=MAX_TOKENS,
                                                    seed=seed, **extra)
        cpu = time.process_time() - start
        count = completion.usage.completion_tokens
        if kind == "constrained":
            json.loads(completion.choices[0].message.content)  # a finished, valid document
        timings = server.store.get(completion.id).timings
        figures[kind].append((timings["total"] - timings["first_token"]) / (count - 1))
        figures[f"{kind}_cpu"].append(cpu / count)
        tokens[kind].append(count)

    run("constrained", 0)  # warm-up: the tokenizer's grammar view and the compiled grammar are cached
    run("plain", 0)
    for key in figures:
        figures[key].clear()
    for key in tokens:
        tokens[key].clear()
    for i in range(repeats):
        for kind in (("constrained", "plain") if i % 2 == 0 else ("plain", "constrained")):
            run(kind, i + 1)
    medians = {key: statistics.median(values) for key, values in figures.items()}
    return {
        "cpu_ms_per_token": {"constrained": medians["constrained_cpu"] * 1e3, "plain": medians["plain_cpu"] * 1e3},
        "decode_ms_per_token": {"constrained": medians["constrained"] * 1e3, "plain": medians["plain"] * 1e3},
        "ratio": medians["constrained_cpu"] / medians["plain_cpu"],
        "decode_ratio": medians["constrained"] / medians["plain"],
        "tokens": {kind: statistics.median(counts) for kind, counts in tokens.items()},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=6)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    import torch

    import localoai

    torch.set_num_threads(args.threads)
    cache = Path(tempfile.gettempdir()) / "localoai-bench"
    cache.mkdir(exist_ok=True)
    results = {}
    for label, (model, tokenizer) in models(cache).items():
        server = localoai.start(model, tokenizer, port=0, store=":memory:", name="bench")
        try:
            figures = results[label] = measure(server, args.repeats)
        finally:
            server.stop()
        cpu, decode = figures["cpu_ms_per_token"], figures["decode_ms_per_token"]
        print(f"{label}: CPU per token {cpu['constrained']:.2f} ms constrained vs {cpu['plain']:.2f} ms plain = "
              f"{figures['ratio']:.3f}x (engine decode wall {decode['constrained']:.2f} vs {decode['plain']:.2f} ms = "
              f"{figures['decode_ratio']:.3f}x); median tokens {figures['tokens']['constrained']} vs "
              f"{figures['tokens']['plain']}", flush=True)
    worst = max(figures["ratio"] for figures in results.values())
    print(f"target {TARGET:.2f}x: {'holds' if worst < TARGET else 'MISSED'} (worst {worst:.3f}x)")
    if args.json:
        print(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
