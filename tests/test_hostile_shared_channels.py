"""Hostile probes of channels kept on the shared PostgreSQL store (one lease per channel),
through HTTP and through the content server's seam."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from agent_pay.store.postgres.channels import PostgresChannelStore
from agent_pay.store.postgres.connection import Pool
from tests.test_channel_leases import CONTRACT, STATE


@pytest.fixture
def pool(postgres_url: str) -> Iterator[Pool]:
    opened = Pool(postgres_url, timeout=1.0)
    yield opened
    opened.close()


def test_closing_with_the_store_gone_lets_go_without_raising(
    pool: Pool, caplog: pytest.LogCaptureFixture
) -> None:
    """A server stopped while its database is away: the channel store cannot write its last
    checkpoint nor release its leases (they expire on their own), says so, and the stop goes
    on (the ledger closed, the server's exit clean) instead of a traceback."""
    store = PostgresChannelStore(pool, "a", CONTRACT)
    held = store.acquire(os.urandom(32), lambda: STATE, None)
    assert held is not None
    pool.close()  # the database goes away
    store.close()
    assert not store.holds(held.channel_id)
    assert held.lease_until == 0.0  # accepts nothing more
    assert "could not write 1 channel(s) nor release their leases" in caplog.text
