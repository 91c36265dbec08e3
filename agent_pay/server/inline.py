"""Payments a content server can charge at once, on the event loop, without its ledger.

Most payments go verify → ledger → settle in a worker thread → ledger, because settling moves
money on chain and must happen exactly once across crashes. Some need none of that: a channel
voucher is checked with one signature recovery against cached state and recorded by its own
scheme's store. An `OfferBuilder` that can charge such payments also implements
`InlinePayments`; the server asks it first and takes the ordinary path when it answers None.

A read charged inline earns the free re-read a ledger read earns (by key proof; the scheme
records the purchase itself and answers for it as an
`agent_pay.server.entitlements.EntitlementSource`), but no receipt in its `PAYMENT-RESPONSE`:
signing one would cost more than the rest of the charge. The payer gets the signed receipt by
re-reading: the re-read answers with it (`AGENT-PAY-RECEIPT`).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from agent_pay.protocol import PaymentPayload, PaymentRequirements, SettleResponse

__all__ = ["InlineCharge", "InlinePayments"]


class InlineCharge(Protocol):
    """A read charged inline: paid already, or undone with `release`."""

    def settle_response(self) -> SettleResponse:
        """The `PAYMENT-RESPONSE` body."""
        ...

    def response_header(self) -> str:
        """`settle_response()` encoded as the `PAYMENT-RESPONSE` header value (a scheme may
        build it faster than the model serialises)."""
        ...

    async def release(self) -> None:
        """The read could not be served: undo the charge."""
        ...


@runtime_checkable
class InlinePayments(Protocol):
    """An `OfferBuilder` whose payments can often be charged at once, without I/O."""

    async def charge_inline(
        self,
        payment: PaymentPayload,
        requirements: PaymentRequirements,
        resource: str,
        *,
        url: str | None = None,
    ) -> InlineCharge | None:
        """Charge one read of `resource` (a URL path; `url` as sold, named by the receipt a
        re-read returns) now: on the event loop, with no I/O when the scheme runs in process,
        one round trip to it when it is remote; None when the payment must take the ordinary
        verify-and-settle path. Raises PaymentRejectedError (402) or
        MalformedPaymentError (400)."""
        ...
