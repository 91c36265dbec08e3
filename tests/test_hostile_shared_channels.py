"""Hostile probes of channels kept on the shared PostgreSQL store (one lease per channel):
the database going away under a server (a statement, a stop), hostile vouchers through HTTP."""
from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from agent_pay.assembly.channels import ChannelOptions
from agent_pay.errors import Reason
from agent_pay.store.postgres.channels import PostgresChannelStore
from agent_pay.store.postgres.connection import Pool
from agent_pay.testing import Testbed
from tests.test_channel_leases import CONTRACT, STATE
from tests.test_e2e_channel import CATALOGUE


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


def test_a_statement_with_the_store_gone_is_a_503(pool: Pool) -> None:
    """`GET /channels/{id}` for a channel not held here reads the store: with the database
    away, that is a 503 `ledger_unavailable` (unknown), not a 500 nor a 404."""
    options = ChannelOptions(
        settle_every_seconds=3600,
        shared_store=lambda contract: PostgresChannelStore(pool, "a", contract),
    )
    bed = Testbed.create(articles=CATALOGUE, schemes=("exact", "channel"), channel_options=options)
    try:
        with bed.client(bed.agent(funds={"USDX": "1"}, tokens=["USDX"])) as http:
            assert http.get("/channels/0x" + os.urandom(32).hex()).status_code == 404
            pool.close()  # the database goes away
            answer = http.get("/channels/0x" + os.urandom(32).hex())
        assert answer.status_code == 503, answer.text
        assert answer.json()["error"] == Reason.LEDGER_UNAVAILABLE
    finally:
        bed.close()
