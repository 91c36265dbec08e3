"""Hostile setups of the server's PostgreSQL store: malformed store URLs, a database that is not
there at start, and one that goes away while serving. Each is a clear message (never a
traceback, never the password), and a paid read the store cannot record is a 503 with
Retry-After that charges nothing."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from agent_pay.cli import main
from agent_pay.errors import ConfigurationError, Reason
from agent_pay.serving import serve_app
from agent_pay.store.local_postgres import PostgresNotFoundError, local_postgres, stopped
from agent_pay.store.open import open_store
from agent_pay.store.postgres.connection import redact
from agent_pay.store.protocols import PaymentLedger
from agent_pay.testing import Testbed

SECRET = "hunter2"


@pytest.mark.parametrize(
    "url",
    [
        f"postgresql://agent:{SECRET}@127.0.0.1:1/x",
        f"postgresql://agent@127.0.0.1:1/x?password={SECRET}",
        f"postgresql://agent@127.0.0.1:1/x?sslmode=disable&password={SECRET}",
        f"postgresql://agent@127.0.0.1:1/x?PASSWORD={SECRET}",
        f"postgresql://agent:{SECRET}@127.0.0.1:99999/x",
        f"postgresql://agent:{SECRET}@h1:1,h2:2/x",
        f"postgresql://agent:{SECRET}@[::1/x",
        f"postgresql://agent:{SECRET}@[::1]:5432/x",
    ],
)
def test_a_redacted_url_never_shows_the_password(url: str) -> None:
    redacted = redact(url)
    assert SECRET not in redacted
    assert redacted.startswith("postgresql://agent")


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://",
        "postgresql://agent@127.0.0.1:1/x",
        "postgresql://agent@[::1/x",
        f"postgresql://agent:{SECRET}@[::1/x",
        f"postgresql://agent:{SECRET}@127.0.0.1:99999/x",
        f"postgresql://agent:{SECRET}@127.0.0.1:1,127.0.0.1:2/x",
        f"postgresql://agent@127.0.0.1:1/x?password={SECRET}",
        "postgresql://agent@127.0.0.1:1/x?sslmode=bogus",
        "postgres://%zz@127.0.0.1:1/x",
        "postgresql://agent@nonexistent.invalid/x",
    ],
)
def test_a_store_that_cannot_be_opened_is_a_clear_message(
    url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["serve", "--server-dir", str(tmp_path), "--port", "1", "--store", url])
    err = capsys.readouterr().err
    assert code in (1, 2)
    assert "agent-pay serve: cannot open the store postgres" in err
    assert "Traceback" not in err
    assert SECRET not in err


@pytest.fixture
def own_postgres() -> Iterator[str]:
    """A PostgreSQL of this test's own (it is stopped and started again: not the session's)."""
    try:
        server = local_postgres()
        url = server.__enter__()
    except PostgresNotFoundError as exc:
        pytest.skip(str(exc))
    try:
        yield url
    finally:
        server.__exit__(None, None, None)


@pytest.mark.slow
def test_postgresql_stopped_while_serving_is_a_503_that_charges_nothing(
    own_postgres: str, tmp_path: Path
) -> None:
    store = open_store(own_postgres, tmp_path)
    bed = Testbed.create(ledger=store.ledger)
    agent = bed.agent(funds={"USDX": "5"}, tokens=["USDX"])
    first, second = [article for article in bed.catalogue if "USDX" in article.prices][:2]
    price = int(second.prices["USDX"] * 10**6)  # USDX has 6 decimals
    try:
        with (
            serve_app(bed.app) as url,
            httpx.Client(base_url=url, timeout=30) as anonymous,
            httpx.Client(base_url=url, auth=agent.auth, timeout=30) as http,
        ):
            assert http.get(f"/articles/{first.slug}").status_code == 200
            paid = bed.balance(agent.address)
            with stopped(own_postgres):
                preview = anonymous.get(f"/articles/{second.slug}")
                assert (preview.status_code, preview.json()["complete"]) == (402, False)
                refused = http.get(f"/articles/{second.slug}")
                assert refused.status_code == 503, refused.text
                assert refused.json()["error"] == Reason.LEDGER_UNAVAILABLE
                assert "Retry-After" in refused.headers
                again = http.get(f"/articles/{first.slug}")  # a re-read of what was paid
                assert again.status_code in (200, 503), again.text
                assert again.status_code == 200 or "Retry-After" in again.headers
                assert bed.balance(agent.address) == paid  # nothing charged
            back = http.get(f"/articles/{second.slug}")
            for _ in range(10):  # the pool reconnects in its own time
                if back.status_code != 503:
                    break
                time.sleep(0.5)
                back = http.get(f"/articles/{second.slug}")
            assert back.status_code == 200, back.text
            assert back.json()["complete"] is True
        assert bed.balance(agent.address) == paid - price  # charged once, for the one read
    finally:
        store.close()
        bed.close()


class StopsAtSettled:
    """A ledger whose database stops just as a settlement is to be recorded (after the
    transfer went to the chain)."""

    def __init__(self, ledger: PaymentLedger, url: str) -> None:
        self._ledger, self._url = ledger, url
        self.outage: AbstractContextManager[None] | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ledger, name)

    def settled(self, *args: Any, **kwargs: Any) -> Any:
        if self.outage is None:
            self.outage = stopped(self._url)
            self.outage.__enter__()
        return self._ledger.settled(*args, **kwargs)


@pytest.mark.slow
def test_postgresql_stopping_after_the_transfer_loses_no_payment_and_doubles_none(
    own_postgres: str, tmp_path: Path
) -> None:
    store = open_store(own_postgres, tmp_path)
    ledger = StopsAtSettled(store.ledger, own_postgres)
    bed = Testbed.create(ledger=ledger)
    agent = bed.agent(funds={"USDX": "5"}, tokens=["USDX"])
    article = next(article for article in bed.catalogue if "USDX" in article.prices)
    price = int(article.prices["USDX"] * 10**6)
    before = bed.balance(agent.address)
    try:
        with (
            serve_app(bed.app) as url,
            httpx.Client(base_url=url, auth=agent.auth, timeout=30) as http,
        ):
            during = http.get(f"/articles/{article.slug}")
            assert during.status_code in (200, 503), during.text
            assert ledger.outage is not None
            ledger.outage.__exit__(None, None, None)
            after = http.get(f"/articles/{article.slug}")
            for _ in range(10):  # the pool reconnects in its own time
                if after.status_code != 503:
                    break
                time.sleep(0.5)
                after = http.get(f"/articles/{article.slug}")
            assert after.status_code == 200, after.text
            assert after.json()["complete"] is True
        assert bed.balance(agent.address) == before - price  # paid once, not twice, not lost
    finally:
        store.close()
        bed.close()


@pytest.mark.slow
def test_a_schema_newer_than_this_code_is_refused_at_start(
    postgres_url: str, tmp_path: Path
) -> None:
    open_store(postgres_url, tmp_path).close()  # migrated
    with psycopg.connect(postgres_url, autocommit=True) as connection:
        connection.execute("INSERT INTO schema_version (version) VALUES (999)")
    with pytest.raises(ConfigurationError, match="schema version 999"):
        open_store(postgres_url, tmp_path)


@pytest.mark.slow
def test_serve_on_a_malformed_postgresql_url_exits_with_a_message(tmp_path: Path) -> None:
    url = f"postgresql://agent:{SECRET}@[::1/agent_pay"  # the bracket never closes
    done = subprocess.run(  # noqa: S603 - our own CLI
        [sys.executable, "-m", "agent_pay.cli", "serve", "--store", url, "--port", "1"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "AGENT_PAY_HOME": str(tmp_path)},
        check=False,
    )
    assert done.returncode in (1, 2)
    assert "cannot open the store postgresql://agent:***@[::1/agent_pay" in done.stderr
    assert "Traceback" not in done.stderr
    assert SECRET not in done.stderr + done.stdout


@contextmanager
def frozen(url: str) -> Iterator[None]:
    """PostgreSQL at `url` stopped dead (SIGSTOP: its sockets open, nothing answered) until
    the block exits: a database that hangs rather than goes away."""
    with psycopg.connect(url) as connection:
        row = connection.execute("SHOW data_directory").fetchone()
    assert row is not None
    postmaster = (Path(row[0]) / "postmaster.pid").read_text().split()[0]
    stopped = [int(postmaster)]
    try:
        os.kill(int(postmaster), signal.SIGSTOP)  # first: it starts no child after this
        for pid in os.listdir("/proc"):
            if pid.isdigit() and _parent(pid) == postmaster:
                # A child on its way out (our own connection's backend) may be gone by now.
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGSTOP)
                    stopped.append(int(pid))
        yield
    finally:
        for pid in stopped:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


def _parent(pid: str) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1]
    except (OSError, IndexError):
        return None


@pytest.mark.slow
def test_postgresql_that_hangs_is_a_503_in_bounded_time(own_postgres: str, tmp_path: Path) -> None:
    store = open_store(own_postgres, tmp_path)
    bed = Testbed.create(ledger=store.ledger)
    agent = bed.agent(funds={"USDX": "5"}, tokens=["USDX"])
    first, second = [article for article in bed.catalogue if "USDX" in article.prices][:2]
    try:
        with (
            serve_app(bed.app) as url,
            httpx.Client(base_url=url, auth=agent.auth, timeout=10) as http,
        ):
            assert http.get(f"/articles/{first.slug}").status_code == 200
            paid = bed.balance(agent.address)
            with frozen(own_postgres):
                started = time.monotonic()
                response = http.get(f"/articles/{second.slug}")  # ReadTimeout after 10 s
                took = time.monotonic() - started
            assert response.status_code == 503, response.text
            assert response.headers.get("retry-after")
            assert response.json()["error"] == Reason.LEDGER_UNAVAILABLE
            assert took < 8  # the store's deadline (5 s), not the client's timeout
            assert bed.balance(agent.address) == paid
            # Once the database answers again, so does the server, and the read is paid once.
            again = http.get(f"/articles/{second.slug}")
            assert again.status_code == 200, again.text
            assert bed.balance(agent.address) == paid - int(second.prices["USDX"] * 10**6)
    finally:
        store.close()
        bed.close()
