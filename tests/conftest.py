"""Fixtures shared by the test suite."""

from __future__ import annotations

import atexit
import multiprocessing.process
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Generator, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from hypothesis import settings

from agent_pay.node.anvil import AnvilNotFoundError, find_anvil, run_anvil

# Property tests draw the same examples on every run, so that a run (CI's above all) passes or
# fails on the code, not on the draw. `HYPOTHESIS_PROFILE=explore pytest` searches afresh.
settings.register_profile("repeatable", derandomize=True, database=None)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "repeatable"))

# agent-pay keeps state in a per-user home (the platform's data directory unless AGENT_PAY_HOME
# says otherwise). No test may write into the real one, not even a child process started with
# AGENT_PAY_* stripped from its environment: point the platform's data directory elsewhere.
_TEST_DATA_HOME = tempfile.mkdtemp(prefix="agent-pay-tests-")
atexit.register(shutil.rmtree, _TEST_DATA_HOME, ignore_errors=True)
os.environ["XDG_DATA_HOME"] = _TEST_DATA_HOME
os.environ.pop("AGENT_PAY_HOME", None)


# -- the quick loop: `pytest -m "not slow"` -------------------------------------------------------
# Every test that starts a process (a subprocess, a multiprocessing child, anvil, node, npm) is
# marked slow; one that starts a process unmarked fails, so the quick loop stays quick.


_SERVER_FIXTURES = frozenset({"anvil_url", "postgres_server", "postgres_url"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test on anvil (the `anvil_url` fixture) or on PostgreSQL (`postgres_server`,
    `postgres_url`, or a backend parameter "postgres") is slow: each is a process."""
    for item in items:
        callspec = getattr(item, "callspec", None)
        on_postgres = callspec is not None and "postgres" in callspec.params.values()
        if on_postgres or _SERVER_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@contextmanager
def _no_processes_unless_slow(item: pytest.Item) -> Iterator[None]:
    if item.get_closest_marker("slow") is not None:
        yield
        return

    def refuse(*args: Any, **kwargs: Any) -> None:
        pytest.fail(f"{item.nodeid} starts a process: mark it @pytest.mark.slow", pytrace=False)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(subprocess.Popen, "__init__", refuse)
        patch.setattr(multiprocessing.process.BaseProcess, "start", refuse)
        patch.setattr(os, "fork", refuse)
        yield


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Generator[None, object, object]:
    with _no_processes_unless_slow(item):  # module fixtures start here too
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, object, object]:
    with _no_processes_unless_slow(item):
        return (yield)


# -- fixtures ------------------------------------------------------------------------------------


@pytest.fixture
def channel_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    """The channel scheme as an installation that lacks one of its modules sees it."""
    from agent_pay.bench import schemes

    missing = (*schemes._CHANNEL_MODULES, "agent_pay.no_such_module")
    monkeypatch.setattr(schemes, "_CHANNEL_MODULES", missing)


@pytest.fixture
def anyio_backend() -> str:
    """Async tests (`@pytest.mark.anyio`) run on asyncio only."""
    return "asyncio"


def _require_anvil() -> None:
    """Skip when anvil is not installed, unless under CI, where a missing anvil is a failure."""
    try:
        find_anvil(environ=os.environ)
    except AnvilNotFoundError as exc:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true and {exc}", pytrace=False)
        pytest.skip(f"{exc} (under CI=true this is a failure)")


@pytest.fixture(scope="module")
def anvil_url() -> Iterator[str]:
    """A fresh anvil for the test module (automine, chain id 31337, the public dev accounts)."""
    _require_anvil()
    with run_anvil(binary=find_anvil(environ=os.environ)) as url:
        yield url


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """A real PostgreSQL for the session (see `agent_pay.store.local_postgres`): the URL of
    its maintenance database. Skipped where PostgreSQL is not installed, except under CI."""
    from agent_pay.store.local_postgres import PostgresNotFoundError, local_postgres

    try:
        server = local_postgres()
        url = server.__enter__()
    except PostgresNotFoundError as exc:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true and {exc}", pytrace=False)
        pytest.skip(f"{exc} (scripts/test installs it; under CI=true this is a failure)")
    try:
        yield url
    finally:
        server.__exit__(None, None, None)


@pytest.fixture
def postgres_url(postgres_server: str) -> str:
    """A fresh, empty database on the session's PostgreSQL, for one test."""
    import psycopg

    name = f"t{uuid.uuid4().hex[:16]}"
    with psycopg.connect(postgres_server, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    return postgres_server.rsplit("/", 1)[0] + "/" + name
