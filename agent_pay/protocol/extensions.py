"""agent-pay's x402 extensions: signed receipts and re-reading a bought article.

Both travel where x402 v2 allows extension data, so stock x402 peers ignore them:

- a paid 200's `PAYMENT-RESPONSE` carries `extensions["agent-pay/receipt"]`: a `SignedReceipt`,
  EIP-712 signed by the server's receipt key, that anyone can check offline;
- a 402's `PAYMENT-REQUIRED` carries `extensions["agent-pay/entitlement"]`: an
  `EntitlementChallenge`, a fresh value the server will accept a proof over for a few minutes;
- to re-read, the agent sends `AGENT-PAY-ENTITLEMENT`: base64 JSON of an `EntitlementProof`,
  its signature over (resource, challenge, expiry, server), made with the key that paid.

Pure wire types, like the rest of `agent_pay.protocol`: what is signed and how is in
`agent_pay.signing.receipt`.
"""

from __future__ import annotations

from typing import Annotated, Final

from pydantic import BeforeValidator

from agent_pay.protocol.base import Address, Amount, Bytes32Hex, Network, WireModel
from agent_pay.protocol.exact import SignatureHex

__all__ = [
    "ENTITLEMENT_EXTENSION",
    "ENTITLEMENT_HEADER",
    "MAX_RESOURCE_LENGTH",
    "NO_TRANSACTION",
    "RECEIPT_EXTENSION",
    "RECEIPT_HEADER",
    "EntitlementChallenge",
    "EntitlementProof",
    "ReceiptClaims",
    "SignedReceipt",
]

RECEIPT_EXTENSION: Final = "agent-pay/receipt"
ENTITLEMENT_EXTENSION: Final = "agent-pay/entitlement"
ENTITLEMENT_HEADER: Final = "AGENT-PAY-ENTITLEMENT"
RECEIPT_HEADER: Final = "AGENT-PAY-RECEIPT"
"""On a re-read (no payment, so no PAYMENT-RESPONSE), the receipt of the original purchase."""

MAX_RESOURCE_LENGTH: Final = 2048
NO_TRANSACTION: Final = "0x" + "00" * 32
"""`transaction` of a receipt for a payment that needed no transaction of its own."""

_UINT64_MAX: Final = 2**64 - 1


def _uint64(value: object) -> int:
    if type(value) is not int or not 0 <= value <= _UINT64_MAX:
        raise ValueError("must be a JSON integer between 0 and 2**64 - 1")
    return value


def _resource(value: object) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= MAX_RESOURCE_LENGTH:
        raise ValueError(f"must be a string of 1 to {MAX_RESOURCE_LENGTH} characters")
    return value


Uint64 = Annotated[int, BeforeValidator(_uint64)]
Resource = Annotated[str, BeforeValidator(_resource)]


class ReceiptClaims(WireModel):
    """What a receipt states: `payer` paid `amount` of `asset` on `network` to `pay_to` for
    `resource`, in `transaction`, as recorded by the server at `issued_at` (unix seconds)."""

    scheme: str
    payer: Address
    pay_to: Address
    resource: Resource  # the resource URL as the server sold it
    amount: Amount
    asset: Address
    network: Network
    transaction: Bytes32Hex
    issued_at: Uint64


class SignedReceipt(ReceiptClaims):
    """A receipt and the server's EIP-712 signature over it; `signer` is the address that
    signed (compare it with the server's published `receiptSigner`, never trust it alone)."""

    signer: Address
    signature: SignatureHex

    def claims(self) -> ReceiptClaims:
        """The signed part."""
        return ReceiptClaims.model_validate(self.model_dump(exclude={"signer", "signature"}))


class EntitlementChallenge(WireModel):
    """A 402's offer to re-read without paying: sign `challenge` (with the key that paid)
    before `expires_at`, for the server whose receipt key is `signer`."""

    challenge: Bytes32Hex
    expires_at: Uint64
    signer: Address


class EntitlementProof(WireModel):
    """The `AGENT-PAY-ENTITLEMENT` header: `payer` proves it holds its key by signing the
    server's challenge for `resource` (the URL path). `receipt` is optional and informative:
    the server decides from its own ledger, so a copied receipt alone reads nothing."""

    payer: Address
    resource: Resource
    challenge: Bytes32Hex
    expires_at: Uint64
    signature: SignatureHex
    receipt: SignedReceipt | None = None
