"""ECDSA signatures as tokens check them: 65 bytes r || s || v, v in {27, 28}, low s.

USDC and OpenZeppelin's ECDSA refuse high-s signatures (EIP-2): for every valid (r, s) the
pair (r, n - s) is valid too, so accepting both would give one payment two spellings. We refuse
them before the chain does, so a payment we accept is one the token will accept.
"""

from __future__ import annotations

from typing import Any, Final

from eth_account import Account
from eth_account.messages import SignableMessage, encode_typed_data

from agent_pay.protocol.exact import SIGNATURE_LENGTH

__all__ = [
    "SECP256K1_N",
    "SIGNATURE_LENGTH",
    "recover_signable",
    "recover_typed_data_signer",
    "split_signature",
]

SECP256K1_N: Final = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


def split_signature(signature: Any) -> tuple[int, int, int]:
    """(v, r, s) of a 65-byte signature.

    Raises:
        ValueError: wrong type or length, v not 27/28, r or s out of range, or s in the high half.
    """
    if not isinstance(signature, bytes) or len(signature) != SIGNATURE_LENGTH:
        raise ValueError(f"signature must be {SIGNATURE_LENGTH} bytes")
    r = int.from_bytes(signature[0:32], "big")
    s = int.from_bytes(signature[32:64], "big")
    v = signature[64]
    if v not in (27, 28):
        raise ValueError("signature v must be 27 or 28")
    if not 0 < r < SECP256K1_N:
        raise ValueError("signature r is out of range")
    if not 0 < s <= SECP256K1_N // 2:
        raise ValueError("signature s is zero or in the high half (not EIP-2 canonical)")
    return v, r, s


def recover_signable(signable: SignableMessage, signature: bytes) -> str:
    """The checksum address that signed `signable`.

    Raises:
        ValueError: if the signature is malformed or recovers no key.
    """
    v, r, s = split_signature(signature)
    try:
        return str(Account.recover_message(signable, vrs=(v, r, s)))
    except Exception as error:
        # Some r are no point's x coordinate; the backend's exception type for that varies.
        raise ValueError(f"signature does not recover a key ({type(error).__name__})") from None


def recover_typed_data_signer(full_message: dict[str, Any], signature: bytes) -> str:
    """The checksum address that signed any full typed-data message (permit, cancel, ...).

    Raises:
        ValueError: if the signature is malformed or the typed data cannot be encoded.
    """
    try:
        signable = encode_typed_data(full_message=full_message)
    except Exception as error:
        raise ValueError(f"typed data cannot be encoded ({type(error).__name__})") from None
    return recover_signable(signable, signature)
