"""Channel state on the shared PostgreSQL store, with leases (agent_pay.store.postgres.channels):
the conformance of the store itself (a lease race has one winner; a stale holder's checkpoint is
refused; a frozen holder stops accepting when its lease runs out; paid reads are every
instance's; an id no contract knows writes nothing), then two channel handlers on one store
and one embedded chain, as two instances: a voucher on either is decided by the holder of the
channel's lease, which moves on request with the channel's state, reads in flight or not."""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial

import anyio
import pytest

from agent_pay.chain.channel import ChannelState, ChannelStatus
from agent_pay.errors import MalformedPaymentError, PaymentRejectedError, Reason
from agent_pay.facilitator.channel.accounts import ChannelAccounts
from agent_pay.facilitator.channel.book import ChannelAccount
from agent_pay.facilitator.channel.local import LocalChannelFacilitator
from agent_pay.facilitator.channel.records import ChannelBusyError
from agent_pay.facilitator.channel.scheme import ChannelEvmScheme
from agent_pay.signing import LocalSigner
from agent_pay.store.postgres.channels import PostgresChannelStore
from agent_pay.store.postgres.connection import Pool
from tests._channel_parts import PAYEE, PAYER, TOKEN, Chain, P, _open_channel, new_chain
from tests.test_channel_handler import _offer, _voucher

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


def test_a_flood_of_lease_takes_is_bounded(pool: Pool) -> None:
    class Slow:
        """A shared store whose every take waits, as a busy database would."""

        handoff_wait = 0.05
        taking = 0
        most = 0

        def acquire(self, channel: bytes, read_chain: object, held: object) -> None:
            Slow.taking += 1
            Slow.most = max(Slow.most, Slow.taking)
            time.sleep(0.1)
            Slow.taking -= 1

        def attach(self, forget: object) -> None: ...

        def orphans(self) -> list[bytes]:
            return []

        def stored(self, channel: bytes) -> None:
            return None

        def load(self) -> list[ChannelAccount]:
            return []

        def paid_read(self, payer: str, resource: str) -> None:
            return None

        def terms(self, channel: bytes) -> None:
            return None

        def mark(self, account: ChannelAccount) -> None: ...
        def flush(self) -> int:
            return 0

        def start(self) -> None: ...
        def close(self) -> None: ...

    onchain = new_chain()
    accounts = ChannelAccounts(onchain.manager, Slow())

    def look(_: int) -> str:
        try:
            accounts.lookup(os.urandom(32))
        except ChannelBusyError:
            return "busy"
        return "none"

    with ThreadPoolExecutor(32) as threads:
        answers = list(threads.map(look, range(32)))
    assert Slow.most <= 8
    assert "busy" in answers


# -- two handlers (instances) on one store and one chain ---------------------------------------


@pytest.fixture(scope="module")
def onchain() -> Chain:
    return new_chain()


def _handler(
    env: Chain, pool: Pool, me: str, *, start: bool = True, **options: float
) -> ChannelEvmScheme:
    store = PostgresChannelStore(pool, me, env.manager.address, flush_interval=0.01, **options)
    handler = ChannelEvmScheme(env.manager, [env.token], env.relayer, store=store)
    if start:
        store.start()
    return handler


def test_vouchers_follow_the_lease_between_two_instances(onchain: Chain, pool: Pool) -> None:
    payer, payee = LocalSigner.random(), LocalSigner.random().address
    channel = _open_channel(onchain, payer, payee, 20 * P)
    a, b = _handler(onchain, pool, "a"), _handler(onchain, pool, "b")
    offer = _offer(onchain, payee)

    def voucher(n: int):  # type: ignore[no-untyped-def]
        return _voucher(onchain, payer, channel, n * P, offer)

    try:
        assert a.accept(voucher(1), offer, "/a") is None  # not held: the slow path takes it
        assert a.settle(voucher(1), offer).amount == P
        assert a.accept(voucher(2), offer, "/a") is not None  # held: in memory
        assert b.accept(voucher(3), offer, "/a") is None
        assert b.settle(voucher(3), offer).amount == P  # A hands it over, with 1..2
        assert a.accept(voucher(4), offer, "/a") is None  # A knows it is not its own
        assert a.settle(voucher(4), offer).amount == P  # and back
        # The same voucher at both: what one instance serves twice (a replay, uncharged).
        with ThreadPoolExecutor(2) as threads:
            both = list(threads.map(lambda h: h.settle(voucher(5), offer), (a, b)))
        assert [s.amount for s in both] == [P, P]
        with pytest.raises(PaymentRejectedError) as caught:  # spent on "/a": not for "/b"
            b.settle(
                _voucher(onchain, payer, channel, 5 * P, offer).model_copy(
                    update={"resource": None}
                ),
                offer,
            )
        assert caught.value.reason == Reason.CHANNEL_VOUCHER_USED
        holder = b if b.book.get(channel) is not None else a
        statement = holder.statement(channel)
        assert statement is not None
        assert statement["highest"] == statement["served"] == str(5 * P)
        # The payee claims the highest voucher, once, whoever holds the channel.
        holder.settler.settle()
        assert onchain.manager.channel(channel).claimed == 5 * P
    finally:
        a.close()
        b.close()
    assert onchain.manager.channel(channel).claimed == 5 * P


