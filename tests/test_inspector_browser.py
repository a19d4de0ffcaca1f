"""The inspector in a real browser while a training cell keeps the kernel busy: JupyterLab on
localhost, Debian's Chromium driven by Playwright.

A notebook starts a server on the trained tool caller, makes a tool-calling chat exchange and a
Responses call, shows `server.inspect()` (the page the server serves at `/ui/`, in an iframe),
then runs a "training" cell that generates grouped rollouts, attaches rewards, bumps the policy
version and burns CPU until the test is done: the kernel is busy for the whole interaction. In
the browser we open the record clicked (by id), switch tabs, page, filter and open the plots;
each must show the record clicked, and we print how long each took (the issue asks for "within a
second"; we assert a generous bound, see `STEP_BOUND_S`, and record the times in
benchmarks/README.md). Screenshots go to `test-artifacts/` (the plots twice, updating live).

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
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TOKEN = "localoai-browser-test"
WAIT_MS = 240_000  # generous: this runs on shared CI machines; a healthy run takes seconds per step
STEP_BOUND_S = 5.0
"""Each interaction must show its view within this many seconds while the training cell runs. The
target is one second; on two shared CI cores busy with the kernel's training loop, JupyterLab and
Chromium, a hard one-second assert would flake, while the widget this replaces took minutes (until
the cell ended). The measured times are printed and recorded in benchmarks/README.md."""
STOP_FILE = "stop-training"

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
    "server.inspect(page_size=5)",
    # The training cell: busy until the test writes the stop file (or ten minutes pass).
    f"""import os, time

print("TRAINING")
deadline = time.monotonic() + 600
step = 0
while not os.path.exists({STOP_FILE!r}) and time.monotonic() < deadline:
    with server.group(2) as group:
        for i, episode in enumerate(group):  # one greedy rollout (it calls the tool), one sampled
            reply = episode.client(max_retries=0).chat.completions.create(
                model="agent", messages=[{{"role": "user", "content": QUESTION}}], tools=[WEATHER_TOOL],
                max_tokens=64, temperature=0.0 if i == 0 else 1.0)
            episode.reward = float(bool(reply.choices[0].message.tool_calls)) + 0.1 * (step % 3)
    weights = torch.randn(256, 256)
    for _ in range(20):  # the "optimizer step": the kernel's thread stays busy
        weights = torch.tanh(weights @ weights.T / 256)
    step += 1
    if step % 3 == 0:
        server.policy_version += 1
