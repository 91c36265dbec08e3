"""What makes an "exact" payment acceptable, apart from the chain's state: it accepts the offer
it is checked against, in a token settled here, pays the offer's payee its price, is signed by
its payer, and is valid now with time to settle. `ExactEvmScheme` checks these first (cheap:
one signature recovery), then the chain.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from agent_pay.chain.stablecoin import Stablecoin
from agent_pay.errors import PaymentRejectedError, Reason
from agent_pay.protocol import PaymentPayload, PaymentRequirements
from agent_pay.protocol.matching import match_offer
from agent_pay.signing import TokenDomain, TransferAuthorization, recover_transfer_authorizer

__all__ = [
    "SCHEME",
    "VALIDITY_MARGIN",
    "CheckedPayment",
    "check_payment",
    "check_window",
    "token_domain",
]

SCHEME = "exact"
VALIDITY_MARGIN = 6
"""Seconds an authorization must still be valid for when verified: settlement needs a block."""


@dataclass(frozen=True, slots=True)
class CheckedPayment:
    """A payment that passed `check_payment`: its token, authorization and signature."""

    token: Stablecoin
    auth: TransferAuthorization
    signature: bytes


def check_payment(
    payment: PaymentPayload,
    requirements: PaymentRequirements,
    tokens: Mapping[str, Stablecoin],
    network: str,
) -> CheckedPayment:
    """Everything but time and chain state: offer, token (one of `tokens`, by address, on
    `network`), fields, signature.

    Raises PaymentRejectedError with the reason (MalformedPaymentError for an unreadable
    payload).
    """
    if requirements.scheme != SCHEME:
        raise PaymentRejectedError(
            f"this facilitator settles scheme {SCHEME!r} only", Reason.UNSUPPORTED_SCHEME
        )
    if requirements.network != network:
        raise PaymentRejectedError(
            f"this facilitator settles on {network} only", Reason.NETWORK_MISMATCH
        )
    match_offer(payment.accepted, [requirements])
    token = tokens.get(requirements.asset)
    if token is None:
        raise PaymentRejectedError(
            f"asset {requirements.asset} is not settled here", Reason.ASSET_MISMATCH
        )
    domain = token_domain(token)
    if requirements.extra.get("name") != domain.name or (
        requirements.extra.get("version") != domain.version
    ):
        raise PaymentRejectedError(
            "extra.name/extra.version do not match the token's EIP-712 domain",
            Reason.REQUIREMENTS_MISMATCH,
        )
    exact = payment.exact_evm()
    auth = TransferAuthorization.from_wire(exact.authorization)
    if auth.to != requirements.pay_to:
        raise PaymentRejectedError(
            f"authorization pays {auth.to}, not {requirements.pay_to}",
            Reason.RECIPIENT_MISMATCH,
        )
    if auth.value != requirements.amount:
        raise PaymentRejectedError(
            f"authorization value {auth.value} is not the price {requirements.amount}",
            Reason.AMOUNT_MISMATCH,
        )
    signature = bytes.fromhex(exact.signature[2:])
    try:
        signer = recover_transfer_authorizer(domain, auth, signature)
    except ValueError as exc:
        raise PaymentRejectedError(f"bad signature: {exc}", Reason.INVALID_SIGNATURE) from None
    if signer != auth.from_:
        raise PaymentRejectedError(
            "signature is not from the payer (signed by another key, or over other fields)",
            Reason.INVALID_SIGNATURE,
        )
    return CheckedPayment(token, auth, signature)


def check_window(auth: TransferAuthorization, now: int) -> None:
    """`auth` is valid at `now` and for `VALIDITY_MARGIN` seconds more (settling takes a block).

    Raises PaymentRejectedError with the reason.
    """
    if auth.valid_after >= now:
        raise PaymentRejectedError(
            f"authorization is not valid before {auth.valid_after} (now {now})",
            Reason.VALID_AFTER_FUTURE,
        )
    if auth.valid_before <= now + VALIDITY_MARGIN:
        raise PaymentRejectedError(
            f"authorization expires at {auth.valid_before}, too soon to settle (now {now})",
            Reason.VALID_BEFORE_EXPIRED,
        )


def token_domain(token: Stablecoin) -> TokenDomain:
    """The EIP-712 domain `token` checks authorizations under."""
    asset = token.asset
    return TokenDomain(asset.eip712_name, asset.eip712_version, asset.chain_id, asset.address)