def test_a_channel_moves_back_and_forth_with_reads_in_flight(onchain: Chain, pool: Pool) -> None:
    """Eight threads pay 48 reads, each voucher at A or B at random, while the channel's lease
    moves between them: every voucher is accepted exactly once, and the holder at the end
    counts every read, with no range left unpaid."""
    payer, payee = LocalSigner.random(), LocalSigner.random().address
    channel = _open_channel(onchain, payer, payee, 100 * P)
    instances = (_handler(onchain, pool, "a"), _handler(onchain, pool, "b"))
    offer = _offer(onchain, payee)
    vouchers = [_voucher(onchain, payer, channel, n * P, offer) for n in range(1, 49)]
    busy = 0

    def pay(n: int) -> int:
        nonlocal busy
        handler = random.Random(n).choice(instances)
        while True:
            try:
                if handler.accept(vouchers[n], offer, "/a") is None:
                    handler.settle(vouchers[n], offer)
                return n
            except ChannelBusyError:
                busy += 1
                time.sleep(0.01)

    try:
        with ThreadPoolExecutor(8) as threads:
            assert sorted(threads.map(pay, range(48))) == list(range(48))
        held = [h.book.get(channel) for h in instances]
        (account,) = [a for a in held if a is not None]
        assert account.served == account.highest == 48 * P
        assert account.unpaid == []
    finally:
        for handler in instances:
            handler.close()
    moved = sum(h.store.handed_over for h in instances if isinstance(h.store, PostgresChannelStore))
    assert moved >= 2, moved
    (row,) = pool.fetch("SELECT state FROM channel_states")
    assert '"served":"4800"' in row[0].replace(" ", "")


def test_a_killed_holders_channel_is_claimed_by_another_instance(
    onchain: Chain, pool: Pool
) -> None:
    payer, payee = LocalSigner.random(), LocalSigner.random().address
    channel = _open_channel(onchain, payer, payee, 10 * P)
    offer = _offer(onchain, payee)
    a = _handler(onchain, pool, "a", start=False, lease=1.0, margin=0.3)
    b = _handler(onchain, pool, "b")
    try:
        for n in (1, 2):
            a.settle(_voucher(onchain, payer, channel, n * P, offer), offer)
        a.store.flush()  # then A is killed: no claim, no release
        assert b.settler.settle().claimed == 0  # A's lease is live: not B's to claim
        time.sleep(1.1)
        assert b.settler.settle().claimed == 1  # expired: B adopts it and claims it
        assert onchain.manager.channel(channel).claimed == 2 * P
        assert b.book.get(channel) is not None
        deadline = time.monotonic() + 2
        while (told := a.statement(channel)) is not None and told["claimed"] != str(2 * P):
            assert time.monotonic() < deadline, told  # A tells it as B writes it
            time.sleep(0.01)
        assert told is not None
    finally:
        b.close()


def test_hostile_vouchers_on_the_shared_store(onchain: Chain, pool: Pool) -> None:
    """Through the content server's seam: an id no channel has, a voucher for a channel on
    another contract, and a malformed id take no lease and write nothing."""
    payer, payee = LocalSigner.random(), LocalSigner.random().address
    handler = _handler(onchain, pool, "a")
    seam = LocalChannelFacilitator(handler)
    offer = _offer(onchain, payee)
    try:
        for _ in range(5):  # a flood of ids no contract knows: each one chain read, no row
            stray = _voucher(onchain, payer, os.urandom(32), P, offer)
            assert anyio.run(partial(seam.accept, stray, offer, "/a")) is None
        elsewhere = offer.model_copy(
            update={"extra": {**offer.extra, "channelManager": "0x" + "55" * 20}}
        )
        foreign = _voucher(onchain, payer, os.urandom(32), P, elsewhere)
        with pytest.raises(PaymentRejectedError) as caught:
            anyio.run(partial(seam.accept, foreign, elsewhere, "/a"))
        assert caught.value.reason == Reason.REQUIREMENTS_MISMATCH
        odd = _voucher(onchain, payer, os.urandom(32), P, offer)
        odd = odd.model_copy(update={"payload": {**odd.payload, "channelId": "0x1234"}})
        with pytest.raises(MalformedPaymentError):
            anyio.run(partial(seam.accept, odd, offer, "/a"))
    finally:
        handler.close()
    assert _leases(pool) == []
    assert pool.fetch("SELECT count(*) FROM channel_states") == [(0,)]
