"""The store's conformance suite beyond tests/test_ledger.py (whose `ledger` fixture runs every
state transition on each backend): races between threads and processes, ownership of what is
in flight, payment-identifier bindings, the sign-in replay guard, migrations, shared settings."""

from __future__ import annotations

import multiprocessing
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg
import pytest

from agent_pay.assembly.root import record_submissions
from agent_pay.errors import ConfigurationError
from agent_pay.server.ledger import PaymentKey, PaymentState
from agent_pay.server.siwx import MemoryNonces
from agent_pay.store.errors import StoreUnavailableError
from agent_pay.store.open import Store, open_store
from agent_pay.store.postgres.migrations import MIGRATIONS
from agent_pay.store.postgres.nonces import PostgresNonces
from tests.test_ledger import REQUIREMENTS, TX, begin, key, payment

Opener = Callable[[], Store]


@pytest.fixture(params=["sqlite", "postgres"])
def opener(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    """Opens the store of one backend: each call another handle on the same data on
    PostgreSQL (as another process would), the one handle a process may have on SQLite."""
    target = request.getfixturevalue("postgres_url") if request.param == "postgres" else None
    opened: list[Store] = []

    def open_() -> Store:
        if target is not None or not opened:
            opened.append(open_store(target, tmp_path))
        return opened[-1]

    yield open_
    for store in opened:
        store.close()


def _race(steps: list[Callable[[], bool]], racers: int) -> list[int]:
    """`racers` threads run each step together; how many won each."""
    barrier = threading.Barrier(racers)

    def run() -> list[bool]:
        won = []
        for step in steps:
            barrier.wait()
            won.append(step())
        return won

    with ThreadPoolExecutor(racers) as pool:
        results = [f.result() for f in [pool.submit(run) for _ in range(racers)]]
    return [sum(r[i] for r in results) for i in range(len(steps))]


def test_racing_threads_win_each_step_once(opener: Opener) -> None:
    ledger = opener().ledger
    steps: list[Callable[[], bool]] = [
        lambda: begin(ledger, 1),
        lambda: ledger.settling(key(1)),
        lambda: ledger.settled(key(1), TX, None),
        lambda: ledger.delivered(key(1)),
    ]
    assert _race(steps, 12) == [1, 1, 1, 1]
    entry = ledger.get(key(1))
    assert entry is not None
    assert entry.state is PaymentState.DELIVERED


def _race_in_process(url: str, barrier: Any, results: Any, paying: PaymentKey) -> None:
    """One process of `test_racing_processes_win_each_step_once`."""
    store = open_store(url, Path("/nonexistent"))
    ledger = store.ledger
    won = []
    for step in (
        lambda: ledger.begin(
            paying,
            resource="/articles/a",
            resource_url="http://testserver/articles/a",
            requirements=REQUIREMENTS,
            payment=payment(paying.payment_id),
        ),
        lambda: ledger.settling(paying),
        lambda: ledger.settled(paying, TX, None),
    ):
        barrier.wait()
        won.append(step())
    results.put(won)
    store.close()


@pytest.mark.slow
def test_racing_processes_win_each_step_once(postgres_url: str) -> None:
    """Four processes on one PostgreSQL race the same payment: one wins each step."""
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(4), context.Queue()
    racers = [
        context.Process(target=_race_in_process, args=(postgres_url, barrier, results, key(7)))
        for _ in range(4)
    ]
    for racer in racers:
        racer.start()
    won = [results.get(timeout=60) for _ in racers]
    for racer in racers:
        racer.join(timeout=30)
        assert racer.exitcode == 0
    assert [sum(w[i] for w in won) for i in range(3)] == [1, 1, 1]


def _freeze(store: Store, url: str) -> None:
    """Stop `store`'s heartbeat and age its last one past the lease (a frozen process)."""
    instance = store.ledger.instance  # type: ignore[attr-defined]
    instance._stopped.set()
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute(
            "UPDATE instances SET heartbeat_at = now() - interval '1 hour' WHERE id = %s",
            (instance.id,),
        )


def test_what_is_in_flight_is_owned_by_one_live_instance(postgres_url: str, tmp_path: Path) -> None:
    first, second, third = (open_store(postgres_url, tmp_path) for _ in range(3))
    try:
        assert begin(first.ledger, 1)
        assert first.ledger.take_over(key(1)), "its own"
        assert not second.ledger.take_over(key(1)), "alive elsewhere: not ours"
        _freeze(first, postgres_url)  # the first stops answering: its heartbeat goes stale
        barrier = threading.Barrier(2)

        def take(store: Store) -> bool:
            barrier.wait()
            return store.ledger.take_over(key(1))

        with ThreadPoolExecutor(2) as pool:
            won = list(pool.map(take, (second, third)))
        assert sorted(won) == [False, True], "of two survivors racing, one takes it over"
        if not second.ledger.take_over(key(1)):
            second, third = third, second  # the third won it
        # The first was only frozen: its writes are fenced off now that the lease moved.
        assert not first.ledger.settling(key(1))
        assert not first.ledger.failed(key(1), "x", "y")
        assert not first.ledger.record_submission(key(1), TX)
        assert not third.ledger.settling(key(1)), "nor the survivor that lost"
        assert second.ledger.settling(key(1))
        assert second.ledger.record_submission(key(1), TX)
        assert not first.ledger.settled(key(1), TX, None)
        assert second.ledger.settled(key(1), TX, None)
        assert not second.ledger.take_over(key(1)), "settled: nothing to take over"
    finally:
        for store in (first, second, third):
            store.close()


def test_a_stopped_instance_leaves_its_payments_at_once(postgres_url: str, tmp_path: Path) -> None:
    first, second = (open_store(postgres_url, tmp_path) for _ in range(2))
    try:
        assert begin(first.ledger, 1)
        first.close()  # a clean stop unregisters it
        assert second.ledger.take_over(key(1))
    finally:
        second.close()


def test_one_process_owns_all_of_a_sqlite_file(tmp_path: Path) -> None:
    store = open_store(None, tmp_path)
    try:
        assert not store.shared
        assert not store.ledger.take_over(key(1)), "not in the ledger"
        assert begin(store.ledger, 1)
        assert store.ledger.take_over(key(1))
        assert store.ledger.failed(key(1), "x", "y")
        assert not store.ledger.take_over(key(1)), "failed: not in flight"
        assert store.claim("receipt_signer", "0xA") == "0xA"
    finally:
        store.close()


def test_a_payment_identifier_names_one_payment(opener: Opener) -> None:
    ledger = opener().ledger
    assert ledger.bind_payment_id("id-1", "fp-a", "/articles/a") == ("fp-a", "/articles/a", False)
    assert ledger.bind_payment_id("id-1", "fp-a", "/articles/a") == ("fp-a", "/articles/a", True)
    assert ledger.bind_payment_id("id-1", "fp-b", "/articles/b") == ("fp-a", "/articles/a", True)
    # An id first seen once its payment is in the ledger is not bound.
    assert begin(ledger, 2)
    assert ledger.bind_payment_id("id-2", "fp-c", "/articles/a", key=key(2))[2] is False
    assert ledger.bind_payment_id("id-2", "fp-d", "/articles/a") == ("fp-d", "/articles/a", False)


def test_racing_bindings_of_one_identifier_agree(opener: Opener) -> None:
    """Twelve handles (on PostgreSQL: twelve connections) bind one id to twelve payments at
    once: one binding wins, and every caller is told the same one."""
    stores = [opener() for _ in range(2)]
    barrier = threading.Barrier(12)

    def bind(n: int) -> tuple[str, str, bool]:
        barrier.wait()
        return stores[n % 2].ledger.bind_payment_id("id-race", f"fp-{n}", "/articles/a")

    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(bind, range(12)))
    assert len({(fp, resource) for fp, resource, _ in answers}) == 1
    assert sum(not seen for _, _, seen in answers) == 1


