"""Hostile probes of the shared PostgreSQL store and the channels kept on it (one lease per
channel): the database gone (a statement, a stop, a claim round) or hung (the statement
deadline); a forged voucher that must not move a channel; one voucher sprayed at two
instances; an instance frozen inside a transaction others wait on (a checkpoint, a payment
identifier's binding)."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

import anyio
import psycopg
import pytest

from agent_pay.assembly.channels import ChannelOptions
from agent_pay.errors import Reason
from agent_pay.facilitator.channel.local import LocalChannelFacilitator
from agent_pay.facilitator.channel.records import ChannelBusyError, ChannelRefusedError
from agent_pay.facilitator.channel.scheme import ChannelEvmScheme
from agent_pay.protocol import ResourceInfo
from agent_pay.signing import LocalSigner
from agent_pay.store.errors import StoreUnavailableError
from agent_pay.store.postgres import channels as channels_module
from agent_pay.store.postgres.channels import PostgresChannelStore
from agent_pay.store.postgres.connection import Pool
from agent_pay.store.postgres.instance import Instance
from agent_pay.store.postgres.ledger import PostgresLedger
from agent_pay.testing import Testbed
from tests._channel_parts import Chain, P, _open_channel
from tests.test_channel_handler import _offer, _voucher
from tests.test_channel_lease_handlers import _handler, onchain
from tests.test_channel_leases import CONTRACT, STATE, _leases
from tests.test_e2e_channel import CATALOGUE

__all__ = ["onchain"]  # the fixture

HOST = "http://testserver"


@pytest.fixture
def pool(postgres_url: str) -> Iterator[Pool]:
    opened = Pool(postgres_url, timeout=1.0, deadline=2.0)
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


def test_a_forged_voucher_does_not_move_the_channel(onchain: Chain, pool: Pool) -> None:
    """Anyone can read a channel's id on chain. A voucher for it that its payer did not sign
    (or for another payee), sent to the instance not holding it, is refused there without
    asking the holder to hand the channel over: else a stranger alternating forgeries
    between instances would bounce every channel, each move a wait (or a 503) for its payer."""
    payer, payee = LocalSigner.random(), LocalSigner.random().address
    channel = _open_channel(onchain, payer, payee, 10 * P)
    a, b = _handler(onchain, pool, "a"), _handler(onchain, pool, "b")
    offer = _offer(onchain, payee)
    try:
        a.settle(_voucher(onchain, payer, channel, P, offer), offer)  # A holds it
        seam = LocalChannelFacilitator(b)
        forged = _voucher(onchain, LocalSigner.random(), channel, 2 * P, offer)
        with pytest.raises(ChannelRefusedError) as caught:
            anyio.run(partial(seam.accept, forged, offer, "/a"))
        assert caught.value.reason == Reason.CHANNEL_INVALID_SIGNATURE
        with pytest.raises(ChannelRefusedError) as caught:  # through the ledger's path
            b.verify(forged, offer)
        assert caught.value.reason == Reason.CHANNEL_INVALID_SIGNATURE
        elsewhere = _offer(onchain, LocalSigner.random().address)  # another payee's offer
        stray = _voucher(onchain, payer, channel, 2 * P, elsewhere)
        with pytest.raises(ChannelRefusedError) as caught:
            anyio.run(partial(seam.accept, stray, elsewhere, "/a"))
        assert caught.value.reason == Reason.CHANNEL_PAYEE_MISMATCH
        assert _leases(pool) == [("0x" + channel.hex(), "a", 1)]  # still A's
        assert pool.fetch("SELECT wanted_by FROM channel_leases") == [(None,)]  # not asked
        assert a.accept(_voucher(onchain, payer, channel, 2 * P, offer), offer, "/a") is not None
    finally:
        a.close()
        b.close()


def test_one_voucher_sprayed_at_both_pays_one_read(onchain: Chain, pool: Pool) -> None:
    """Each voucher sent to both instances at once, for a different article at each: exactly
    one of the two reads is paid by it (the other is refused as used, whichever instance
    holds the channel), and the holder at the end counts each voucher's price once."""
    payer, payee = LocalSigner.random(), LocalSigner.random().address
    channel = _open_channel(onchain, payer, payee, 20 * P)
    instances = (_handler(onchain, pool, "a"), _handler(onchain, pool, "b"))
    offer = _offer(onchain, payee)
    used: list[Reason] = []

    def pay(handler: ChannelEvmScheme, n: int, resource: str) -> bool:
        voucher = _voucher(onchain, payer, channel, n * P, offer)
        voucher = voucher.model_copy(update={"resource": ResourceInfo(url=HOST + resource)})
        while True:
            try:
                if handler.accept(voucher, offer, resource) is None:
                    handler.settle(voucher, offer)
                return True
            except ChannelBusyError:
                time.sleep(0.01)
            except ChannelRefusedError as refused:
                used.append(refused.reason)
                return False

    try:
        with ThreadPoolExecutor(2) as threads:
            for n in range(1, 13):
                paid = threads.map(pay, instances, (n, n), (f"/{n}/a", f"/{n}/b"))
                assert sorted(paid) == [False, True], n
        assert used == [Reason.CHANNEL_VOUCHER_USED] * 12
        (account,) = [a for h in instances if (a := h.book.get(channel)) is not None]
        assert account.served == account.highest == 12 * P
        assert account.unpaid == []
    finally:
        for handler in instances:
            handler.close()


