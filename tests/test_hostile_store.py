"""Hostile setups of the server's PostgreSQL store: malformed store URLs, a database that is not
there at start, and one that goes away while serving. Each is a clear message (never a
traceback, never the password), and a paid read the store cannot record is a 503 with
Retry-After that charges nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent_pay.cli import main
from agent_pay.store.postgres.connection import redact

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
