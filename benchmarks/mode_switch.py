"""What the native engine's per-step mode switch costs (`TransformersBackend.generation_mode`: eval
mode and inference mode around every decode step, train mode back after it), against the
`model.eval()` / `model.train()` pair it replaced, for a policy in eval mode and one in training, at
two depths. The modules' count is what matters: each is one Python object to visit per step.

    python benchmarks/mode_switch.py
"""

from __future__ import annotations

import contextlib
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CALLS, REPEATS = 300, 7


def per_call(enter: Callable[[], contextlib.AbstractContextManager[None]]) -> float:
    """Median seconds to enter and leave `enter()` once, over REPEATS runs of CALLS."""
    runs = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        for _ in range(CALLS):
            with enter():
                pass
        runs.append((time.perf_counter() - start) / CALLS)
    return statistics.median(runs)


def eval_then_train(model: Any) -> Callable[[], contextlib.AbstractContextManager[None]]:
    """The baseline: `model.eval()` before the step, `model.train()` after it if it was training."""
    import torch

    @contextlib.contextmanager
    def switched() -> Iterator[None]:
        was_training = model.training
        model.eval()
        try:
            with torch.inference_mode():
                yield
        finally:
            if was_training:
                model.train()

    return switched


def main() -> None:
    from localoai.engine.backend import TransformersBackend
    from localoai.testing import build_tiny_model

    print("| layers | modules | policy in | eval()/train() us per step | generation_mode us per step | ratio |")
    print("| --- | --- | --- | --- | --- | --- |")
    for layers in (4, 24):
        model, _ = build_tiny_model(hidden_size=64, num_layers=layers)
        backend = TransformersBackend(model)
        for mode in ("eval", "train"):
            getattr(model, mode)()
            baseline = per_call(eval_then_train(model))
            ours = per_call(backend.generation_mode)
            print(f"| {layers} | {len(list(model.modules()))} | {mode} mode | {baseline * 1e6:.0f} | {ours * 1e6:.0f} "
                  f"| {baseline / ours:.1f}x |")


if __name__ == "__main__":
    main()
