"""Payments a content server can charge at once, on the event loop, without its ledger.

Most payments go verify → ledger → settle in a worker thread → ledger, because settling moves
money on chain and must happen exactly once across crashes. Some need none of that: a channel
voucher is checked with one signature recovery against cached state and recorded by its own
scheme's store. An `OfferBuilder` that can charge such payments also implements
`InlinePayments`; the server asks it first and takes the ordinary path when it answers None.

A read charged inline earns what a ledger read earns: a signed receipt (the server signs
`receipt_claims()` once the content is produced) and a free re-read by key proof, which the
scheme records itself and answers for as an `agent_pay.server.entitlements.EntitlementSource`.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from agent_pay.protocol import PaymentPayload, PaymentRequirements, SettleResponse
from agent_pay.protocol.extensions import ReceiptClaims

__all__ = ["InlineCharge", "InlinePayments"]


class InlineCharge(Protocol):
    """A read charged inline: paid already, or undone with `release`."""

    def receipt_claims(self) -> ReceiptClaims:
        """What this read's receipt states. The same for a replay of the same payment, so a
        replay gets the same receipt."""
        ...

    def settle_response(self, receipt: dict[str, Any] | None = None) -> SettleResponse:
        """The `PAYMENT-RESPONSE` body, with `receipt` (the signed receipt, in its wire form)
        in its extensions if given."""
        ...

    def response_header(self, receipt: dict[str, Any] | None = None) -> str:
        """`settle_response(receipt)` encoded as the `PAYMENT-RESPONSE` header value (a scheme
        may build it faster than the model serialises)."""
        ...

    def release(self) -> None:
        """The read could not be served: undo the charge."""
        ...


@runtime_checkable
class InlinePayments(Protocol):
    """An `OfferBuilder` whose payments can often be charged at once, without I/O."""

    def charge_inline(
        self,
        payment: PaymentPayload,
        requirements: PaymentRequirements,
        resource: str,
        *,
        url: str | None = None,
    ) -> InlineCharge | None:
        """Charge one read of `resource` (a URL path; `url` as sold, named by its receipt)
        now, on the event loop (pure CPU, no I/O); None when the payment must take the
        ordinary verify-and-settle path. Raises PaymentRejectedError (402) or
        MalformedPaymentError (400)."""
        ...
