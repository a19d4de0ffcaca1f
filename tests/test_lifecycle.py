"""The in-process server's lifecycle: start, stop, restart on the same port, replacement,
no leaked threads, a mid-stream disconnect, train mode, a notebook-like event loop, the CLI."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch

import localoai
from localoai.testing import build_tiny_model, running_server, wait_until

ROOT = Path(__file__).resolve().parents[1]


def _our_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith("localoai-")}


def _port_is_free(port: int) -> bool:
    """Whether a server could listen on `port` now (connections in TIME_WAIT do not count)."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def test_start_stop_restart_on_the_same_port(tiny: Any) -> None:
    model, tokenizer = tiny
    first = localoai.start(model, tokenizer, port=0, name="lifecycle")
    port = first.port
    assert first.running and repr(first).endswith("(running)>")
    assert "lifecycle" in first._repr_html_()
    assert httpx.get(f"{first.url}/health").status_code == 200
    first.stop()
    first.stop()  # idempotent
    assert not first.running and _port_is_free(port)
    with localoai.start(model, tokenizer, port=port, name="lifecycle") as second:
        assert second.port == port
        reply = second.client().chat.completions.create(
            model="lifecycle", messages=[{"role": "user", "content": "hi"}], max_tokens=2)
        assert reply.choices[0].message.content is not None
    assert not second.running and _port_is_free(port)


def test_starting_on_a_taken_port_replaces_the_previous_server(tiny: Any) -> None:
    model, tokenizer = tiny
    old = localoai.start(model, tokenizer, port=0, name="cell")
    new = localoai.start(model, tokenizer, port=old.port, name="cell")  # re-running the notebook cell
    try:
        assert not old.running and new.running and new.port == old.port
        assert httpx.get(f"{new.url}/health").json()["status"] == "ok"
    finally:
        new.stop()


def test_default_port_is_8000_or_next_and_rerun_keeps_it(tiny: Any) -> None:
    model, tokenizer = tiny
    first = localoai.start(model, tokenizer, name="default-port")
    try:
        assert 8000 <= first.port < 8100
        rerun = localoai.start(model, tokenizer, name="default-port")
        assert rerun.port == first.port and not first.running
        other = localoai.start(model, tokenizer, name="another-model")
        assert other.port != rerun.port
        other.stop()
        rerun.stop()
    finally:
        first.stop()


def test_no_threads_left_after_stop(tiny: Any) -> None:
    model, tokenizer = tiny
    before = _our_threads()
    with running_server(model, tokenizer, name="threads") as server:
        server.client().chat.completions.create(model="threads", messages=[{"role": "user", "content": "x"}],
                                                max_tokens=2)
        # the server, the engine and the recorder threads, and one prepare thread (templates, tokenizing)
        assert len(_our_threads() - before) == 4
    wait_until(lambda: _our_threads() - before == set(), 5, "threads left after stop")


def test_disconnect_mid_stream_cancels_generation_and_server_stays_healthy() -> None:
    model, tokenizer = build_tiny_model()
    forward_calls = [0]
    model.register_forward_pre_hook(lambda *_: forward_calls.__setitem__(0, forward_calls[0] + 1))
    with running_server(model, tokenizer, name="disconnect") as server:
        body = {"model": "disconnect", "messages": [{"role": "user", "content": "go"}], "stream": True,
                "max_tokens": 1500, "ignore_eos": True}
        with httpx.stream("POST", f"{server.base_url}/chat/completions", json=body, timeout=30) as response:
            lines = response.iter_lines()
            received = [next(lines) for _ in range(6)]
        assert all(line.startswith("data: ") or line == "" for line in received)
        engine = server.served.engine
        wait_until(lambda: engine.stats()["running"] == 0, message="generation kept running after the client left")
        calls_after_disconnect = forward_calls[0]
        assert calls_after_disconnect < 1500
        reply = server.client().chat.completions.create(
            model="disconnect", messages=[{"role": "user", "content": "again"}], max_tokens=3)
        assert reply.usage.completion_tokens == 3


def test_policy_in_train_mode_generates_in_eval_mode_and_stays_in_train_mode() -> None:
    model, tokenizer = build_tiny_model(attention_dropout=0.5, seed=1)
    with running_server(model, tokenizer, name="policy") as server:
        client = server.client()
        request: dict[str, Any] = {"model": "policy", "messages": [{"role": "user", "content": "hi"}],
                                   "max_tokens": 8, "temperature": 0}
        in_eval = client.chat.completions.create(**request).choices[0].message.content
        model.train()
        in_train = client.chat.completions.create(**request).choices[0].message.content
        with server.pause("wait", bump_version=False):  # the engine out of the model (a reply can arrive
            assert model.training, "the model must go back to train mode after generating"  # before its step ends)
        assert in_train == in_eval, "dropout was active during generation"
        model.eval()
        model.model.layers[0].train()  # one block in train mode, the rest not: each keeps its own
        in_part = client.chat.completions.create(**request).choices[0].message.content
        with server.pause("wait", bump_version=False):
            assert [module.training for module in model.modules()].count(True) == len(
                list(model.model.layers[0].modules()))
            assert model.model.layers[0].self_attn.training and not model.training
        assert in_part == in_eval, "dropout was active during generation"
        assert torch.is_grad_enabled()


