"""Shared fixtures: a real scripted model server on loopback, real kernels, real journals."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from kernel_ext.scripted.server import ScriptedModelServer
from tests.harness import Kernel

API_KEY = "sk-durable-test-4f1c9e2a7b"  # searched for in journal bytes: it must never be there


@pytest.fixture
def model_server() -> Iterator[ScriptedModelServer]:
    with ScriptedModelServer() as server:
        yield server


@pytest.fixture
def kernel_env(model_server: ScriptedModelServer, tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        OPENAI_BASE_URL=model_server.base_url,
        OPENAI_API_KEY=API_KEY,
        DURABLE_JOURNAL=str(tmp_path / "journal.duckdb"),
    )
    return env


@pytest.fixture
def kernel(kernel_env: dict[str, str], tmp_path: Path) -> Iterator[Kernel]:
    k = Kernel(kernel_env, tmp_path)
    try:
        yield k
    finally:
        k.shutdown()
