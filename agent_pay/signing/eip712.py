"""EIP-712 digests of flat structs, computed directly, and signing and recovery over them.

eth-account's `encode_typed_data` handles any typed data and is pure Python: about 400 µs a
message, ten times the secp256k1 operation it feeds. Every struct agent-pay signs per read is
flat (addresses, integers, strings, bytes32), so its digest is short to state,

    keccak256(0x1901 || domainSeparator || keccak256(typeHash || enc(field) || ...))

with an address left-padded to 32 bytes, an integer as 32 bytes big-endian, a bytes32 as is and
a string as the keccak256 of its UTF-8. `Struct` computes that from the same field lists the
typed data is built from; domain separators stay eth-account's, hashed once per domain.

`sign_typed` signs the digest directly when the signer holds its key (`HashSigner`) and gives
the full typed data to any other signer; `recover_typed` recovers with libsecp256k1 through
coincurve. Signatures and recovered addresses are byte for byte eth-account's:
tests/test_fast_eip712.py checks it with hypothesis.

This is a measured exception to "never hand-roll EIP-712" (STYLE.md): the types, field lists
and domain separators are still eth-account's, only the flat-struct hashing is done here, and it
is held to eth-account's output by property tests rather than trusted.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, Final

from coincurve import PublicKey
from eth_account.messages import hash_domain  # type: ignore[attr-defined]
from eth_hash.auto import keccak

from agent_pay.protocol import normalize_address
from agent_pay.signing.signature import split_signature
from agent_pay.signing.signer import Signer
from agent_pay.signing.typed_data import Fields

__all__ = ["Struct", "domain_separator", "keccak256", "recover_typed", "sign_typed", "typed_digest"]


def _pysha3() -> Callable[[bytes], bytes] | None:
    """safe-pysha3's keccak-256 (a declared dependency), a C extension: about 0.7 µs a hash,
    twice as fast as going through pycryptodome and 5x eth-hash's default, which builds a hash
    object in Python each time. None if it is missing or disagrees with eth-hash."""
    try:
        module: Any = importlib.import_module("sha3")
    except ImportError:  # pragma: no cover - installed with agent-pay
        return None
    new = module.keccak_256

    def hash_(data: bytes) -> bytes:
        return bytes(new(data).digest())

    return hash_ if hash_(b"") == keccak(b"") else None


keccak256: Final[Callable[[bytes], bytes]] = _pysha3() or keccak
"""keccak256 of `data`, thread-safe."""

_ZERO_PAD: Final = bytes(12)


def _address(value: object) -> bytes:
    # Callers pass checksum addresses their dataclasses or wire models already checked.
    if isinstance(value, str) and len(value) == 42 and value[:2] in ("0x", "0X"):
        return _ZERO_PAD + bytes.fromhex(value[2:])
    raise ValueError("an address must be 0x followed by 40 hex digits")


def _bytes32(value: object) -> bytes:
    if isinstance(value, bytes) and len(value) == 32:
        return value
    if isinstance(value, str) and len(value) == 66 and value[:2] in ("0x", "0X"):
        return bytes.fromhex(value[2:])
    raise ValueError("a bytes32 must be 32 bytes or 0x followed by 64 hex digits")


def _string(value: object) -> bytes:
    if not isinstance(value, str):
        raise ValueError("a string field must be a str")
    return keccak256(value.encode("utf-8"))


def _uint(bits: int) -> Callable[[object], bytes]:
    limit = 1 << bits

    def encode(value: object) -> bytes:
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < limit:
            raise ValueError(f"a uint{bits} must be an int between 0 and 2**{bits} - 1")
        return value.to_bytes(32, "big")

    return encode


def _encoder(type_: str) -> Callable[[object], bytes]:
    if type_ == "address":
        return _address
    if type_ == "bytes32":
        return _bytes32
    if type_ == "string":
        return _string
    bits = type_.removeprefix("uint")
    if bits != type_ and bits.isdigit() and 8 <= int(bits) <= 256 and int(bits) % 8 == 0:
        return _uint(int(bits))
    raise ValueError(f"EIP-712 type {type_!r} is not supported here (flat structs only)")


class Struct:
    """A flat EIP-712 struct type (address, uintN, bytes32 and string fields): `hash(*values)`
    is its `hashStruct`, the values in field order."""

    __slots__ = ("_encoders", "name", "typehash")

    def __init__(self, name: str, fields: Fields) -> None:
        members = ",".join(f"{field['type']} {field['name']}" for field in fields)
        self.name = name
        self.typehash: bytes = keccak256(f"{name}({members})".encode())
        self._encoders = tuple(_encoder(field["type"]) for field in fields)

    def hash(self, *values: object) -> bytes:
        """keccak256(typeHash || enc(value) || ...).

        Raises:
            ValueError: a value of the wrong type or out of range, or not one per field.
        """
        words = b"".join(
            encode(value) for encode, value in zip(self._encoders, values, strict=True)
        )
        return keccak256(self.typehash + words)


def domain_separator(domain: dict[str, Any]) -> bytes:
    """eth-account's hash of an EIP-712 domain given as typed data's `domain` member (the domain
    type is inferred from the keys). Hash a fixed domain once, not per message."""
    return bytes(hash_domain(domain))


def typed_digest(separator: bytes, struct_hash: bytes) -> bytes:
    """The 32-byte EIP-712 digest: keccak256(0x1901 || separator || struct_hash)."""
    return keccak256(b"\x19\x01" + separator + struct_hash)


def sign_typed(signer: Signer, digest: bytes, typed_data: Callable[[], dict[str, Any]]) -> bytes:
    """Sign typed data whose digest is `digest`: the digest itself when `signer` holds its key
    (has `unsafe_sign_hash`), else the full typed data `typed_data()` builds. 65 bytes r || s ||
    v either way, the same bytes for a local key.

    Raises:
        ValueError: if the signer returned something that is not a canonical signature.
    """
    # getattr, not isinstance(signer, HashSigner): a runtime protocol check costs 13 µs.
    sign_hash: Callable[[bytes], bytes] | None = getattr(signer, "unsafe_sign_hash", None)
    signature = sign_hash(digest) if sign_hash is not None else signer.sign_typed_data(typed_data())
    split_signature(signature)  # a signer returning junk is caught here, not on-chain
    return signature


def recover_typed(digest: Callable[[], bytes], signature: bytes) -> str:
    """The checksum address that signed the typed data whose digest `digest()` computes.

    Raises:
        ValueError: if the signature is malformed (length, v, r, high s) or recovers no key, or
            the typed data cannot be encoded; with the messages `recover_typed_data_signer`
            gives.
    """
    try:
        message_hash = digest()
    except Exception as error:
        raise ValueError(f"typed data cannot be encoded ({type(error).__name__})") from None
    v, _, _ = split_signature(signature)
    try:
        key = PublicKey.from_signature_and_message(
            signature[:64] + bytes((v - 27,)), message_hash, hasher=None
        )
    except Exception as error:  # some r are no point's x coordinate
        raise ValueError(f"signature does not recover a key ({type(error).__name__})") from None
    # normalize_address caches checksums; the payer's is usually there from its wire model.
    return normalize_address("0x" + keccak256(key.format(compressed=False)[1:])[12:].hex())
