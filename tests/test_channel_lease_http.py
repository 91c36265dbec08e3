"""A content server on the shared store, through HTTP: a voucher for a channel another live
instance holds and does not hand over is answered 503 `channel_busy` with Retry-After (never a
500, nothing accepted), and once that instance lets the lease go the payer reads on."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from agent_pay.assembly.channels import ChannelOptions
from agent_pay.client.channels import ChannelPolicy
from agent_pay.errors import Reason
from agent_pay.store.postgres.channels import PostgresChannelStore
from agent_pay.store.postgres.connection import Pool
from agent_pay.testing import Testbed
from tests.test_e2e_channel import CATALOGUE


@pytest.fixture
def pool(postgres_url: str) -> Iterator[Pool]:
    opened = Pool(postgres_url)
    yield opened
    opened.close()


def test_a_channel_held_elsewhere_is_a_503_then_reads_on(pool: Pool) -> None:
    options = ChannelOptions(
        settle_every_seconds=3600,
        shared_store=lambda contract: PostgresChannelStore(pool, "a", contract, handoff_wait=0.2),
    )
    bed = Testbed.create(articles=CATALOGUE, schemes=("exact", "channel"), channel_options=options)
    try:
        handler = bed.channels
        assert handler is not None
        agent = bed.agent(
            funds={"USDX": "5"},
            tokens=["USDX"],
            channel_policy=ChannelPolicy(min_expected_reads=1, deposit_reads=20),
        )
        with bed.client(agent) as http:
            assert http.get("/articles/note-001").status_code == 200  # opened here
        assert agent.channels is not None
        (record,) = agent.channels.channels()
        channel = bytes.fromhex(record.channel_id[2:])
        other = PostgresChannelStore(pool, "b", handler.manager.address)  # never checkpoints
        taken = other.acquire(channel, lambda: handler.manager.channel(channel), None)
        assert taken is not None
        assert taken.served == 100_000
        assert handler.book.get(channel) is None
        with bed.client(agent) as http:
            busy = http.get("/articles/note-002")
        assert busy.status_code == 503
        assert busy.headers["Retry-After"] == "1"
        assert busy.json()["error"] == Reason.CHANNEL_BUSY
        other.close()  # the other instance stops: its lease is free at once
        with bed.client(agent) as http:
            assert http.get("/articles/note-002").status_code == 200
        statement = handler.statement(channel)
        assert statement is not None
        assert int(statement["served"]) == 2 * 100_000
    finally:
        bed.close()
