"""What a new user hits first: the README's install from a folder next to the clone, the README's
first script, `localoai serve`'s options and errors, start-up logging, and a clean forward call
(no deprecated transformers argument). Real processes and a real venv, no mocks."""

from __future__ import annotations

import logging
import os
import re
import shutil
import socket
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest

from localoai.cli import main, pick_device, pick_dtype

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def run(args: list[str], cwd: Path, timeout: float = 600, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "PYTHONPATH": "", **(env or {})}
    return subprocess.run(args, cwd=cwd, env=environment, capture_output=True, text=True, timeout=timeout)


def test_readme_install_imports_the_package_from_the_folder_holding_the_clone(tmp_path: Path) -> None:
    """`pip install -e .` as the README writes it, then a script saved in the clone's parent folder:
    `import localoai` must be the package, not the clone directory read as a namespace package."""
    command = next(line for line in README.splitlines() if "pip install" in line and "demo" in line)
    install = command.split("&&")[0].split()
    assert "editable_mode=compat" in install, command
    clone = tmp_path / "localoai"  # `git clone .../localoai` makes a folder named like the package
    shutil.copytree(ROOT, clone, ignore=shutil.ignore_patterns(".git", "tests", "notebooks", "benchmarks", "*.egg-info",
                                                               "__pycache__", "test-artifacts", "localoai-store", "build"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    # The README's flags, without re-installing torch and the dependencies (already here); pip and
    # setuptools are the ones installed here (the venv sees them: no download).
    flags = [arg.strip('"') for arg in install[2:] if not arg.startswith('"torch')]
    installed = run([str(python), "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--quiet", *flags],
                    cwd=clone)
    assert installed.returncode == 0, installed.stderr[-2000:]
    (tmp_path / "script.py").write_text("import localoai\nprint(localoai.__file__, callable(localoai.start))\n")
    ran = run([str(python), "script.py"], cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr[-2000:]
    assert ran.stdout.split() == [str(clone / "localoai" / "__init__.py"), "True"]


def test_readme_first_script_runs_as_pasted(tmp_path: Path) -> None:
    block = README.split("## Set-up", 1)[1].split("```python", 1)[1].split("```", 1)[0]
    assert len(block.strip().splitlines()) <= 12 and "localoai.start" in block
    (tmp_path / "first.py").write_text(block)
    ran = run([sys.executable, "first.py"], cwd=tmp_path, env={"PYTHONPATH": str(ROOT)})
    assert ran.returncode == 0, ran.stderr[-3000:]
    assert ran.stdout.strip(), "the first script prints the model's answer"


def test_no_deprecated_cache_argument_reaches_the_model(server: Any) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        server.client(max_retries=0).completions.create(model=server.model, prompt="hi", max_tokens=3)
        server.served.engine.backend.prefill([1, 2, 3], 2)
    assert not [w for w in caught if "past_key_values" in str(w.message)]


def test_start_logs_where_it_serves_and_stores(tiny: tuple[Any, Any], caplog: pytest.LogCaptureFixture) -> None:
    from localoai.testing import running_server

    caplog.set_level(logging.INFO, logger="localoai.server")
    with running_server(*tiny, name="logged") as server:
        assert any(server.base_url in m and ":memory:" in m and "/ui/" in m for m in caplog.messages), caplog.messages


# -- localoai serve ------------------------------------------------------------------------------------


def test_version_and_log_level_after_the_subcommand(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and re.fullmatch(r"localoai \d+\.\d+\.\d+\S*\n", capsys.readouterr().out)
    # `--log-level` after the subcommand parses (the error is the missing directory, not the option).
    assert main(["serve", str(tmp_path / "nowhere"), "--log-level", "info"]) == 2


@pytest.mark.parametrize("problem", ["missing", "file", "empty"])
def test_serve_refuses_a_wrong_path_in_one_line(problem: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "model"
    if problem == "file":
        path.write_text("not a directory")
    elif problem == "empty":
        path.mkdir()
    assert main(["serve", str(path)]) == 2
    error = capsys.readouterr().err
    assert error.startswith("localoai: error: ") and error.count("\n") == 1 and str(path) in error
    assert {"missing": "no such directory", "file": "not a directory", "empty": "no config.json"}[problem] in error


def test_serve_refuses_a_busy_port_before_loading(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "config.json").write_text("{}")  # would fail to load: the port must be checked first
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        assert main(["serve", str(tmp_path), "--port", str(port)]) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"localoai: error: cannot listen on 127.0.0.1:{port}") and error.count("\n") == 1


def test_serve_refuses_a_directory_that_holds_no_loadable_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "config.json").write_text('{"model_type": "no-such-architecture"}')
    assert main(["serve", str(tmp_path), "--port", "0"]) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"localoai: error: {tmp_path}: could not load a model") and error.count("\n") == 1


def test_device_and_dtype_choices() -> None:
    import torch

    assert pick_device("cpu") == "cpu" and pick_device("cuda:1") == "cuda:1"
    assert pick_device("auto") == ("cuda" if torch.cuda.is_available() else pick_device("auto"))
    assert pick_dtype("auto", "cpu") is torch.float32 and pick_dtype("bfloat16", "cpu") is torch.bfloat16


def test_serve_runs_a_model_directory_with_its_options(tmp_path: Path, tiny: tuple[Any, Any]) -> None:
    """The real command in its own process: options, the start message, an access log line, Ctrl+C."""
    import signal

    model, tokenizer = tiny
    model.save_pretrained(tmp_path / "tiny-model")
    tokenizer.save_pretrained(tmp_path / "tiny-model")
    process = subprocess.Popen(
        [sys.executable, "-m", "localoai", "serve", str(tmp_path / "tiny-model"), "--port", "0", "--device", "cpu",
         "--dtype", "float32", "--store", ":memory:", "--max-batch-size", "2", "--reasoning-parser", "none",
         "--log-level", "info"],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True)
    try:
        lines: list[str] = []
        assert process.stdout is not None
        while not any("Ctrl+C to stop" in line for line in lines):
            line = process.stdout.readline()
            assert line, "".join(lines)
            lines.append(line)
        text = "".join(lines)
        assert "serving 'tiny-model' on cpu (float32)" in text and "store: :memory:" in text, text
        url = re.search(r"inspector: (http://\S+)/ui/", text).group(1)  # type: ignore[union-attr]
        import httpx

        assert httpx.get(f"{url}/health").status_code == 200
        process.send_signal(signal.SIGINT)
        rest = process.communicate(timeout=60)[0]
        assert process.returncode == 0, rest
        assert re.search(r"localoai\.access: \S+ GET /health 200 [\d.]+ ms", rest), rest
        assert "Traceback" not in rest, rest
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_stop_with_a_stream_in_flight_ends_it_cleanly(tiny: tuple[Any, Any], caplog: pytest.LogCaptureFixture) -> None:
    """The client gets an error event, then the stream's end (no connection error); nothing logs a traceback."""
    import threading

    import openai

    from localoai.testing import running_server

    caplog.set_level(logging.DEBUG)
    model, tokenizer = tiny
    outcome: dict[str, Any] = {}
    started = threading.Event()
    with running_server(model, tokenizer, name="stopping", reasoning_parser="none") as server:
        client = server.client(max_retries=0)

        def read() -> None:
            chunks = 0
            try:
                for _ in client.chat.completions.create(model=server.model, messages=[{"role": "user", "content": "go"}],
                                                        max_tokens=server.served.context_length - 64, stream=True,
                                                        temperature=1.0):
                    chunks += 1
                    started.set()
            except Exception as exc:  # noqa: BLE001 (what the client sees is the point)
                outcome["error"] = exc
            outcome["chunks"] = chunks
            started.set()

        reader = threading.Thread(target=read)
        reader.start()
        assert started.wait(120)
        server.stop()
        reader.join(60)
    assert outcome["chunks"] > 0
    error = outcome.get("error")
    assert isinstance(error, openai.APIError) and not isinstance(error, openai.APIConnectionError), repr(error)
    assert "server stopped" in str(error)
    noisy = [r for r in caplog.records if r.exc_info or "CancelledError" in r.getMessage()]
    assert not noisy, [r.getMessage() for r in noisy]