def test_sync_client_inside_a_running_event_loop_does_not_deadlock(server: Any) -> None:
    """A notebook cell runs inside the kernel's event loop and may call the sync client."""

    async def cell() -> str:
        client = server.client(max_retries=0, timeout=30)
        reply = client.chat.completions.create(model=server.model, messages=[{"role": "user", "content": "x"}],
                                               max_tokens=2)
        return reply.choices[0].finish_reason

    assert asyncio.run(cell()) in ("stop", "length")


def test_start_from_a_local_directory_and_peft_model(tmp_path: Path) -> None:
    model, _ = build_tiny_model(tmp_path / "tiny-dir")
    with running_server(str(tmp_path / "tiny-dir")) as server:
        assert server.model == "tiny-dir"
        reply = server.client().chat.completions.create(
            model="tiny-dir", messages=[{"role": "user", "content": "hi"}], max_tokens=2)
        assert reply.usage.completion_tokens >= 1
    peft = pytest.importorskip("peft")
    wrapped = peft.get_peft_model(model, peft.LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    wrapped.train()
    with running_server(wrapped, name="lora") as server:  # the tokenizer is found beside name_or_path
        reply = server.client().chat.completions.create(
            model="lora", messages=[{"role": "user", "content": "hi"}], max_tokens=3, temperature=0)
        assert reply.usage.completion_tokens >= 1
        with server.pause("wait", bump_version=False):  # the engine out of the model
            assert wrapped.training


def test_cli_serves_a_local_directory(tmp_path: Path) -> None:
    build_tiny_model(tmp_path / "cli-model")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    process = subprocess.Popen([sys.executable, "-m", "localoai", "serve", str(tmp_path / "cli-model"),
                                "--port", str(port), "--api-key", "k", "--store", str(tmp_path / "cli.sqlite3")],
                               env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert "serving 'cli-model'" in (process.stdout.readline() if process.stdout else "")
        reply = httpx.post(f"http://127.0.0.1:{port}/v1/completions", headers={"Authorization": "Bearer k"},
                           json={"model": "cli-model", "prompt": "hi", "max_tokens": 2}, timeout=30)
        assert reply.status_code == 200 and reply.json()["usage"]["completion_tokens"] >= 1
    finally:
        process.terminate()
        assert process.wait(timeout=20) == 0


def test_demo_runs(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-m", "localoai", "demo", "--port", "0"], env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    for heading in ("chat completion", "streamed chat completion", "tool-using exchange", "the stored trace", "stopped"):
        assert f"== {heading}" in result.stdout


def test_keyboard_interrupt_in_the_main_thread_does_not_stop_the_server(server: Any) -> None:
    import signal

    # Python's own handler, as in a kernel (a library an earlier test loaded may have left another).
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)  # what the notebook's "interrupt kernel" delivers
    finally:
        signal.signal(signal.SIGINT, previous)
    assert server.running
    assert httpx.get(f"{server.url}/health", timeout=10).status_code == 200


GC_FREEZE_SCRIPT = """
import gc, localoai
from localoai.testing import build_tiny_model
model, tokenizer = build_tiny_model()
for freeze in (True, False):
    before = gc.get_freeze_count()
    first = localoai.start(model, tokenizer, port=0, store=":memory:", gc_freeze=freeze)
    second = localoai.start(model, tokenizer, port=0, store=":memory:", gc_freeze=freeze)
    running = gc.get_freeze_count()
    first.stop()
    one_left = gc.get_freeze_count()
    reply = second.client().completions.create(model=second.model, prompt="hi", max_tokens=2)
    second.stop()
    print(freeze, before, running > 0, one_left > 0, gc.get_freeze_count(), reply.usage.completion_tokens)
"""


def test_gc_freeze_holds_while_servers_run_and_thaws_after_the_last() -> None:
    """In a process of its own, so no other server of the test session holds the freeze."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-c", GC_FREEZE_SCRIPT], env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    frozen, left_alone = result.stdout.splitlines()
    assert frozen == "True 0 True True 0 2"  # frozen while either runs, thawed after the last stop
    assert left_alone == "False 0 False False 0 2"  # gc_freeze=False: the collector untouched
