"""Smoke test of the vLLM engine (issue #13): a tiny model served with `engine="vllm"`, one request of
each kind through the `openai` client, a weight change under `pause()`. Prints what it saw.

    VLLM_ENABLE_V1_MULTIPROCESSING=0 python benchmarks/vllm_smoke.py      # in an environment with vLLM

On CPU vLLM's attention needs a head dimension of at least 32: the model has 2 heads of 32.
"""

from __future__ import annotations

import json
import os
import time


def main() -> None:
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    import torch

    import localoai
    from localoai.testing import build_tiny_model

    model, tokenizer = build_tiny_model(hidden_size=64, num_heads=2)
    started = time.perf_counter()
    server = localoai.start(model, tokenizer, port=0, store=":memory:", engine="vllm",
                            engine_options={"gpu_memory_utilization": 0.15, "max_model_len": 1024})
    print(f"started in {time.perf_counter() - started:.1f} s: {type(server.served.engine).__name__}, "
          f"context {server.served.engine.context_length}, vocab {server.served.engine.vocab_size}")
    client = server.client()
    messages = [{"role": "user", "content": "hello, what is the weather in paris?"}]
    try:
        reply = client.chat.completions.create(model=server.model, messages=messages, max_tokens=12, temperature=0,
                                               extra_body={"return_token_ids": True})
        ids = reply.choices[0].model_extra["token_ids"]
        print("chat greedy:", repr(reply.choices[0].message.content), ids, reply.choices[0].finish_reason,
              reply.system_fingerprint)
        print("  ids decode to the content:", tokenizer.decode(ids, skip_special_tokens=True)
              == reply.choices[0].message.content)
        completion = client.completions.create(model=server.model, prompt="the model said", max_tokens=8,
                                               temperature=0, extra_body={"return_token_ids": True})
        print("completion:", repr(completion.choices[0].text), completion.choices[0].model_extra["token_ids"])
        scored = client.chat.completions.create(model=server.model, messages=messages, max_tokens=4, temperature=0,
                                                logprobs=True, top_logprobs=3)
        for entry in scored.choices[0].logprobs.content:
            print(f"  logprob {entry.token!r} {entry.logprob:.4f} top {[(t.token, round(t.logprob, 4)) for t in entry.top_logprobs]}")
        seeded = [client.chat.completions.create(model=server.model, messages=messages, max_tokens=10, seed=seed,
                                                 temperature=1.0, extra_body={"return_token_ids": True})
                  .choices[0].model_extra["token_ids"] for seed in (7, 7, 8)]
        print("seed 7 twice equal:", seeded[0] == seeded[1], "| seed 8 differs:", seeded[0] != seeded[2])
        n = client.chat.completions.create(model=server.model, messages=messages, max_tokens=6, seed=3, n=3,
                                           temperature=1.0)
        print("n=3:", [choice.message.content for choice in n.choices])
        schema = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 12}}, "required": ["city"],
                  "additionalProperties": False}
        structured = client.chat.completions.create(
            model=server.model, messages=messages, max_tokens=40, seed=1,
            response_format={"type": "json_schema", "json_schema": {"name": "place", "schema": schema}})
        print("structured:", structured.choices[0].message.content, "->", json.loads(structured.choices[0].message.content))
        echoed = client.completions.create(model=server.model, prompt="the model said", max_tokens=0, echo=True,
                                           logprobs=1)
        print("echo logprobs:", echoed.choices[0].logprobs.token_logprobs)
        version = server.policy_version
        started = time.perf_counter()
        with server.pause(mode="keep"), torch.no_grad():
            generator = torch.Generator().manual_seed(5)
            for parameter in model.parameters():
                parameter.add_(torch.randn(parameter.shape, generator=generator) * 0.5)
        print(f"pause + weight push + resume: {time.perf_counter() - started:.2f} s; "
              f"policy version {version} -> {server.policy_version}")
        after = client.chat.completions.create(model=server.model, messages=messages, max_tokens=12, temperature=0,
                                               extra_body={"return_token_ids": True})
        print("chat greedy after the update:", after.choices[0].model_extra["token_ids"], after.system_fingerprint)
        print("  differs from before:", after.choices[0].model_extra["token_ids"] != ids)
    finally:
        server.stop()


if __name__ == "__main__":
    main()
