"""Channel state on the shared PostgreSQL store, with leases (agent_pay.store.postgres.channels),
the store itself: a lease race has one winner; a stale holder's checkpoint is refused; a frozen
holder stops accepting when its lease runs out; a live holder hands a channel over on request;
paid reads are every instance's; an id no contract knows writes nothing; closing frees every
lease. (Two handlers on one store: tests/test_channel_lease_handlers.py.)"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from agent_pay.chain.channel import ChannelState, ChannelStatus
from agent_pay.errors import (
    Reason,
)
from agent_pay.facilitator.channel.book import ChannelAccount
from agent_pay.facilitator.channel.records import ChannelBusyError
from agent_pay.store.postgres.channels import PostgresChannelStore
from agent_pay.store.postgres.connection import Pool
from tests._channel_parts import PAYEE, PAYER, TOKEN, P

CONTRACT = "0x" + "44" * 20
STATE = ChannelState(PAYER, PAYEE, TOKEN, None, 10_000, 0, 0, ChannelStatus.OPEN)
NONE = ChannelState(
    "0x" + "00" * 20, "0x" + "00" * 20, "0x" + "00" * 20, None, 0, 0, 0, ChannelStatus.NONE
)


@pytest.fixture
def pool(postgres_url: str) -> Iterator[Pool]:
    opened = Pool(postgres_url, max_size=12)
    yield opened
    opened.close()


def _store(pool: Pool, me: str, **options: float) -> PostgresChannelStore:
    options.setdefault("flush_interval", 0.01)
    return PostgresChannelStore(pool, me, CONTRACT, **options)


def _leases(pool: Pool) -> list[tuple[str, str | None, int]]:
    return [
        (str(c), h, int(e))
        for c, h, e in pool.fetch("SELECT channel_id, holder, epoch FROM channel_leases")
    ]


def _pay(account: ChannelAccount, cumulative: int, resource: str = "/a") -> None:
    account.accept(cumulative, P, b"s" * 65, resource=resource, now=time.time(), replay_window=300)


# -- the store ---------------------------------------------------------------------------------


def test_a_lease_race_has_one_winner(pool: Pool) -> None:
    racers = [_store(pool, f"i{n}", handoff_wait=0.1) for n in range(6)]
    channel = os.urandom(32)
    barrier = threading.Barrier(len(racers))
    refusals: list[ChannelBusyError] = []

    def race(store: PostgresChannelStore) -> bool:
        barrier.wait()
        try:
            return store.acquire(channel, lambda: STATE, None) is not None
        except ChannelBusyError as exc:
            refusals.append(exc)
            return False

    with ThreadPoolExecutor(len(racers)) as threads:
        won = list(threads.map(race, racers))
    assert sum(won) == 1  # no one is flushing: no one hands it over
    assert {(e.reason, e.retry_after, e.status_code) for e in refusals} == {
        (Reason.CHANNEL_BUSY, 1, 503)
    }
    ((_, holder, epoch),) = _leases(pool)
    assert holder == f"i{won.index(True)}"
    assert epoch == 1


def test_a_stale_holders_checkpoint_is_refused_and_a_frozen_one_stops_accepting(
    pool: Pool,
) -> None:
    a, b = _store(pool, "a", lease=1.0, margin=0.3), _store(pool, "b", handoff_wait=0.1)
    channel = os.urandom(32)
    held = a.acquire(channel, lambda: STATE, None)
    assert held is not None
    assert held.held
    _pay(held, P)
    assert a.flush() == 1
    with pytest.raises(ChannelBusyError):  # A's lease is live: B waits, then gives up
        b.acquire(channel, lambda: STATE, None)
    _pay(held, 2 * P)  # accepted in memory, never checkpointed: A "freezes" here
    time.sleep(0.75)  # past A's own deadline (lease - margin), before the lease's expiry
    assert not held.held
    with pytest.raises(ChannelBusyError):
        _pay(held, 3 * P)
    time.sleep(0.35)  # the lease has expired on the database's clock: B takes it
    taken = b.acquire(channel, lambda: STATE, None)
    assert taken is not None
    assert taken.highest == P
    _pay(taken, 3 * P)  # 2P..3P: the lost slice P..2P stays unpaid, payable later
    assert taken.unpaid == [[P, 2 * P]]
    assert b.flush() == 1
    a.mark(held)  # A thaws: its checkpoint is fenced, its account dropped
    assert a.flush() == 0
    assert a.fenced == 1
    assert not a.holds(channel)
    ((_, holder, epoch),) = _leases(pool)
    assert (holder, epoch) == ("b", 2)
    (state,) = pool.fetch("SELECT version FROM channel_states")
    assert int(state[0]) == taken.version  # B's, not A's


def test_a_live_holder_hands_the_channel_over_on_request(pool: Pool) -> None:
    a, b = _store(pool, "a"), _store(pool, "b")
    forgotten: list[ChannelAccount] = []
    a.attach(forgotten.append)
    channel = os.urandom(32)
    held = a.acquire(channel, lambda: STATE, None)
    assert held is not None
    _pay(held, P)
    _pay(held, 2 * P)  # dirty: the hand-off writes it
    a.start()
    try:
        started = time.monotonic()
        taken = b.acquire(channel, lambda: STATE, None)
        waited = time.monotonic() - started
    finally:
        a.close()
    assert taken is not None
    assert taken.highest == 2 * P
    assert taken.served == 2 * P
    assert forgotten == [held]
    assert not held.held
    assert a.handed_over == 1
    assert waited < b.handoff_wait
    ((_, holder, epoch),) = _leases(pool)
    assert (holder, epoch) == ("b", 2)


def test_paid_reads_are_every_instances(pool: Pool) -> None:
    a, b = _store(pool, "a"), _store(pool, "b")
    channel = os.urandom(32)
    held = a.acquire(channel, lambda: STATE, None)
    assert held is not None
    _pay(held, P, "/articles/one")
    assert b.paid_read(PAYER, "/articles/one") is None  # not written yet: A's to tell
    a.flush()
    found = b.paid_read(PAYER, "/articles/one")
    assert found is not None
    assert found[:2] == (channel, P)
    assert b.terms(channel) == (PAYER, PAYEE, TOKEN)


def test_an_id_no_contract_knows_writes_nothing(pool: Pool) -> None:
    store = _store(pool, "a")
    for _ in range(20):
        assert store.acquire(os.urandom(32), lambda: NONE, None) is None
    assert _leases(pool) == []


def test_closing_releases_every_lease(pool: Pool) -> None:
    a, b = _store(pool, "a"), _store(pool, "b", handoff_wait=0.05)
    channels = [os.urandom(32) for _ in range(3)]
    for channel in channels:
        assert a.acquire(channel, lambda: STATE, None) is not None
    a.close()
    for channel in channels:  # at once: no waiting for an expiry
        assert b.acquire(channel, lambda: STATE, None) is not None
