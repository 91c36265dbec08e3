"""Matching the offer a client says it accepted against the offers actually made.

The client echoes the chosen `PaymentRequirements` verbatim as `accepted`. Anything else — a
changed amount, payee, asset or network — is refused, and the reason names the first field
that differs so a client can tell a stale price from a wrong token.
"""

from __future__ import annotations

from collections.abc import Sequence

from agent_pay.errors import PaymentRejectedError, Reason
from agent_pay.protocol.models import PaymentRequirements

__all__ = ["match_offer"]


def match_offer(
    accepted: PaymentRequirements, offers: Sequence[PaymentRequirements]
) -> PaymentRequirements:
    """Return the offer identical to `accepted`, or raise `PaymentRejectedError` explaining why
    none is. Checks narrow down field by field: scheme, network, asset, payee, amount, the rest.
    """
    if accepted in offers:
        return accepted
    same = [o for o in offers if o.scheme == accepted.scheme]
    if not same:
        raise PaymentRejectedError(
            f"scheme {accepted.scheme!r} is not offered for this resource",
            Reason.UNSUPPORTED_SCHEME,
        )
    same = [o for o in same if o.network == accepted.network]
    if not same:
        raise PaymentRejectedError(
            f"network {accepted.network} is not offered for this resource", Reason.NETWORK_MISMATCH
        )
    same = [o for o in same if o.asset == accepted.asset]
    if not same:
        raise PaymentRejectedError(
            f"asset {accepted.asset} is not accepted for this resource", Reason.ASSET_MISMATCH
        )
    offer = same[0]
    if accepted.pay_to != offer.pay_to:
        raise PaymentRejectedError(f"payTo must be {offer.pay_to}", Reason.RECIPIENT_MISMATCH)
    if accepted.amount != offer.amount:
        raise PaymentRejectedError(
            f"amount must be {offer.amount}, not {accepted.amount}", Reason.AMOUNT_MISMATCH
        )
    raise PaymentRejectedError(
        "accepted requirements differ from what was offered", Reason.REQUIREMENTS_MISMATCH
    )
