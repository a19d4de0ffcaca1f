"""The inspector in a real browser: JupyterLab on localhost, Debian's Chromium driven by Playwright.

A notebook starts a server on the trained tool caller, makes a tool-calling chat exchange and a
Responses call, shows `server.inspect()`, then makes one more request. Through the browser we
check that the list shows the generations (the last one arriving live), that clicking the
tool-calling one opens its episode view with the call's name and arguments, and save a
screenshot to `test-artifacts/inspector.png`.

Skipped (with the reason) when Chromium, Playwright or JupyterLab is missing; `.ci/run` installs
all three. Playwright's own browser downloads are never used: it drives `/usr/bin/chromium`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TOKEN = "localoai-browser-test"
WAIT_MS = 240_000  # generous: this runs on shared CI machines; a healthy run takes seconds per step

NOTEBOOK_CELLS = [
    """import torch

import localoai
from localoai.testing.trained import QUESTION, TOOL_RESULT, WEATHER_TOOL, train_tool_caller

torch.set_num_threads(1)  # a tiny model: threads only cost time on a busy CI machine
model, tokenizer = train_tool_caller()
server = localoai.start(model, tokenizer, name="agent", store=":memory:", port=0)
client = server.client(max_retries=0)
messages = [{"role": "user", "content": QUESTION}]
turn = client.chat.completions.create(model="agent", messages=messages, tools=[WEATHER_TOOL], temperature=0,
                                      logprobs=True, top_logprobs=3)
call = turn.choices[0].message.tool_calls[0]
messages += [turn.choices[0].message.model_dump(exclude_none=True),
             {"role": "tool", "tool_call_id": call.id, "content": TOOL_RESULT}]
answer = client.chat.completions.create(model="agent", messages=messages, tools=[WEATHER_TOOL], temperature=0)
hello = client.responses.create(model="agent", input="Hello", max_output_tokens=4)
print("READY", call.function.name, call.function.arguments)""",
    "server.inspect()",
    # After the inspector is shown: it must pick this up live, from its poller thread.
    'late = client.completions.create(model="agent", prompt="late", max_tokens=2)',
]


def _requirements() -> str | None:
    if not CHROMIUM.exists():
        return f"Chromium is not installed at {CHROMIUM} (apt-get install chromium; .ci/run does)"
    for module, package in (("playwright.sync_api", "playwright"), ("jupyterlab", "jupyterlab"),
                            ("ipywidgets", "ipywidgets")):
        try:
            __import__(module)
        except ImportError:
            return f"{package} is not installed (pip install -e '.[test]')"
    return None


pytestmark = pytest.mark.skipif(_requirements() is not None, reason=_requirements() or "")


@pytest.fixture
def jupyterlab(tmp_path: Path) -> Iterator[str]:
    """JupyterLab on 127.0.0.1 (any free port, token auth, no browser) serving `tmp_path`; its URL."""
    notebook = {
        "cells": [{"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [], "source": source}
                  for source in NOTEBOOK_CELLS],
        "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}},
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    (tmp_path / "inspect.ipynb").write_text(json.dumps(notebook))
    runtime = tmp_path / ".runtime"
    # No "get notified about Jupyter news?" pop-up over the screenshot.
    (tmp_path / ".config" / "labconfig").mkdir(parents=True)
    (tmp_path / ".config" / "labconfig" / "page_config.json").write_text(
        json.dumps({"disabledExtensions": {"@jupyterlab/apputils-extension:announcements": True}}))
    env = {
        **os.environ,
        "JUPYTER_RUNTIME_DIR": str(runtime),
        "JUPYTER_CONFIG_DIR": str(tmp_path / ".config"),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    }
    command = [
        sys.executable, "-m", "jupyter", "lab", "--no-browser", "--allow-root",
        "--ServerApp.ip=127.0.0.1", "--ServerApp.port=0", f"--IdentityProvider.token={TOKEN}",
        f"--ServerApp.root_dir={tmp_path}", "--LabApp.expose_app_in_browser=True",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate", "--LabApp.extension_manager=readonly",
    ]
    log = open(tmp_path / "jupyterlab.log", "w")  # noqa: SIM115 (closed below)
    process = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + WAIT_MS / 1000
        while not list(runtime.glob("jpserver-*.json")):  # written once the server listens
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"JupyterLab did not start:\n{(tmp_path / 'jupyterlab.log').read_text()[-3000:]}")
            time.sleep(0.2)
        info = json.loads(next(runtime.glob("jpserver-*.json")).read_text())
        yield f"http://127.0.0.1:{info['port']}"
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def test_inspector_lists_responses_and_opens_the_tool_call(jupyterlab: str, tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(WAIT_MS)
            page.goto(f"{jupyterlab}/lab/tree/inspect.ipynb?reset&token={TOKEN}")
            page.wait_for_function("window.jupyterapp && window.jupyterapp.shell.currentWidget"
                                   " && window.jupyterapp.shell.currentWidget.sessionContext"
                                   " && window.jupyterapp.shell.currentWidget.sessionContext.session"
                                   " && window.jupyterapp.shell.currentWidget.sessionContext.session.kernel")
            page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")

            inspector = page.locator(".localoai-inspector")
            try:
                expect(inspector).to_be_visible()
            except AssertionError:
                page.screenshot(path=str(ARTIFACTS / "inspector-failed.png"), full_page=True)
                raise
            listing = inspector.locator(".localoai-list select option")
            # Two chat completions and a response, then (live) the completion made after the display.
            expect(listing).to_have_count(4)
            labels = listing.all_inner_texts()
            assert "completions" in labels[0] and "responses" in labels[1], labels
            assert all("chat" in label for label in labels[2:]), labels

            listing.filter(has_text="get_weather").click()
            episode = inspector.locator(".loai .call")
            expect(episode).to_contain_text("get_weather")
            expect(episode).to_contain_text('"city": "paris"')
            expect(inspector.locator(".loai .turn.user").first).to_contain_text("What is the weather in paris?")

            page.screenshot(path=str(ARTIFACTS / "inspector.png"), full_page=True)
            inspector.locator(".lm-TabBar-tab", has_text="Tokens").click()
            expect(inspector.locator(".loai .tok").first).to_be_visible()
            page.screenshot(path=str(ARTIFACTS / "inspector-tokens.png"), full_page=True)
        finally:
            browser.close()
    assert (ARTIFACTS / "inspector.png").stat().st_size > 0
    shutil.copy(ARTIFACTS / "inspector.png", tmp_path / "inspector.png")
