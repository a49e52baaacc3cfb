"""Shared fixtures: a real scripted model server on loopback, real kernels, real journals."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from kernel_ext.scripted.server import ScriptedModelServer
from tests.harness import Kernel

API_KEY = "sk-durable-test-4f1c9e2a7b"  # searched for in journal bytes: it must never be there


@pytest.fixture(scope="session", autouse=True)
def _user_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    # This user's signing key and trusted list (kernel_ext/trust.py), for every process the tests start:
    # never the real one, and the same for the whole run.
    old = os.environ.get("DURABLE_HOME")
    os.environ["DURABLE_HOME"] = str(tmp_path_factory.mktemp("durable-home"))
    yield
    if old is None:
        os.environ.pop("DURABLE_HOME", None)
    else:
        os.environ["DURABLE_HOME"] = old


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
