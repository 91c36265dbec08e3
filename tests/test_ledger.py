"""The payment ledger on its own: states, compare-and-set transitions, files, entitlements."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest

from agent_pay.errors import ConfigurationError
from agent_pay.protocol import X402_VERSION, PaymentPayload, PaymentRequirements
from agent_pay.protocol.extensions import ReceiptClaims
from agent_pay.server.ledger import (
    IN_FLIGHT,
    Ledger,
    PaymentKey,
    PaymentState,
    fingerprint,
)
from agent_pay.signing import LocalSigner
from agent_pay.signing.receipt import sign_receipt
from agent_pay.store.open import open_store
from agent_pay.store.protocols import PaymentLedger

PAYER = LocalSigner.random().address
AUTHOR = LocalSigner.random().address
TOKEN = LocalSigner.random().address
TX = "0x" + "ab" * 32

REQUIREMENTS = PaymentRequirements(
    scheme="exact",
    network="eip155:31337",
    amount=100_000,
    asset=TOKEN,
    pay_to=AUTHOR,
    max_timeout_seconds=120,
    extra={"name": "Agent Dollar", "version": "1"},
)


def payment(nonce: str, signature: str = "0x" + "11" * 65) -> PaymentPayload:
    return PaymentPayload(
        x402_version=X402_VERSION,
        accepted=REQUIREMENTS,
        payload={
            "signature": signature,
            "authorization": {
                "from": PAYER,
                "to": AUTHOR,
                "value": "100000",
                "validAfter": "0",
                "validBefore": "9999999999",
                "nonce": nonce,
            },
        },
    )


def key(n: int) -> PaymentKey:
    return PaymentKey("exact", PAYER, "0x" + f"{n:064x}")


def begin(ledger: PaymentLedger, n: int, resource: str = "/articles/a") -> bool:
    return ledger.begin(
        key(n),
        resource=resource,
        resource_url=f"http://testserver{resource}",
        requirements=REQUIREMENTS,
        payment=payment(key(n).payment_id),
    )


def receipt_for(resource: str = "/articles/a") -> ReceiptClaims:
    return ReceiptClaims(
        scheme="exact",
        payer=PAYER,
        pay_to=AUTHOR,
        resource=f"http://testserver{resource}",
        amount=100_000,
        asset=TOKEN,
        network="eip155:31337",
        transaction=TX,
        issued_at=1_700_000_000,
    )


@pytest.fixture(params=["memory", "file", "postgres"])
def ledger(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[PaymentLedger]:
    """Each backend of the store: the tests taking this fixture are its conformance suite."""
    if request.param == "postgres":
        store = open_store(request.getfixturevalue("postgres_url"), tmp_path)
        try:
            yield store.ledger
        finally:
            store.close()
        return
    opened = Ledger.in_memory() if request.param == "memory" else Ledger.open(tmp_path)
    with opened:
        yield opened


def test_a_payment_walks_the_happy_path(ledger: PaymentLedger) -> None:
    assert begin(ledger, 1)
    entry = ledger.get(key(1))
    assert entry is not None
    assert entry.state is PaymentState.VERIFIED
    assert entry.payment == payment(key(1).payment_id)
    assert entry.requirements == REQUIREMENTS
    assert entry.fingerprint == fingerprint(payment(key(1).payment_id))
    assert (entry.amount, entry.pay_to, entry.asset) == (100_000, AUTHOR, TOKEN)

    assert ledger.settling(key(1))
    assert ledger.record_submission(key(1), TX)
    signed = sign_receipt(LocalSigner.random(), receipt_for())
    assert ledger.settled(key(1), TX, signed)
    assert ledger.delivered(key(1))

    entry = ledger.get(key(1))
    assert entry is not None
    assert entry.state is PaymentState.DELIVERED
    assert entry.tx_hash == TX
    assert entry.receipt == signed
    assert entry.settled_at is not None
    assert entry.delivered_at is not None
    assert entry.paid


def test_transitions_are_compare_and_set(ledger: PaymentLedger) -> None:
    assert begin(ledger, 1)
    assert not begin(ledger, 1), "a second begin of the same key must lose"
    assert not ledger.delivered(key(1)), "verified cannot jump to delivered"
    assert ledger.settling(key(1))
    assert not ledger.settling(key(1)), "only one request moves verified → settling"
    assert ledger.settled(key(1), TX, None)
    assert not ledger.settled(key(1), TX, None), "settled once"
    assert not ledger.failed(key(1), "x", "y"), "a settled payment never becomes failed"
    assert not ledger.settling(key(2)), "no row, no transition"


def test_a_failed_payment_is_reopened_by_a_retry_for_the_same_resource(
    ledger: PaymentLedger,
) -> None:
    assert begin(ledger, 1)
    assert ledger.failed(key(1), "content_unavailable", "render failed")
    failed = ledger.get(key(1))
    assert failed is not None
    assert (failed.state, failed.error_reason) == (PaymentState.FAILED, "content_unavailable")
    assert not begin(ledger, 1, resource="/articles/b"), "bound to its resource"
    assert begin(ledger, 1)
    reopened = ledger.get(key(1))
    assert reopened is not None
    assert reopened.state is PaymentState.VERIFIED
    assert reopened.attempts == 2
    assert reopened.error_reason is None


def test_in_flight_and_counts(ledger: PaymentLedger) -> None:
    for n in range(5):
        begin(ledger, n)
    ledger.settling(key(1))
    ledger.settling(key(2))
    ledger.settled(key(2), TX, None)
    ledger.failed(key(3), "r", "m")
    assert {e.key for e in ledger.in_flight()} == {key(0), key(1), key(4)}
    assert all(e.state in IN_FLIGHT for e in ledger.in_flight())
    counts = ledger.counts()
    assert counts[PaymentState.VERIFIED] == 2
    assert counts[PaymentState.SETTLING] == 1
    assert counts[PaymentState.SETTLED] == 1
    assert counts[PaymentState.FAILED] == 1
    assert counts[PaymentState.DELIVERED] == 0


def test_entitlements_come_from_paid_entries_only(ledger: PaymentLedger) -> None:
    begin(ledger, 1, "/articles/a")
    assert ledger.entitlement(PAYER, "/articles/a") is None
    ledger.settling(key(1))
    assert ledger.entitlement(PAYER, "/articles/a") is None
    ledger.settled(key(1), TX, None)
    entry = ledger.entitlement(PAYER, "/articles/a")
    assert entry is not None
    assert entry.key == key(1)
    assert ledger.entitlement(PAYER, "/articles/b") is None
    assert ledger.entitlement(LocalSigner.random().address, "/articles/a") is None
    assert ledger.entries(payer=PAYER, states=[PaymentState.SETTLED]) == [entry]


def test_the_entitlements_view_groups_purchases() -> None:
    ledger = Ledger.in_memory()
    for n in range(3):
        begin(ledger, n, "/articles/a")
        ledger.settling(key(n))
        ledger.settled(key(n), TX, None)
    rows = ledger._read("SELECT payer, resource, purchases FROM entitlements")
    assert rows == [(PAYER, "/articles/a", 3)]


def test_a_file_ledger_survives_reopening_and_refuses_a_second_process(tmp_path: Path) -> None:
    first = Ledger.open(tmp_path / "data")
    begin(first, 1)
    first.settling(key(1))
    with pytest.raises(ConfigurationError, match="in use"):
        Ledger.open(tmp_path / "data")
    first.close()

    with Ledger.open(tmp_path / "data") as again:
        entry = again.get(key(1))
        assert entry is not None
        assert entry.state is PaymentState.SETTLING
        assert again.path == tmp_path / "data" / "ledger.sqlite"
        with closing(sqlite3.connect(again.path)) as raw:
            assert raw.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_racing_threads_settle_exactly_once(tmp_path: Path) -> None:
    """Sixteen threads race each transition of one key: each step has exactly one winner."""
    ledger = Ledger.open(tmp_path)
    request_close = ledger.close
    results: dict[str, list[bool]] = {"begin": [], "settling": [], "settled": []}
    barrier = threading.Barrier(16)

    def race() -> None:
        barrier.wait()
        results["begin"].append(begin(ledger, 7))
        barrier.wait()
        results["settling"].append(ledger.settling(key(7)))
        barrier.wait()
        results["settled"].append(ledger.settled(key(7), TX, None))

    threads = [threading.Thread(target=race) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    request_close()
    assert {step: sum(won) for step, won in results.items()} == {
        "begin": 1,
        "settling": 1,
        "settled": 1,
    }


def test_the_fingerprint_ignores_description_but_not_the_signature() -> None:
    base = payment("0x" + "01" * 32)
    described = base.model_copy(update={"extensions": {"note": "hi"}})
    resigned = payment("0x" + "01" * 32, signature="0x" + "22" * 65)
    assert fingerprint(described) == fingerprint(base)
    assert fingerprint(resigned) != fingerprint(base)


def test_entry_summary_is_json_ready(ledger: PaymentLedger) -> None:
    begin(ledger, 1)
    entry = ledger.get(key(1))
    assert entry is not None
    summary = entry.to_dict()
    assert summary["state"] == "verified"
    assert summary["amount"] == "100000"
    assert "payload" not in summary