def test_a_hung_store_is_a_503_in_its_deadline_then_serves_again(postgres_url: str) -> None:
    """The database hangs (here: another session holds the channel tables locked, so every
    statement on them waits): a statement is a 503 `ledger_unavailable` once its deadline
    passes, not a request that never ends; once the database answers again, so does the
    server (the cut connection was discarded, not lent again)."""
    pool = Pool(postgres_url, timeout=1.0, deadline=1.0)
    options = ChannelOptions(
        settle_every_seconds=3600,
        shared_store=lambda contract: PostgresChannelStore(pool, "a", contract),
    )
    bed = Testbed.create(articles=CATALOGUE, schemes=("exact", "channel"), channel_options=options)
    try:
        with (
            bed.client(bed.agent(funds={"USDX": "1"}, tokens=["USDX"])) as http,
            psycopg.connect(postgres_url) as locker,
        ):
            locker.execute("LOCK TABLE channel_states IN ACCESS EXCLUSIVE MODE")
            started = time.monotonic()
            hung = http.get("/channels/0x" + os.urandom(32).hex())
            waited = time.monotonic() - started
            assert hung.status_code == 503, hung.text
            assert hung.json()["error"] == Reason.LEDGER_UNAVAILABLE
            assert 1.0 <= waited < 3.0, waited
            locker.rollback()  # the database answers again
            for _ in range(8):  # more than the pool's connections: none of them is cut
                assert http.get("/channels/0x" + os.urandom(32).hex()).status_code == 404
    finally:
        bed.close()
        pool.close()


