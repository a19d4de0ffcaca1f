"""Shared fixtures (a tiny model, a live server on it, one on the scripted engine; real HTTP all the
way) and each test module's concern, as a marker.

Concerns: `unit` (no server), `app` (the real server on `ScriptedEngine`: protocol, envelopes,
framing), `contract` (real clients on a real tiny model), `engine` (the local engine's scheduling,
sampling, caching), `lifecycle` (start, stop, threads, resources), and `slow` (notebooks, the browser,
soak, crash, real CLIs, long fuzz, first use from a clone): `python -m pytest` leaves `slow` out
(`-m "not slow"` in pyproject's addopts); `python -m pytest -m ""` runs everything, as CI does.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

SHARED_FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures"

CONCERNS: dict[str, tuple[str, ...]] = {
    "unit": ("test_protocol", "test_sampler", "test_text", "test_stream", "test_structured_sampler",
             "test_tool_parsers", "test_tool_parsers_formats", "test_reasoning_parsers", "test_widgets_format",
             "test_store", "test_conformance", "test_architecture", "test_vllm_outputs"),
    "engine": ("test_batching", "test_prefix_cache", "test_pause", "test_scoring", "test_embeddings"),
    "lifecycle": ("test_lifecycle", "test_resources", "test_responses_shutdown", "test_hostile"),
    "slow": ("test_notebooks", "test_inspector_browser", "test_soak", "test_crash", "test_claude_code",
             "test_codex_cli", "test_first_use", "test_fuzz", "test_rl_loop"),
}
"""Test modules by concern. In any other module, a test on the scripted engine (the `scripted_server`
fixture, or a server built on `ScriptedEngine`) is an `app` test, any other a `contract` test."""
SLOW_TESTS = (  # a minute or more each on a loaded 2-core machine: a subprocess serving, a kernel, many servers
    "test_lifecycle.py::test_demo_runs", "test_lifecycle.py::test_cli_serves_a_local_directory",
    "test_lifecycle.py::test_gc_freeze_holds_while_servers_run_and_thaws_after_the_last",
    "test_resources.py::test_connections_past_the_cap_are_refused_with_a_503",
)
"""Tests also marked `slow` in a module of another concern."""
_CONCERN_OF = {module: concern for concern, modules in CONCERNS.items() for module in modules}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        module = item.module.__name__.rpartition(".")[2] if item.module is not None else ""
        fixtures = getattr(item, "fixturenames", ())
        scripted = module == "test_scripted_engine" or (
            "scripted_server" in fixtures and "model_server" not in fixtures)
        item.add_marker(_CONCERN_OF.get(module, "app" if scripted else "contract"))
        if item.nodeid.partition("/")[2].startswith(SLOW_TESTS):
            item.add_marker("slow")


@pytest.fixture(scope="session")
def tiny() -> tuple[Any, Any]:
    from localoai.testing import build_tiny_model

    return build_tiny_model()


@pytest.fixture(scope="session")
def model_server(tiny: tuple[Any, Any]) -> Iterator[Any]:
    """The real server on the tiny model (random weights): what a capability's test runs on."""
    from localoai.testing import running_server

    model, tokenizer = tiny
    # Random weights sample the `<think>` token now and then: with the reasoning parser its template
    # selects, a few sampled outputs would turn into reasoning items, and the protocol tests on this
    # server would flake. Reasoning is tested on models trained to write it (tests/test_reasoning*.py).
    with running_server(model, tokenizer, name="tiny", reasoning_parser="none") as running:
        yield running


@pytest.fixture(scope="session")
def server(model_server: Any) -> Any:
    """The server a module's tests talk to: the real one, unless the module overrides it with the
    `scripted_server` (protocol tests, whose outcome must not hang on what random weights sample)."""
    return model_server


@pytest.fixture
def model_client(model_server: Any) -> openai.OpenAI:
    return model_server.client(max_retries=0)


@pytest.fixture(scope="session")
def scripted_server(tiny: tuple[Any, Any]) -> Iterator[Any]:
    """The real server on `ScriptedEngine`: ordinary tokens drawn as random weights would draw them
    (`random_words`: reproducible with a seed or greedy, never markup, never an end of sequence)."""
    from localoai.testing import ScriptedEngine, running_server

    model, tokenizer = tiny
    engine = ScriptedEngine(tokenizer, context_length=model.config.max_position_embeddings)
    with running_server(model, tokenizer, name="tiny", engine=engine) as running:
        yield running


@pytest.fixture
def client(server: Any) -> openai.OpenAI:
    return server.client(max_retries=0)


@pytest.fixture
def async_client(server: Any) -> openai.AsyncOpenAI:
    return server.async_client(max_retries=0)


@pytest.fixture(scope="session")
def shared_fixtures() -> Path:
    if not SHARED_FIXTURES.is_dir():
        pytest.skip(f"shared fixtures not present at {SHARED_FIXTURES}")
    return SHARED_FIXTURES


@pytest.fixture(scope="session")
def openapi(shared_fixtures: Path) -> Any:
    """OpenAI's OpenAPI description, to validate what the server sends (`localoai.testing.openapi`)."""
    from localoai.testing.openapi import OpenAPISchemas

    return OpenAPISchemas(shared_fixtures / "openapi" / "openai-openapi.yaml")
