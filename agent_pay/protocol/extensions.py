"""agent-pay's x402 extensions: signed receipts and re-reading a bought article.

Both travel where x402 v2 allows extension data, in its `{info, schema}` shape
(`agent_pay.protocol.declaration`), so stock x402 peers ignore them (and echo them):

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

from typing import Annotated, Any, Final

from pydantic import BeforeValidator

from agent_pay.protocol.base import Address, Amount, Bytes32Hex, Network, WireModel
from agent_pay.protocol.declaration import declare, info_of, object_schema
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
    "challenge_info",
    "entitlement_declaration",
    "receipt_declaration",
    "receipt_info",
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


_STRING: Final = {"type": "string"}
# Compact (no patterns): clients echo these schemas in every payment header.
_HEX32 = _ADDRESS = _DECIMAL = _SIGNATURE = _STRING
_UINT64: Final = {"type": "integer"}
ENTITLEMENT_SCHEMA: Final = object_schema(
    {"challenge": _HEX32, "expiresAt": _UINT64, "signer": _ADDRESS},
    ["challenge", "expiresAt", "signer"],
)
RECEIPT_SCHEMA: Final = object_schema(
    {
        "scheme": _STRING,
        "payer": _ADDRESS,
        "payTo": _ADDRESS,
        "resource": _STRING,
        "amount": _DECIMAL,
        "asset": _ADDRESS,
        "network": _STRING,
        "transaction": _HEX32,
        "issuedAt": _UINT64,
        "signer": _ADDRESS,
        "signature": _SIGNATURE,
    },
    [
        "scheme",
        "payer",
        "payTo",
        "resource",
        "amount",
        "asset",
        "network",
        "transaction",
        "issuedAt",
        "signer",
        "signature",
    ],
)


def entitlement_declaration(challenge: EntitlementChallenge) -> dict[str, Any]:
    """The `extensions["agent-pay/entitlement"]` entry of a 402."""
    return declare(challenge.to_wire(), ENTITLEMENT_SCHEMA)


def receipt_declaration(receipt: SignedReceipt) -> dict[str, Any]:
    """The `extensions["agent-pay/receipt"]` entry of a paid answer's `PAYMENT-RESPONSE`."""
    return declare(receipt.to_wire(), RECEIPT_SCHEMA)


def challenge_info(extensions: dict[str, Any] | None) -> Any:
    """The raw challenge of a 402's extensions (to validate), or None."""
    return info_of(extensions, ENTITLEMENT_EXTENSION)


def receipt_info(extensions: dict[str, Any] | None) -> Any:
    """The raw receipt of a `PAYMENT-RESPONSE`'s extensions (to validate), or None."""
    return info_of(extensions, RECEIPT_EXTENSION)