@pytest.mark.parametrize("backend", ["memory", "postgres"])
def test_a_sign_in_nonce_is_spent_once(backend: str, request: pytest.FixtureRequest) -> None:
    if backend == "memory":
        one = two = MemoryNonces()
        stores: list[Store] = []
    else:
        url = request.getfixturevalue("postgres_url")
        stores = [open_store(url, Path("/nonexistent")) for _ in range(2)]
        one, two = (PostgresNonces(store.ledger.pool) for store in stores)  # type: ignore[attr-defined]
    try:
        assert one.spend("n1", 2_000.0, 1_000.0)
        assert not two.spend("n1", 2_000.0, 1_000.0), "spent: on every instance"
        assert two.spend("n2", 2_000.0, 1_000.0)
    finally:
        for store in stores:
            store.close()


def _open_and_close(url: str) -> None:
    open_store(url, Path("/nonexistent")).close()


@pytest.mark.slow
def test_instances_starting_together_migrate_once(postgres_url: str) -> None:
    context = multiprocessing.get_context("spawn")
    starters = [context.Process(target=_open_and_close, args=(postgres_url,)) for _ in range(4)]
    for starter in starters:
        starter.start()
    for starter in starters:
        starter.join(timeout=60)
        assert starter.exitcode == 0
    with psycopg.connect(postgres_url) as connection:
        versions = connection.execute("SELECT version FROM schema_version ORDER BY 1").fetchall()
    assert [v for (v,) in versions] == list(range(1, len(MIGRATIONS) + 1))


