"""Shared fixtures: one tiny model and one live server per session, real HTTP all the way."""

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


@pytest.fixture(scope="session")
def tiny() -> tuple[Any, Any]:
    from localoai.testing import build_tiny_model

    return build_tiny_model()


@pytest.fixture(scope="session")
def server(tiny: tuple[Any, Any]) -> Iterator[Any]:
    from localoai.testing import running_server

    model, tokenizer = tiny
    # Random weights sample the `<think>` token now and then: with the reasoning parser its template
    # selects, a few sampled outputs would turn into reasoning items, and the protocol tests on this
    # server would flake. Reasoning is tested on models trained to write it (tests/test_reasoning*.py).
    with running_server(model, tokenizer, name="tiny", reasoning_parser="none") as running:
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
