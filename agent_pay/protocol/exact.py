"""The `payload` of the x402 "exact" scheme on EVM: an EIP-3009 authorization and its signature.

Every field is a string on the wire (stock x402 writes value and the two times as decimal
strings); in Python the amounts and times are ints.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import BeforeValidator, Field

from agent_pay.protocol.base import Address, Amount, Bytes32Hex, WireModel

__all__ = ["SIGNATURE_LENGTH", "ExactEvmAuthorization", "ExactEvmPayload"]

SIGNATURE_LENGTH = 65
"""An ECDSA signature as r || s || v: 32 + 32 + 1 bytes."""

_SIGNATURE_HEX = re.compile(rf"0x[0-9a-fA-F]{{{2 * SIGNATURE_LENGTH}}}")


def _parse_signature(value: object) -> str:
    # Only plain 65-byte EOA signatures: smart-wallet (ERC-1271 / ERC-6492) signatures are longer
    # and need an on-chain check we do not offer.
    if not isinstance(value, str) or not _SIGNATURE_HEX.fullmatch(value):
        raise ValueError("must be 0x followed by 130 hex digits (a 65-byte signature)")
    return value.lower()


SignatureHex = Annotated[str, BeforeValidator(_parse_signature)]


class ExactEvmAuthorization(WireModel):
    """The EIP-3009 `TransferWithAuthorization` fields, exactly as they are signed.

    `valid_after` < now < `valid_before` (unix seconds) bounds when the token accepts it;
    `nonce` is 32 random bytes chosen by the payer and usable once per payer.
    """

    from_: Address = Field(alias="from")
    to: Address
    value: Amount
    valid_after: Amount
    valid_before: Amount
    nonce: Bytes32Hex


class ExactEvmPayload(WireModel):
    """`PaymentPayload.payload` for scheme "exact" on an EVM network."""

    signature: SignatureHex
    authorization: ExactEvmAuthorization