def test_a_holder_frozen_mid_checkpoint_does_not_hold_its_channels_forever(
    pool: Pool, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A holder frozen (SIGSTOP, a long pause) inside its checkpoint's transaction holds the
    row locks of its leases while it is frozen, and PostgreSQL cannot tell a frozen client
    from a slow one. The database ends that transaction soon, so the channels' leases expire
    as any frozen holder's do and another instance takes them; the thawed holder's
    checkpoint fails and it accepts nothing more on them."""
    # A's own pool: its deadline thread is frozen with it (here: a deadline never reached).
    frozen_pool = Pool(postgres_url, timeout=1.0, deadline=3600.0)
    a = _leases_store(frozen_pool, "a")
    b = _leases_store(pool, "b")
    channel = os.urandom(32)
    held = a.acquire(channel, lambda: STATE, None)
    assert held is not None
    frozen, inside = threading.Event(), threading.Event()
    real = channels_module.write_checkpoint

    def freezing(*args: Any) -> set[bytes]:
        kept = real(*args)
        inside.set()
        frozen.wait(10)  # the process stops here, its transaction open
        return kept

    monkeypatch.setattr(channels_module, "write_checkpoint", freezing)
    a.mark(held)
    with ThreadPoolExecutor(1) as thread:
        checkpoint = thread.submit(a.flush)
        assert inside.wait(5)
        deadline = time.monotonic() + 4
        taken = None
        while taken is None:
            assert time.monotonic() < deadline, "B never took the frozen holder's channel"
            with contextlib.suppress(ChannelBusyError, StoreUnavailableError):
                taken = b.acquire(channel, lambda: STATE, None)
        frozen.set()  # A thaws
        with pytest.raises(StoreUnavailableError):
            checkpoint.result()
    assert not held.held
    assert _leases(pool) == [("0x" + channel.hex(), "b", 2)]
    b.close()
    frozen_pool.close()


def _leases_store(pool: Pool, me: str) -> PostgresChannelStore:
    return PostgresChannelStore(pool, me, CONTRACT, lease=1.0, margin=0.3, handoff_wait=0.2)


def test_the_holder_claims_its_channels_with_the_store_away(
    onchain: Chain, postgres_url: str
) -> None:
    """A claim needs the chain, not the database: with the store away, the settler's round
    (the periodic one, and the last one on the way out) still claims the channels this
    instance holds, though it cannot look for orphans to adopt."""
    own = Pool(postgres_url, timeout=1.0)
    payer, payee = LocalSigner.random(), LocalSigner.random().address
    channel = _open_channel(onchain, payer, payee, 10 * P)
    offer = _offer(onchain, payee)
    handler = _handler(onchain, own, "a", lease=30.0, margin=1.0)
    try:
        handler.settle(_voucher(onchain, payer, channel, 2 * P, offer), offer)
        own.close()  # the database goes away
        assert handler.settler.settle().claimed == 1
        assert onchain.manager.channel(channel).claimed == 2 * P
    finally:
        handler.close()


class _FreezingPool(Pool):
    """An instance's pool that freezes (as SIGSTOP would, its deadline thread with it) right
    after its transaction inserted a payment identifier, the transaction still open."""

    def __init__(self, url: str) -> None:
        super().__init__(url, timeout=1.0, deadline=3600.0)
        self.inside, self.thaw = threading.Event(), threading.Event()

    @contextlib.contextmanager
    def connection(self) -> Iterator[Any]:
        with super().connection() as connection:
            yield _Freezing(connection, self)


class _Freezing:
    def __init__(self, connection: Any, pool: _FreezingPool) -> None:
        self._connection, self._pool = connection, pool

    def execute(self, sql: bytes, params: Any = ()) -> Any:
        cursor = self._connection.execute(sql, params)
        if sql.startswith(b"INSERT INTO payment_ids"):
            self._pool.inside.set()
            self._pool.thaw.wait(10)
        return cursor

    def transaction(self) -> Any:
        return self._connection.transaction()


def test_an_instance_frozen_binding_a_payment_id_does_not_block_its_retry(
    pool: Pool, postgres_url: str
) -> None:
    """Instance A freezes inside the transaction binding a payment identifier; the client
    retries the payment, with the same identifier, on B. B's insert would wait on A's
    uncommitted row for as long as A is frozen (each try a 503 after the statement deadline):
    the database ends A's idle transaction, and B binds the identifier."""
    frozen_pool = _FreezingPool(postgres_url)
    a_instance, b_instance = Instance(frozen_pool), Instance(pool)
    a = PostgresLedger(frozen_pool, a_instance)
    b = PostgresLedger(pool, b_instance)
    with ThreadPoolExecutor(1) as thread:
        binding = thread.submit(a.bind_payment_id, "id-1", "fp", "/articles/a")
        assert frozen_pool.inside.wait(5)
        deadline = time.monotonic() + 4
        bound = None
        while bound is None:
            assert time.monotonic() < deadline, "B never bound the identifier"
            with contextlib.suppress(StoreUnavailableError):
                bound = b.bind_payment_id("id-1", "fp", "/articles/a")
        assert bound == ("fp", "/articles/a", False)
        frozen_pool.thaw.set()
        with pytest.raises(StoreUnavailableError):
            binding.result()
    a_instance.stop()
    b_instance.stop()
    frozen_pool.close()
