"""Fixtures shared by the test suite."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator

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
