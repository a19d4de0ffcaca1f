"""The live model's weights, handed to the vLLM engine (`localoai.engine.vllm`).

vLLM holds its own copy of the weights. It is built from a model directory this module writes from
the live module: `config.json` and the tokenizer (what vLLM reads to build its model), and one
`model.safetensors` with the live `state_dict` (PEFT adapters merged in for the write, unmerged
after), written to `/dev/shm` where there is one (memory, not disk) and deleted once vLLM has read
it. A weight update writes the file again and asks vLLM's worker to `reload_weights` from it.

Why a file and not tensors by reference: `AsyncLLM` always runs vLLM's engine core in a child
process (`VLLM_ENABLE_V1_MULTIPROCESSING=0` only keeps the worker inside that process), so a
callable sent through `collective_rpc` would need `VLLM_ALLOW_INSECURE_SERIALIZATION=1` and the
tensors would be copied through ZMQ anyway. On GPUs the next step is vLLM's weight-transfer engine
(`init_weight_transfer_engine`, CUDA IPC or NCCL), which skips the copy through host memory.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

WEIGHTS_FILE = "model.safetensors"


def model_directory(model: Any, tokenizer: Any) -> Path:
    """A new directory holding the model's config and tokenizer (the weights come with `write_weights`)."""
    root = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    directory = Path(tempfile.mkdtemp(prefix="localoai-vllm-", dir=root))
    base = base_model(model)
    base.config.save_pretrained(directory)
    written = json.loads((directory / "config.json").read_text())
    if not written.get("architectures"):  # a model built in memory (not loaded) has none: vLLM needs its class
        written["architectures"] = [type(base).__name__]
        (directory / "config.json").write_text(json.dumps(written, indent=2))
    tokenizer.save_pretrained(directory)
    return directory


def remove_directory(directory: Path) -> None:
    shutil.rmtree(directory, ignore_errors=True)


def base_model(model: Any) -> Any:
    """The `transformers` model under a PEFT wrapper (the model itself when there is none)."""
    return model.get_base_model() if _is_peft(model) else model


def _is_peft(model: Any) -> bool:
    return hasattr(model, "merge_adapter") and hasattr(model, "get_base_model")


@contextlib.contextmanager
def merged(model: Any) -> Iterator[Any]:
    """The base model with the PEFT adapters merged into its weights for the block (unmerged after)."""
    import torch

    if not _is_peft(model):
        yield model
        return
    with torch.no_grad():
        model.merge_adapter()
        try:
            yield model.get_base_model()
        finally:
            model.unmerge_adapter()


def checkpoint_state(model: Any) -> dict[str, Any]:
    """The base model's tensors under the checkpoint names vLLM loads: PEFT's wrappers taken off
    (`.base_layer` dropped, LoRA factors left out, a `modules_to_save` copy under its module's name).
    A tensor shared by two names (tied embeddings) is written under both, the second as a copy
    (safetensors stores no shared tensors): vLLM's in-place `reload_weights` re-creates each layer's
    tensors, which unties `lm_head` from `embed_tokens`, and a layer the checkpoint does not name
    keeps its old weights ("ParallelLMHead: Failed to load weights")."""
    tensors: dict[str, Any] = {}
    seen: set[tuple[int, tuple[int, ...]]] = set()
    for name, tensor in model.state_dict().items():
        if ".lora_" in name or ".original_module." in name:
            continue
        name = name.replace(".base_layer.", ".").replace(".modules_to_save.default.", ".")
        key = (tensor.data_ptr(), tuple(tensor.shape))
        shared = key in seen
        seen.add(key)
        tensor = tensor.detach().to("cpu")
        tensors[name] = tensor.clone() if shared else tensor.contiguous()
    return tensors


def write_weights(model: Any, directory: Path) -> Path:
    """Write the live weights (adapters merged) to `directory/model.safetensors`."""
    from safetensors.torch import save_file

    path = directory / WEIGHTS_FILE
    with merged(model) as base:
        save_file(checkpoint_state(base), str(path), metadata={"format": "pt"})
    return path


def weights_fingerprint(model: Any) -> tuple[tuple[int, int], ...]:
    """What changes when any parameter is written in place (an optimizer step, `load_state_dict`,
    `copy_`) or replaced: each parameter's storage and its version counter."""
    return tuple((p.data_ptr(), p._version) for p in model.parameters())
