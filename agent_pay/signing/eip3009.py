"""EIP-3009 (transfer / receive / cancel with authorization): messages, signing, recovery.

The type strings are USDC's, so signatures made here are accepted by USDC-compatible tokens
and stock x402 facilitators. Times and nonces are always arguments; nothing here reads a
clock, and only `random_nonce` draws randomness.

Signing and recovery hash the two authorizations directly (`agent_pay.signing.eip712`): the
same digest as eth-account's `encode_typed_data`, about twenty times sooner.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any, Final

from agent_pay.protocol import ExactEvmAuthorization
from agent_pay.signing._checks import check_address, check_bytes32, check_uint256
from agent_pay.signing.eip712 import Struct, recover_typed, sign_typed, typed_digest
from agent_pay.signing.signer import Signer
from agent_pay.signing.typed_data import Fields, TokenDomain, build_typed_data

__all__ = [
    "CANCEL_AUTHORIZATION_FIELDS",
    "RECEIVE_WITH_AUTHORIZATION_FIELDS",
    "TRANSFER_WITH_AUTHORIZATION_FIELDS",
    "CancelAuthorization",
    "TransferAuthorization",
    "cancel_authorization_typed_data",
    "random_nonce",
    "receive_with_authorization_digest",
    "receive_with_authorization_typed_data",
    "recover_receive_authorizer",
    "recover_transfer_authorizer",
    "sign_receive_authorization",
    "sign_transfer_authorization",
    "transfer_with_authorization_digest",
    "transfer_with_authorization_typed_data",
]

TRANSFER_WITH_AUTHORIZATION_FIELDS: Final[Fields] = [
    {"name": "from", "type": "address"},
    {"name": "to", "type": "address"},
    {"name": "value", "type": "uint256"},
    {"name": "validAfter", "type": "uint256"},
    {"name": "validBefore", "type": "uint256"},
    {"name": "nonce", "type": "bytes32"},
]
RECEIVE_WITH_AUTHORIZATION_FIELDS: Final[Fields] = TRANSFER_WITH_AUTHORIZATION_FIELDS
CANCEL_AUTHORIZATION_FIELDS: Final[Fields] = [
    {"name": "authorizer", "type": "address"},
    {"name": "nonce", "type": "bytes32"},
]
_TRANSFER: Final = Struct("TransferWithAuthorization", TRANSFER_WITH_AUTHORIZATION_FIELDS)
_RECEIVE: Final = Struct("ReceiveWithAuthorization", RECEIVE_WITH_AUTHORIZATION_FIELDS)


@dataclass(frozen=True, slots=True)
class TransferAuthorization:
    """What an EIP-3009 authorization signs: move `value` from `from_` to `to`, once per
    `nonce`, strictly between `valid_after` and `valid_before` (unix seconds)."""

    from_: str
    to: str
    value: int
    valid_after: int
    valid_before: int
    nonce: bytes

    def __post_init__(self) -> None:
        object.__setattr__(self, "from_", check_address(self.from_))
        object.__setattr__(self, "to", check_address(self.to))
        check_uint256("value", self.value)
        check_uint256("valid_after", self.valid_after)
        check_uint256("valid_before", self.valid_before)
        check_bytes32("nonce", self.nonce)

    def to_wire(self) -> ExactEvmAuthorization:
        """The x402 `payload.authorization` object."""
        return ExactEvmAuthorization.model_validate(self.eip712_message())

    @classmethod
    def from_wire(cls, wire: ExactEvmAuthorization) -> TransferAuthorization:
        """Back from the x402 `payload.authorization` object."""
        nonce = bytes.fromhex(wire.nonce[2:])
        return cls(wire.from_, wire.to, wire.value, wire.valid_after, wire.valid_before, nonce)

    def eip712_message(self) -> dict[str, Any]:
        """The typed-data `message` (JSON-ready: the nonce as 0x-hex)."""
        return {
            "from": self.from_,
            "to": self.to,
            "value": self.value,
            "validAfter": self.valid_after,
            "validBefore": self.valid_before,
            "nonce": "0x" + self.nonce.hex(),
        }


@dataclass(frozen=True, slots=True)
class CancelAuthorization:
    """EIP-3009 `cancelAuthorization`: spend `nonce` for `authorizer` so no one else can."""

    authorizer: str
    nonce: bytes

    def __post_init__(self) -> None:
        object.__setattr__(self, "authorizer", check_address(self.authorizer))
        check_bytes32("nonce", self.nonce)

    def eip712_message(self) -> dict[str, Any]:
        """The typed-data `message`."""
        return {"authorizer": self.authorizer, "nonce": "0x" + self.nonce.hex()}


def transfer_with_authorization_typed_data(
    domain: TokenDomain, auth: TransferAuthorization
) -> dict[str, Any]:
    """Full typed data for `transferWithAuthorization` (what x402 "exact" signs)."""
    return build_typed_data(
        domain,
        "TransferWithAuthorization",
        TRANSFER_WITH_AUTHORIZATION_FIELDS,
        auth.eip712_message(),
    )


def receive_with_authorization_typed_data(
    domain: TokenDomain, auth: TransferAuthorization
) -> dict[str, Any]:
    """Full typed data for `receiveWithAuthorization` (only the payee `to` may submit it)."""
    return build_typed_data(
        domain,
        "ReceiveWithAuthorization",
        RECEIVE_WITH_AUTHORIZATION_FIELDS,
        auth.eip712_message(),
    )


def cancel_authorization_typed_data(
    domain: TokenDomain, cancel: CancelAuthorization
) -> dict[str, Any]:
    """Full typed data for `cancelAuthorization`."""
    return build_typed_data(
        domain, "CancelAuthorization", CANCEL_AUTHORIZATION_FIELDS, cancel.eip712_message()
    )


def transfer_with_authorization_digest(domain: TokenDomain, auth: TransferAuthorization) -> bytes:
    """The 32-byte EIP-712 digest of `transfer_with_authorization_typed_data(domain, auth)`."""
    return typed_digest(domain.separator(), _struct_hash(_TRANSFER, auth))


def receive_with_authorization_digest(domain: TokenDomain, auth: TransferAuthorization) -> bytes:
    """The 32-byte EIP-712 digest of `receive_with_authorization_typed_data(domain, auth)`."""
    return typed_digest(domain.separator(), _struct_hash(_RECEIVE, auth))


def _struct_hash(struct: Struct, auth: TransferAuthorization) -> bytes:
    return struct.hash(
        auth.from_, auth.to, auth.value, auth.valid_after, auth.valid_before, auth.nonce
    )


def sign_transfer_authorization(
    signer: Signer, domain: TokenDomain, auth: TransferAuthorization
) -> bytes:
    """Sign `auth` as `transferWithAuthorization`; returns 65 bytes r || s || v.

    Raises:
        ValueError: if `auth.from_` is not the signer's address (the token would refuse it),
            or the signer returned something that is not a canonical signature.
    """
    if auth.from_ != signer.address:
        raise ValueError("the authorization is from another address than the signer's")
    return sign_typed(
        signer,
        transfer_with_authorization_digest(domain, auth),
        lambda: transfer_with_authorization_typed_data(domain, auth),
    )


def sign_receive_authorization(
    signer: Signer, domain: TokenDomain, auth: TransferAuthorization
) -> bytes:
    """Sign `auth` as `receiveWithAuthorization` (only `auth.to` may submit it); 65 bytes.

    Raises:
        ValueError: as `sign_transfer_authorization`.
    """
    if auth.from_ != signer.address:
        raise ValueError("the authorization is from another address than the signer's")
    return sign_typed(
        signer,
        receive_with_authorization_digest(domain, auth),
        lambda: receive_with_authorization_typed_data(domain, auth),
    )


def recover_transfer_authorizer(
    domain: TokenDomain, auth: TransferAuthorization, signature: bytes
) -> str:
    """The checksum address that signed `auth` as `transferWithAuthorization` under `domain`.

    A changed field or domain does not raise: it recovers some other address, so compare the
    result with `auth.from_`.

    Raises:
        ValueError: if the signature is malformed (length, v, r, high s).
    """
    return recover_typed(lambda: transfer_with_authorization_digest(domain, auth), signature)


def recover_receive_authorizer(
    domain: TokenDomain, auth: TransferAuthorization, signature: bytes
) -> str:
    """The checksum address that signed `auth` as `receiveWithAuthorization` under `domain`.

    Raises:
        ValueError: as `recover_transfer_authorizer`.
    """
    return recover_typed(lambda: receive_with_authorization_digest(domain, auth), signature)


def random_nonce() -> bytes:
    """32 bytes from the OS's CSPRNG, for an EIP-3009 nonce."""
    return secrets.token_bytes(32)
