"""One payment in the ledger: its state, its key, its row (`Entry`) and its fingerprint."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

from agent_pay.protocol import PaymentPayload, PaymentRequirements
from agent_pay.protocol.extensions import SignedReceipt

__all__ = ["IN_FLIGHT", "PAID", "Entry", "PaymentKey", "PaymentState", "fingerprint"]


class PaymentState(StrEnum):
    """Where a payment stands; see the module docstring for the transitions."""

    VERIFIED = "verified"
    SETTLING = "settling"
    SETTLED = "settled"
    DELIVERED = "delivered"
    FAILED = "failed"


IN_FLIGHT: Final = (PaymentState.VERIFIED, PaymentState.SETTLING)
PAID: Final = (PaymentState.SETTLED, PaymentState.DELIVERED)


@dataclass(frozen=True, slots=True)
class PaymentKey:
    """Identifies one payment across retries: the same authorization always has the same key."""

    scheme: str
    payer: str  # checksum address
    payment_id: str  # scheme-specific; for "exact", the nonce as 0x-hex

    def __str__(self) -> str:
        return f"{self.scheme}:{self.payer}:{self.payment_id}"


@dataclass(frozen=True, slots=True)
class Entry:
    """One row of the ledger. The JSON columns are parsed on demand."""

    key: PaymentKey
    resource: str
    resource_url: str
    network: str
    asset: str
    pay_to: str
    amount: int
    requirements_json: str
    payload_json: str
    fingerprint: str
    state: PaymentState
    tx_hash: str | None
    receipt_json: str | None
    error_reason: str | None
    error_message: str | None
    attempts: int
    created_at: float
    updated_at: float
    settled_at: float | None
    delivered_at: float | None

    @property
    def requirements(self) -> PaymentRequirements:
        return PaymentRequirements.from_wire(json.loads(self.requirements_json))

    @property
    def payment(self) -> PaymentPayload:
        return PaymentPayload.from_wire(json.loads(self.payload_json))

    @property
    def receipt(self) -> SignedReceipt | None:
        if self.receipt_json is None:
            return None
        return SignedReceipt.from_wire(json.loads(self.receipt_json))

    @property
    def paid(self) -> bool:
        return self.state in PAID

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary (for tooling and logs), without the payload."""
        return {
            "scheme": self.key.scheme,
            "payer": self.key.payer,
            "paymentId": self.key.payment_id,
            "resource": self.resource,
            "resourceUrl": self.resource_url,
            "network": self.network,
            "asset": self.asset,
            "payTo": self.pay_to,
            "amount": str(self.amount),
            "state": str(self.state),
            "transaction": self.tx_hash,
            "errorReason": self.error_reason,
            "attempts": self.attempts,
            "createdAt": self.created_at,
            "settledAt": self.settled_at,
            "deliveredAt": self.delivered_at,
        }


def fingerprint(payment: PaymentPayload) -> str:
    """What makes two payments "the same payment": the accepted offer and the signed payload.
    (`resource` and `extensions` are descriptive; the resource is bound by the ledger row.)"""
    text = json.dumps(
        {"accepted": payment.accepted.to_wire(), "payload": payment.payload},
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(text.encode()).hexdigest()
