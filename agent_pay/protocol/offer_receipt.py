"""x402's `offer-receipt` extension: offers and receipts signed by the resource server.

A 402 carries `extensions["offer-receipt"].info.offers`: for each entry of `accepts`, a
`SignedOffer` committing the server to its terms until `validUntil`; a paid 200's
`PAYMENT-RESPONSE` carries `extensions["offer-receipt"].info.receipt`, a `SignedX402Receipt`
saying that `payer` paid for `resourceUrl`. Both are EIP-712 (`format: "eip712"`) under the
domains ("x402 offer" | "x402 receipt", "1", chainId 1), with the spec's types, which are never
sent: `agent_pay.signing.offer_receipt`. This is x402's portable receipt; agent-pay's own,
richer one (`agent-pay/receipt`: amount, asset, payee) travels beside it.

Pure wire types. The payload fields are typed as EIP-712 types them: `asset`, `payTo` and
`amount` are strings, `version`, `validUntil` and `issuedAt` integers.
"""

from __future__ import annotations

from typing import Any, Final

from agent_pay.protocol.base import NonNegativeInt, WireModel
from agent_pay.protocol.declaration import declare, object_schema
from agent_pay.protocol.exact import SignatureHex

__all__ = [
    "EIP712_FORMAT",
    "OFFER_RECEIPT",
    "PAYLOAD_VERSION",
    "OfferPayload",
    "ReceiptPayload",
    "SignedOffer",
    "SignedX402Receipt",
    "offers_declaration",
    "receipt_declaration",
]

OFFER_RECEIPT: Final = "offer-receipt"
EIP712_FORMAT: Final = "eip712"
PAYLOAD_VERSION: Final = 1


class OfferPayload(WireModel):
    """The signed terms of one entry of `accepts`."""

    version: NonNegativeInt = PAYLOAD_VERSION
    resource_url: str
    scheme: str
    network: str
    asset: str
    pay_to: str
    amount: str
    valid_until: NonNegativeInt = 0  # 0: no expiry


class ReceiptPayload(WireModel):
    """What a receipt states: `payer` paid for `resource_url` on `network`."""

    version: NonNegativeInt = PAYLOAD_VERSION
    network: str
    resource_url: str
    payer: str
    issued_at: NonNegativeInt
    transaction: str = ""  # "": left out (x402's privacy-minimal default)


class SignedOffer(WireModel):
    """An offer and the server's signature; `acceptIndex` points into `accepts` (unsigned)."""

    format: str = EIP712_FORMAT
    accept_index: NonNegativeInt | None = None
    payload: OfferPayload
    signature: SignatureHex


class SignedX402Receipt(WireModel):
    """A receipt and the server's signature."""

    format: str = EIP712_FORMAT
    payload: ReceiptPayload
    signature: SignatureHex


def _artifact_schema(payload: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "format": {"type": "string", "const": EIP712_FORMAT},
            "payload": {"type": "object", "properties": payload, "required": required},
            "signature": {"type": "string"},
        },
        "required": ["format", "payload", "signature"],
    }


_STRING: Final = {"type": "string"}
_INTEGER: Final = {"type": "integer"}
_OFFER_FIELDS: Final = {
    "version": _INTEGER,
    "resourceUrl": _STRING,
    "scheme": _STRING,
    "network": _STRING,
    "asset": _STRING,
    "payTo": _STRING,
    "amount": _STRING,
    "validUntil": _INTEGER,
}
_RECEIPT_FIELDS: Final = {
    "version": _INTEGER,
    "network": _STRING,
    "resourceUrl": _STRING,
    "payer": _STRING,
    "issuedAt": _INTEGER,
    "transaction": _STRING,
}


def offers_declaration(offers: list[SignedOffer]) -> dict[str, Any]:
    """The `extensions["offer-receipt"]` entry of a 402."""
    item = _artifact_schema(_OFFER_FIELDS, [k for k in _OFFER_FIELDS if k != "validUntil"])
    item["properties"]["acceptIndex"] = _INTEGER
    schema = object_schema({"offers": {"type": "array", "items": item}}, ["offers"])
    return declare({"offers": [o.to_wire() for o in offers]}, schema)


def receipt_declaration(receipt: SignedX402Receipt) -> dict[str, Any]:
    """The `extensions["offer-receipt"]` entry of a paid answer's `PAYMENT-RESPONSE`."""
    item = _artifact_schema(_RECEIPT_FIELDS, [k for k in _RECEIPT_FIELDS if k != "transaction"])
    schema = object_schema({"receipt": item}, ["receipt"])
    return declare({"receipt": receipt.to_wire()}, schema)
