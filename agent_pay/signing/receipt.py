"""EIP-712 for agent-pay's receipts and re-read proofs.

A receipt is signed by the server's receipt key::

    EIP712Domain(string name,string version)                  name "agent-pay receipt", "1"
    Receipt(string scheme,address payer,address payTo,string resource,uint256 amount,
            address asset,string network,bytes32 transaction,uint64 issuedAt)

A re-read proof is signed by the payer's key, over a challenge the server issued::

    EIP712Domain(string name,string version)                  name "agent-pay entitlement", "1"
    ReadProof(string resource,bytes32 challenge,uint64 expiresAt,address server)

Neither domain names a chain or a contract: these signatures are checked by software, never by
a contract, and a receipt states its network in the message itself. Different domain names keep
a receipt from ever being read as a proof and the other way round.

Both are signed and checked on every read, so both are hashed directly
(`agent_pay.signing.eip712`): the same digests as eth-account's `encode_typed_data`, sooner.
"""

from __future__ import annotations

from typing import Any, Final

from agent_pay.protocol.extensions import ReceiptClaims, SignedReceipt
from agent_pay.signing._checks import check_address, check_bytes32
from agent_pay.signing.eip712 import (
    Struct,
    domain_separator,
    recover_typed,
    sign_typed,
    typed_digest,
)
from agent_pay.signing.signer import Signer
from agent_pay.signing.typed_data import Fields

__all__ = [
    "PROOF_DOMAIN",
    "READ_PROOF_FIELDS",
    "RECEIPT_DOMAIN",
    "RECEIPT_FIELDS",
    "read_proof_digest",
    "read_proof_typed_data",
    "receipt_digest",
    "receipt_typed_data",
    "recover_read_proof_signer",
    "recover_receipt_signer",
    "sign_read_proof",
    "sign_receipt",
]

_DOMAIN_FIELDS: Final[Fields] = [
    {"name": "name", "type": "string"},
    {"name": "version", "type": "string"},
]
RECEIPT_DOMAIN: Final = {"name": "agent-pay receipt", "version": "1"}
PROOF_DOMAIN: Final = {"name": "agent-pay entitlement", "version": "1"}

RECEIPT_FIELDS: Final[Fields] = [
    {"name": "scheme", "type": "string"},
    {"name": "payer", "type": "address"},
    {"name": "payTo", "type": "address"},
    {"name": "resource", "type": "string"},
    {"name": "amount", "type": "uint256"},
    {"name": "asset", "type": "address"},
    {"name": "network", "type": "string"},
    {"name": "transaction", "type": "bytes32"},
    {"name": "issuedAt", "type": "uint64"},
]
READ_PROOF_FIELDS: Final[Fields] = [
    {"name": "resource", "type": "string"},
    {"name": "challenge", "type": "bytes32"},
    {"name": "expiresAt", "type": "uint64"},
    {"name": "server", "type": "address"},
]
_RECEIPT: Final = Struct("Receipt", RECEIPT_FIELDS)
_READ_PROOF: Final = Struct("ReadProof", READ_PROOF_FIELDS)
_RECEIPT_SEPARATOR: Final = domain_separator(RECEIPT_DOMAIN)
_PROOF_SEPARATOR: Final = domain_separator(PROOF_DOMAIN)


def _typed(domain: dict[str, str], primary: str, fields: Fields, message: dict[str, Any]) -> Any:
    return {
        "types": {"EIP712Domain": _DOMAIN_FIELDS, primary: fields},
        "primaryType": primary,
        "domain": dict(domain),
        "message": message,
    }


def receipt_typed_data(claims: ReceiptClaims) -> dict[str, Any]:
    """Full typed data for a receipt."""
    message = {
        "scheme": claims.scheme,
        "payer": claims.payer,
        "payTo": claims.pay_to,
        "resource": claims.resource,
        "amount": claims.amount,
        "asset": claims.asset,
        "network": claims.network,
        "transaction": claims.transaction,
        "issuedAt": claims.issued_at,
    }
    typed: dict[str, Any] = _typed(RECEIPT_DOMAIN, "Receipt", RECEIPT_FIELDS, message)
    return typed


def receipt_digest(claims: ReceiptClaims) -> bytes:
    """The 32-byte EIP-712 digest of `receipt_typed_data(claims)`."""
    struct_hash = _RECEIPT.hash(
        claims.scheme,
        claims.payer,
        claims.pay_to,
        claims.resource,
        claims.amount,
        claims.asset,
        claims.network,
        claims.transaction,
        claims.issued_at,
    )
    return typed_digest(_RECEIPT_SEPARATOR, struct_hash)


def sign_receipt(signer: Signer, claims: ReceiptClaims) -> SignedReceipt:
    """`claims` signed by `signer` (the server's receipt key)."""
    signature = sign_typed(signer, receipt_digest(claims), lambda: receipt_typed_data(claims))
    return SignedReceipt(
        **claims.model_dump(), signer=signer.address, signature="0x" + signature.hex()
    )


def recover_receipt_signer(receipt: SignedReceipt) -> str:
    """The address whose key signed `receipt` (compare it with the server's published one).

    Raises:
        ValueError: if the signature is malformed.
    """
    signature = bytes.fromhex(receipt.signature[2:])
    # A SignedReceipt is its claims plus two fields the digest does not read.
    return recover_typed(lambda: receipt_digest(receipt), signature)


def read_proof_typed_data(
    resource: str, challenge: bytes, expires_at: int, server: str
) -> dict[str, Any]:
    """Full typed data for a re-read proof over `challenge` for `resource` (a URL path) at the
    server whose receipt address is `server`."""
    check_bytes32("challenge", challenge)
    message = {
        "resource": resource,
        "challenge": "0x" + challenge.hex(),
        "expiresAt": expires_at,
        "server": check_address(server),
    }
    typed: dict[str, Any] = _typed(PROOF_DOMAIN, "ReadProof", READ_PROOF_FIELDS, message)
    return typed


def _proof_values(
    resource: str, challenge: bytes, expires_at: int, server: str
) -> tuple[object, ...]:
    check_bytes32("challenge", challenge)
    return resource, challenge, expires_at, check_address(server)


def read_proof_digest(resource: str, challenge: bytes, expires_at: int, server: str) -> bytes:
    """The 32-byte EIP-712 digest of `read_proof_typed_data(...)` with the same arguments."""
    values = _proof_values(resource, challenge, expires_at, server)
    return typed_digest(_PROOF_SEPARATOR, _READ_PROOF.hash(*values))


def sign_read_proof(
    signer: Signer, resource: str, challenge: bytes, expires_at: int, server: str
) -> bytes:
    """The payer's signature proving it holds its key, for one challenge."""
    return sign_typed(
        signer,
        read_proof_digest(resource, challenge, expires_at, server),
        lambda: read_proof_typed_data(resource, challenge, expires_at, server),
    )


def recover_read_proof_signer(
    resource: str, challenge: bytes, expires_at: int, server: str, signature: bytes
) -> str:
    """The address that signed a re-read proof.

    Raises:
        ValueError: if the signature is malformed.
    """
    values = _proof_values(resource, challenge, expires_at, server)  # raises as the typed data
    return recover_typed(
        lambda: typed_digest(_PROOF_SEPARATOR, _READ_PROOF.hash(*values)), signature
    )
