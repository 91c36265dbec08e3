"""EIP-712 for x402's offer-receipt extension: the server signs its offers and receipts.

The spec's types, which are not sent on the wire (x402 `extension-offer-and-receipt.md`)::

    EIP712Domain(string name,string version,uint256 chainId)   ("x402 offer" | "x402 receipt",
                                                                "1", 1)
    Offer(uint256 version,string resourceUrl,string scheme,string network,string asset,
          string payTo,string amount,uint256 validUntil)
    Receipt(uint256 version,string network,string resourceUrl,string payer,uint256 issuedAt,
            string transaction)

The chain id is always 1: these are off-chain statements; the payload names its network. The
payload is signed exactly as transmitted. A signer that holds its key signs the digest computed
by `agent_pay.signing.eip712` (a flat struct: about 0.1 ms instead of eth-account's 0.5 ms per
receipt, every paid read pays it); any other signer gets the full typed data. The digests are
held equal to eth-account's `encode_typed_data` by the tests.
"""

from __future__ import annotations

from typing import Any, Final

from agent_pay.protocol.offer_receipt import (
    OfferPayload,
    ReceiptPayload,
    SignedOffer,
    SignedX402Receipt,
)
from agent_pay.signing.eip712 import Struct, domain_separator, sign_typed, typed_digest
from agent_pay.signing.signature import recover_typed_data_signer
from agent_pay.signing.signer import Signer
from agent_pay.signing.typed_data import Fields

__all__ = [
    "OFFER_DOMAIN",
    "OFFER_FIELDS",
    "X402_RECEIPT_DOMAIN",
    "X402_RECEIPT_FIELDS",
    "offer_digest",
    "offer_typed_data",
    "recover_offer_signer",
    "recover_x402_receipt_signer",
    "sign_offer",
    "sign_x402_receipt",
    "x402_receipt_digest",
    "x402_receipt_typed_data",
]

_DOMAIN_FIELDS: Final[Fields] = [
    {"name": "name", "type": "string"},
    {"name": "version", "type": "string"},
    {"name": "chainId", "type": "uint256"},
]
OFFER_DOMAIN: Final = {"name": "x402 offer", "version": "1", "chainId": 1}
X402_RECEIPT_DOMAIN: Final = {"name": "x402 receipt", "version": "1", "chainId": 1}
OFFER_FIELDS: Final[Fields] = [
    {"name": "version", "type": "uint256"},
    {"name": "resourceUrl", "type": "string"},
    {"name": "scheme", "type": "string"},
    {"name": "network", "type": "string"},
    {"name": "asset", "type": "string"},
    {"name": "payTo", "type": "string"},
    {"name": "amount", "type": "string"},
    {"name": "validUntil", "type": "uint256"},
]
X402_RECEIPT_FIELDS: Final[Fields] = [
    {"name": "version", "type": "uint256"},
    {"name": "network", "type": "string"},
    {"name": "resourceUrl", "type": "string"},
    {"name": "payer", "type": "string"},
    {"name": "issuedAt", "type": "uint256"},
    {"name": "transaction", "type": "string"},
]

_OFFER: Final = Struct("Offer", OFFER_FIELDS)
_OFFER_SEPARATOR: Final = domain_separator(OFFER_DOMAIN)
_X402_RECEIPT: Final = Struct("Receipt", X402_RECEIPT_FIELDS)
_X402_RECEIPT_SEPARATOR: Final = domain_separator(X402_RECEIPT_DOMAIN)


def _digest(struct: Struct, separator: bytes, fields: Fields, message: dict[str, Any]) -> bytes:
    return typed_digest(separator, struct.hash(*(message[field["name"]] for field in fields)))


def offer_digest(payload: OfferPayload) -> bytes:
    """The EIP-712 digest of an offer."""
    return _digest(_OFFER, _OFFER_SEPARATOR, OFFER_FIELDS, payload.to_wire())


def x402_receipt_digest(payload: ReceiptPayload) -> bytes:
    """The EIP-712 digest of an x402 receipt."""
    return _digest(_X402_RECEIPT, _X402_RECEIPT_SEPARATOR, X402_RECEIPT_FIELDS, payload.to_wire())


def _typed(primary: str, fields: Fields, domain: dict[str, Any], message: dict[str, Any]) -> Any:
    return {
        "types": {"EIP712Domain": _DOMAIN_FIELDS, primary: fields},
        "primaryType": primary,
        "domain": dict(domain),
        "message": message,
    }


def offer_typed_data(payload: OfferPayload) -> dict[str, Any]:
    """The full typed data of an offer (for eth-account's `encode_typed_data`)."""
    typed: dict[str, Any] = _typed("Offer", OFFER_FIELDS, OFFER_DOMAIN, payload.to_wire())
    return typed


def x402_receipt_typed_data(payload: ReceiptPayload) -> dict[str, Any]:
    """The full typed data of an x402 receipt."""
    typed: dict[str, Any] = _typed(
        "Receipt", X402_RECEIPT_FIELDS, X402_RECEIPT_DOMAIN, payload.to_wire()
    )
    return typed


def sign_offer(signer: Signer, payload: OfferPayload, accept_index: int | None) -> SignedOffer:
    """`payload` signed by `signer`, pointing at `accepts[accept_index]`."""
    signature = sign_typed(signer, offer_digest(payload), lambda: offer_typed_data(payload))
    return SignedOffer(accept_index=accept_index, payload=payload, signature="0x" + signature.hex())


def sign_x402_receipt(signer: Signer, payload: ReceiptPayload) -> SignedX402Receipt:
    """`payload` signed by `signer`."""
    signature = sign_typed(
        signer, x402_receipt_digest(payload), lambda: x402_receipt_typed_data(payload)
    )
    return SignedX402Receipt(payload=payload, signature="0x" + signature.hex())


def recover_offer_signer(offer: SignedOffer) -> str:
    """The address that signed `offer`. Raises ValueError for a malformed signature."""
    return recover_typed_data_signer(
        offer_typed_data(offer.payload), bytes.fromhex(offer.signature[2:])
    )


def recover_x402_receipt_signer(receipt: SignedX402Receipt) -> str:
    """The address that signed `receipt`. Raises ValueError for a malformed signature."""
    return recover_typed_data_signer(
        x402_receipt_typed_data(receipt.payload), bytes.fromhex(receipt.signature[2:])
    )
