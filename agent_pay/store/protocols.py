"""What the content server keeps, as the interfaces its two backends implement.

`PaymentLedger` is the payment ledger (`agent_pay.server.ledger` documents its states and
transitions) with the x402 payment-identifier bindings beside it; `SpentNonces` is the replay
guard of sign-in-with-x. `Ledger` (SQLite, one process per file) and `PostgresLedger` (any
number of processes and hosts on one database) implement the first; `MemoryNonces` (one
process) and `PostgresNonces` the second. One conformance suite (tests/test_ledger.py,
tests/test_store_conformance.py) runs against both backends.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from agent_pay.protocol import PaymentPayload, PaymentRequirements
from agent_pay.protocol.extensions import SignedReceipt
from agent_pay.server.ledger_entry import IN_FLIGHT, Entry, PaymentKey, PaymentState

__all__ = ["PaymentLedger", "SpentNonces"]


class PaymentLedger(Protocol):
    """The payment ledger. Every write is one compare-and-set transition: of two callers
    racing the same step (threads, processes or hosts) exactly one gets True."""

    shared: bool
    """Whether other processes write this ledger too (their in-flight entries are theirs
    until they stop: see `take_over`)."""

    def get(self, key: PaymentKey) -> Entry | None: ...

    def in_flight(self) -> list[Entry]:
        """Entries left verified or settling that this process may resolve, oldest first:
        every one with one process per ledger; on a shared ledger, its own and those of
        instances that stopped (to be taken over: `take_over`)."""
        ...

    def entitlement(self, payer: str, resource: str) -> Entry | None:
        """The earliest paid entry of `payer` for `resource` (a URL path), if any."""
        ...

    def entries(
        self, *, payer: str | None = None, states: Iterable[PaymentState] | None = None
    ) -> list[Entry]: ...

    def counts(self) -> dict[PaymentState, int]: ...

    def begin(
        self,
        key: PaymentKey,
        *,
        resource: str,
        resource_url: str,
        requirements: PaymentRequirements,
        payment: PaymentPayload,
        state: PaymentState = PaymentState.VERIFIED,
    ) -> bool:
        """Record a verified payment (or reopen a failed one for the same resource), owned by
        this process. False if the key is held in any other state."""
        ...

    def take_over(self, key: PaymentKey) -> bool:
        """Make this process the owner of the in-flight entry `key`: True if it is already,
        or its owner stopped (no heartbeat within the lease); False while another live process
        owns it, or when it is not in flight. With one process per ledger, always True."""
        ...

    def settling(self, key: PaymentKey) -> bool: ...

    def record_submission(self, key: PaymentKey, tx_hash: str) -> bool: ...

    def settled(
        self,
        key: PaymentKey,
        tx_hash: str,
        receipt: SignedReceipt | None,
        *,
        from_states: tuple[PaymentState, ...] = IN_FLIGHT,
    ) -> bool: ...

    def delivered(self, key: PaymentKey) -> bool: ...

    def failed(
        self,
        key: PaymentKey,
        reason: str,
        message: str,
        *,
        from_states: tuple[PaymentState, ...] = IN_FLIGHT,
    ) -> bool: ...

    def bind_payment_id(
        self, payment_id: str, fingerprint: str, resource: str, *, key: PaymentKey | None = None
    ) -> tuple[str, str, bool]:
        """Bind an x402 payment-identifier (see `Ledger.bind_payment_id`); atomic across
        every process of the ledger."""
        ...

    def close(self) -> None: ...


class SpentNonces(Protocol):
    """The sign-in-with-x nonces accepted, until they expire: each is accepted once."""

    def spend(self, nonce: str, expires: float, now: float) -> bool:
        """Record `nonce` (valid until `expires`) as used; False if it was used already."""
        ...
