"""What a paid read buys and returns: a `Purchase` (a payment matched to an offer) and, once
it is paid, `Paid` (the ledger entry and the content)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

from agent_pay.protocol import PaymentPayload, PaymentRequirements, SettleResponse
from agent_pay.protocol.extensions import RECEIPT_EXTENSION, receipt_declaration
from agent_pay.server.ledger_entry import Entry, PaymentKey

__all__ = ["Paid", "Purchase"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Purchase:
    """A payment matched to one of the offers for one resource."""

    key: PaymentKey
    payment: PaymentPayload
    requirements: PaymentRequirements
    resource: str  # the URL path: what the payment is bound to
    resource_url: str  # the URL as sold: what the receipt names
    payer_proven: bool = False  # the request proved the payer: its key, or its payment id


@dataclass(frozen=True, slots=True)
class Paid(Generic[T]):
    """A paid read: the ledger entry (settled or delivered), and the content produced."""

    entry: Entry
    content: T
    replayed: bool  # True when this request did not settle anything itself

    def settle_response(self) -> SettleResponse:
        """The `PAYMENT-RESPONSE` body: the settlement, with the signed receipt attached."""
        receipt = self.entry.receipt
        extensions = (
            {RECEIPT_EXTENSION: receipt_declaration(receipt)} if receipt is not None else None
        )
        return SettleResponse(
            success=True,
            payer=self.entry.key.payer,
            transaction=self.entry.tx_hash or "",
            network=self.entry.network,
            amount=self.entry.amount,
            extensions=extensions,
        )