print("TRAINED", step)""",
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


@pytest.mark.timeout(900)
def test_inspector_stays_interactive_while_a_training_cell_runs(jupyterlab: str, tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    expect.set_options(timeout=WAIT_MS)  # waits, not bounds: the times are measured and checked below
    times: dict[str, float] = {}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1300})
        page.set_default_timeout(WAIT_MS)
        try:
            page.goto(f"{jupyterlab}/lab/tree/inspect.ipynb?reset&token={TOKEN}")
            kernel = "window.jupyterapp.shell.currentWidget.sessionContext.session.kernel"
            page.wait_for_function(f"window.jupyterapp && window.jupyterapp.shell.currentWidget"
                                   f" && window.jupyterapp.shell.currentWidget.sessionContext"
                                   f" && window.jupyterapp.shell.currentWidget.sessionContext.session && {kernel}")
            # Not awaited: the command's promise settles when every cell has run, and the last one runs on.
            page.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); }")
            expect(page.locator(".jp-OutputArea-output", has_text="TRAINING")).to_be_visible()

            def busy() -> None:  # the training cell holds the kernel for the whole interaction
                assert page.evaluate(f"{kernel}.status") == "busy"

            ui = page.frame_locator("iframe.localoai-ui")
            view = ui.locator("#view")

            def timed(name: str, action: Callable[[], None], shown: Callable[[], None]) -> None:
                busy()
                started = time.monotonic()
                action()
                shown()
                times[name] = time.monotonic() - started
                busy()

            def opened(record_id: str, tab: str) -> Callable[[], None]:
                def check() -> None:
                    expect(view).to_have_attribute("data-record", record_id)
                    expect(view).to_have_attribute("data-tab", tab)
                    expect(ui.locator("#shown-id")).to_have_text(record_id)
                    # Its row is highlighted while it is on the page (new records push it to later pages).
                    expect(ui.locator(f'#list tr.row:not(.selected)[data-id="{record_id}"]')).to_have_count(0)
                    expect(ui.locator(f'#list tr.row.selected:not([data-id="{record_id}"])')).to_have_count(0)
                return check

            # The list follows the training cell's requests (page size 5: several pages soon).
            expect(ui.locator("#heading")).to_contain_text("page 1 of ")
            expect(ui.locator("#older")).to_be_enabled()

            # Open a tool-calling generation by clicking its row; the view is the one clicked.
            # A row whose model called the tool (its markup parsed), not one that merely mentions it.
            calling = ui.locator("#list tr.row", has=ui.locator("td.tools", has_text="get_weather"))
            clicked = calling.first.get_attribute("data-id") or ""
            row = ui.locator(f'#list tr.row[data-id="{clicked}"]')  # by id: the live list moves under us
            timed("open a record", row.click, opened(clicked, "episode"))
            expect(view.locator(".loai .call").first).to_contain_text("get_weather")

            tokens = ui.locator("#tabs button", has_text="Tokens")
            timed("switch to Tokens", tokens.click, opened(clicked, "tokens"))
            expect(view.locator(".loai .tok").first).to_be_visible()
            raw = ui.locator("#tabs button", has_text="Raw")
            timed("switch to Raw", raw.click, opened(clicked, "raw"))
            expect(view).to_contain_text("rendered prompt")

            heading = ui.locator("#heading")
            timed("page to older", ui.locator("#older").click, lambda: expect(heading).to_contain_text("page 2 of "))
            timed("page to newer", ui.locator("#newer").click, lambda: expect(heading).to_contain_text("page 1 of "))

            def filtered() -> None:
                expect(ui.locator("#list tr.row").first).to_be_visible()
                expect(ui.locator("#list tr.row td.endpoint", has_not_text="responses")).to_have_count(0)

            timed("filter by endpoint", lambda: ui.locator("#kind").select_option("response"), filtered)
            hello_id = ui.locator("#list tr.row").first.get_attribute("data-id") or ""
            assert hello_id.startswith("resp_"), hello_id
            hello = ui.locator(f'#list tr.row[data-id="{hello_id}"]')
            timed("open a filtered record", hello.click, opened(hello_id, "raw"))
            ui.locator("#kind").select_option("")

            plots = ui.locator("#tabs button", has_text="Plots")
            timed("open the plots", plots.click, lambda: expect(view.locator("svg.loai-plot")).to_have_count(7))
            expect(view.locator("svg.loai-plot", has_text="Reward by policy version").locator("circle").first).to_be_attached()
            page.locator("iframe.localoai-ui").screenshot(path=str(ARTIFACTS / "inspector-plots.png"))
            first = view.inner_html()
            frame = page.frame(url=lambda url: "/ui/" in url)  # another origin: reached as a frame, not via the DOM
            assert frame is not None
            frame.wait_for_function(  # live: the plots change as the training cell writes
                "(old) => document.getElementById('view').innerHTML !== old", arg=first)
            page.locator("iframe.localoai-ui").screenshot(path=str(ARTIFACTS / "inspector-plots-later.png"))
            busy()
            page.screenshot(path=str(ARTIFACTS / "inspector.png"), full_page=True)
        except BaseException:
            page.screenshot(path=str(ARTIFACTS / "inspector-failed.png"), full_page=True)
            frame = page.frame(url=lambda url: "/ui/" in url)
            if frame is not None:
                (ARTIFACTS / "inspector-failed.html").write_text(frame.content())
            raise
        finally:
            (tmp_path / STOP_FILE).write_text("done")
            browser.close()
    report = ", ".join(f"{name} {seconds:.2f} s" for name, seconds in times.items())
    print(f"\ninspector with a busy kernel: {report}")
    (ARTIFACTS / "inspector-times.json").write_text(json.dumps(times, indent=2))
    slow = {name: seconds for name, seconds in times.items() if seconds > STEP_BOUND_S}
    assert not slow, f"views slower than {STEP_BOUND_S} s while the kernel was busy: {slow}"
    assert (ARTIFACTS / "inspector-plots.png").stat().st_size > 0
    shutil.copy(ARTIFACTS / "inspector-plots.png", tmp_path / "inspector-plots.png")
