"""x402's payment-identifier on the server: one id, one payment.

A payment that carries an id (`agent_pay.protocol.payment_identifier`) binds it, in the
ledger's `payment_ids` table, to the payment's fingerprint (the accepted offer and the signed
payload: what makes two payments the same) and the resource it buys, before anything else is
done with it. The same id again with the same payment goes on as that payment, which the
checkout charges once and answers with the first result; with another payment, or for another
resource, it is refused with 409 `payment_identifier_conflict`, nothing charged.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from anyio import to_thread

from agent_pay.errors import PaymentConflictError
from agent_pay.protocol import PaymentPayload
from agent_pay.protocol.payment_identifier import payment_identifier
from agent_pay.server.ledger import fingerprint
from agent_pay.server.ledger_entry import PaymentKey
from agent_pay.server.refusals import ledger_down
from agent_pay.store.errors import STORE_ERRORS
from agent_pay.store.protocols import PaymentLedger

__all__ = ["PaymentIdentifiers"]


class PaymentIdentifiers:
    """Binds payment identifiers to payments in `ledger`."""

    def __init__(self, ledger: PaymentLedger) -> None:
        self.ledger = ledger

    async def bind(
        self,
        payment: PaymentPayload,
        resource: str,
        key_of: Callable[[PaymentPayload], PaymentKey] | None = None,
    ) -> bool:
        """Bind the id `payment` carries, if any, to it and to `resource` (a URL path). True
        when the id already named this very payment: a retry by whoever made the id (it never
        goes on chain, so knowing it marks the payer's own retry, not a copy from the chain).
        With `key_of` (the payment's ledger key, asked only when there is an id), an id first
        seen once the payment is in the ledger is not bound (`Ledger.bind_payment_id`):
        whoever added it was not the payer.

        Raises:
            MalformedPaymentError: the id is not a valid payment identifier (400).
            PaymentConflictError: the id names another payment or resource (409).
            ChainUnavailableError: `ledger_unavailable`, the ledger cannot be written (503).
        """
        payment_id = payment_identifier(payment)
        if payment_id is None:
            return False
        bind = partial(
            self.ledger.bind_payment_id,
            payment_id,
            fingerprint(payment),
            resource,
            key=key_of(payment) if key_of is not None else None,
        )
        try:
            # A commit with fsync: off the event loop, as the checkout's ledger writes are.
            bound = await to_thread.run_sync(bind)
        except STORE_ERRORS as exc:
            raise ledger_down(exc) from exc
        if bound[0] != fingerprint(payment):
            raise PaymentConflictError(
                f"payment identifier {payment_id!r} already names another payment"
            )
        if bound[1] != resource:
            raise PaymentConflictError(
                f"payment identifier {payment_id!r} already names a payment for another resource"
            )
        return bound[2]
