"""Two channel handlers (instances) on one shared store and one embedded chain: a voucher on
either is decided by the holder of the channel's lease, which moves on request with the
channel's state, reads in flight or not; a killed holder's channel is claimed by another; what
reaches the content server's seam is bounded (lease takes at once, ids no contract knows,
another contract's vouchers, a store gone)."""

from __future__ import annotations

import os
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial

import anyio
import pytest

from agent_pay.errors import (
    ChainUnavailableError,
    MalformedPaymentError,
    PaymentRejectedError,
    Reason,
)
from agent_pay.facilitator.channel.accounts import MAX_TAKING, ChannelAccounts
from agent_pay.facilitator.channel.book import ChannelAccount
from agent_pay.facilitator.channel.local import LocalChannelFacilitator
from agent_pay.facilitator.channel.records import ChannelBusyError
from agent_pay.facilitator.channel.scheme import ChannelEvmScheme
from agent_pay.signing import LocalSigner
from agent_pay.store.errors import StoreUnavailableError
from agent_pay.store.postgres.channels import PostgresChannelStore
from agent_pay.store.postgres.connection import Pool
from tests._channel_parts import Chain, P, _open_channel, new_chain
from tests.test_channel_handler import _offer, _voucher
from tests.test_channel_leases import _leases, pool

__all__ = ["pool"]  # the fixture


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


# -- bounds, with a store that stalls or is gone ----------------------------------------------


class _Stalling:
    """A shared store whose every take waits `delay` seconds, as a busy database would, then
    finds no channel, or fails as a database that went away does (`down`)."""

    handoff_wait = 0.05

    def __init__(self, delay: float = 0.0, *, down: bool = False) -> None:
        self.delay = delay
        self.down = down
        self.taking = self.most = 0
        self._lock = threading.Lock()

    def acquire(self, channel: bytes, read_chain: object, held: object) -> None:
        with self._lock:
            self.taking += 1
            self.most = max(self.most, self.taking)
        time.sleep(self.delay)
        with self._lock:
            self.taking -= 1
        if self.down:
            raise StoreUnavailableError("OperationalError: the server closed the connection")

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


def test_a_flood_of_lease_takes_is_bounded(onchain: Chain) -> None:
    store = _Stalling(0.1)
    accounts = ChannelAccounts(onchain.manager, store)

    def look(_: int) -> str:
        try:
            accounts.lookup(os.urandom(32))
        except ChannelBusyError:
            return "busy"
        return "none"

    with ThreadPoolExecutor(32) as threads:
        answers = list(threads.map(look, range(32)))
    assert 1 < store.most <= MAX_TAKING  # (ids sharing a lock stripe wait for each other)
    assert "busy" in answers


def test_a_store_gone_is_a_503_on_the_seam(onchain: Chain) -> None:
    payer, payee = LocalSigner.random(), LocalSigner.random().address
    channel = _open_channel(onchain, payer, payee, 10 * P)
    handler = ChannelEvmScheme(
        onchain.manager, [onchain.token], onchain.relayer, store=_Stalling(down=True)
    )
    offer = _offer(onchain, payee)
    voucher = _voucher(onchain, payer, channel, P, offer)
    with pytest.raises(ChainUnavailableError) as caught:
        anyio.run(partial(LocalChannelFacilitator(handler).accept, voucher, offer, "/a"))
    assert (caught.value.status_code, caught.value.reason) == (503, Reason.LEDGER_UNAVAILABLE)