def test_the_first_receipt_signer_claimed_is_the_stores(postgres_url: str, tmp_path: Path) -> None:
    first, second = (open_store(postgres_url, tmp_path) for _ in range(2))
    try:
        assert first.claim("receipt_signer", "0xA") == "0xA"
        assert second.claim("receipt_signer", "0xB") == "0xA"
    finally:
        first.close()
        second.close()


def test_an_unreachable_database_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="cannot open the store"):
        open_store("postgresql://nobody:secret@127.0.0.1:1/none?connect_timeout=1", tmp_path)


def test_a_purchase_on_one_instance_entitles_on_another_at_once(opener: Opener) -> None:
    """An instance that found nothing bought asks again (another may have just sold it); one
    that found it bought may remember it (a paid entry stays paid)."""
    seller, other = opener().ledger, opener().ledger
    assert other.entitlement(key(1).payer, "/articles/a") is None
    assert begin(seller, 1)
    assert seller.settling(key(1))
    assert seller.settled(key(1), TX, None)
    found = other.entitlement(key(1).payer, "/articles/a")
    assert found is not None
    assert found.key == key(1)
    assert seller.delivered(key(1))
    again = other.entitlement(key(1).payer, "/articles/a")
    assert again is not None
    assert again.key == key(1)


def test_an_instance_that_lost_a_payment_broadcasts_nothing(
    postgres_url: str, tmp_path: Path
) -> None:
    """The in-process facilitator records each settlement before broadcasting it; on a shared
    store a refused record (the payment was taken over) stops the broadcast."""
    frozen, survivor = (open_store(postgres_url, tmp_path) for _ in range(2))
    try:
        assert begin(frozen.ledger, 1)
        assert frozen.ledger.settling(key(1))
        _freeze(frozen, postgres_url)  # the survivor takes the payment over
        assert survivor.ledger.take_over(key(1))
        hook = record_submissions(frozen.ledger)
        nonce = bytes.fromhex(key(1).payment_id[2:])
        with pytest.raises(StoreUnavailableError, match="no longer this instance's"):
            hook(key(1).payer, nonce, TX)
        record_submissions(survivor.ledger)(key(1).payer, nonce, TX)
        entry = survivor.ledger.get(key(1))
        assert entry is not None
        assert entry.tx_hash == TX
    finally:
        frozen.close()
        survivor.close()


def test_in_flight_lists_what_this_instance_may_resolve(postgres_url: str, tmp_path: Path) -> None:
    alive, stopped, other = (open_store(postgres_url, tmp_path) for _ in range(3))
    try:
        assert begin(alive.ledger, 1)
        assert begin(stopped.ledger, 2)
        assert begin(other.ledger, 3)
        _freeze(stopped, postgres_url)
        assert [e.key for e in other.ledger.in_flight()] == [key(2), key(3)]
        assert [e.key for e in alive.ledger.in_flight()] == [key(1), key(2)]
    finally:
        for store in (alive, stopped, other):
            store.close()
