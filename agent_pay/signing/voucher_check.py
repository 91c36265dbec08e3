"""Voucher signature checks at server speed: one digest and one secp256k1 operation per read.

`recover_voucher_signer` (in `agent_pay.signing.voucher`) returns a checksum address and checks
nothing else. A server checks one voucher per paid read against the channel's known signers, so
this module computes the same EIP-712 digest inline,

    keccak256(0x1901 || domainSeparator || keccak256(VOUCHER_TYPEHASH || channelId || amount))

with the domain separator hashed once (by eth-account, from the same `TokenDomain`), and checks
the signature with libsecp256k1 through coincurve:

- `recover` recovers the signer (about 30 µs): the first voucher of a key, and the fallback;
- `signer_of` verifies the signature against the public keys of the channel's signers learned
  from an earlier recovery (about 25 µs, and no keccak of the key). A verification does not
  look at `v`, so a voucher accepted this way may carry the wrong `v` for `ecrecover`:
  `normalized` fixes it (one recovery) before the voucher is claimed on chain.

tests/test_voucher_check.py checks, with hypothesis, that the digest equals eth-account's
`encode_typed_data` hash and that both checks name the signer eth-account recovers.

Signatures are checked as the channel contract checks them: 65 bytes r || s || v, v 27 or 28,
s in the low half (EIP-2), r and s in range. Verification uses coincurve's low-level binding
(`coincurve._libsecp256k1`) when it is there, and recovery through its public API otherwise.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Sequence
from typing import Any, Final

from coincurve import PublicKey
from eth_hash.auto import keccak
from eth_utils import to_checksum_address

from agent_pay.signing.eip712 import keccak256 as _keccak256
from agent_pay.signing.signature import SECP256K1_N, SIGNATURE_LENGTH
from agent_pay.signing.typed_data import TokenDomain


def _low_level() -> tuple[Any, Any, Any]:
    """coincurve's cffi binding of libsecp256k1 (ffi, lib, context), or Nones without it."""
    try:
        binding = importlib.import_module("coincurve._libsecp256k1")
        context = importlib.import_module("coincurve.context").GLOBAL_CONTEXT
    except (ImportError, AttributeError):  # pragma: no cover - every coincurve we support has it
        return None, None, None
    return binding.ffi, binding.lib, context


_ffi, _lib, _CONTEXT = _low_level()


__all__ = ["VOUCHER_TYPEHASH", "VoucherChecker"]

VOUCHER_TYPEHASH: Final = keccak(b"Voucher(bytes32 channelId,uint256 cumulativeAmount)")
_ZERO: Final = bytes(32)
_N_BYTES: Final = SECP256K1_N.to_bytes(32, "big")
_HALF_N_BYTES: Final = (SECP256K1_N // 2).to_bytes(32, "big")
_CACHE_SIZE: Final = 65_536


class VoucherChecker:
    """Digests and checks vouchers of one channel contract (one EIP-712 domain). Thread-safe."""

    def __init__(self, domain: TokenDomain) -> None:
        self.domain = domain
        self._prefix = b"\x19\x01" + domain.separator()
        # Recovered public key -> address, and address -> key (for verification): a channel's
        # payer signs every read.
        self._addresses: dict[bytes, bytes] = {}
        self._keys: dict[bytes, Any] = {}
        self._scratch = threading.local()

    def digest(self, channel_id: bytes, cumulative_amount: int) -> bytes:
        """The 32-byte EIP-712 digest a voucher signs (the contract's `voucher_digest`)."""
        struct = _keccak256(VOUCHER_TYPEHASH + channel_id + cumulative_amount.to_bytes(32, "big"))
        return _keccak256(self._prefix + struct)

    def recover(self, channel_id: bytes, cumulative_amount: int, signature: bytes) -> bytes:
        """The 20-byte address that signed the voucher.

        A changed field or domain does not raise: it recovers some other address.

        Raises:
            ValueError: the signature is malformed (length, v, r, s range, high s) or recovers
                no key, as the contract would refuse it.
        """
        _check_format(signature)
        return self._recover(self.digest(channel_id, cumulative_amount), signature)

    def recover_checksum(self, channel_id: bytes, cumulative_amount: int, signature: bytes) -> str:
        """`recover` as a checksum address."""
        return str(to_checksum_address(self.recover(channel_id, cumulative_amount, signature)))

    def signer_of(
        self,
        channel_id: bytes,
        cumulative_amount: int,
        signature: bytes,
        signers: Sequence[bytes],
    ) -> bytes | None:
        """Which of `signers` (20-byte addresses) signed the voucher, or None.

        Raises:
            ValueError: the signature is malformed, as for `recover`.
        """
        _check_format(signature)
        digest = self.digest(channel_id, cumulative_amount)
        if _lib is not None:
            for address in signers:
                key = self._keys.get(address)
                if key is not None and self._verify(signature, digest, key):
                    return address
        address = self._recover(digest, signature)
        return address if address in signers else None

    def normalized(
        self, channel_id: bytes, cumulative_amount: int, signature: bytes, signers: Sequence[bytes]
    ) -> bytes:
        """`signature` with the `v` under which `ecrecover` names one of `signers` (a voucher
        accepted by `signer_of` may carry the other one); unchanged if neither does."""
        try:
            if self.recover(channel_id, cumulative_amount, signature) in signers:
                return signature
            flipped = signature[:64] + bytes((55 - signature[64],))  # 27 <-> 28
            if self.recover(channel_id, cumulative_amount, flipped) in signers:
                return flipped
        except ValueError:
            pass
        return signature

    def _recover(self, digest: bytes, signature: bytes) -> bytes:
        try:
            key = PublicKey.from_signature_and_message(
                signature[:64] + bytes((signature[64] - 27,)), digest, hasher=None
            )
        except Exception as error:  # some r are no point's x coordinate
            raise ValueError(f"signature does not recover a key ({type(error).__name__})") from None
        raw = key.format(compressed=False)
        address = self._addresses.get(raw)
        if address is None:
            address = keccak(raw[1:])[12:]
            if len(self._addresses) >= _CACHE_SIZE:
                self._addresses.clear()
                self._keys.clear()
            self._addresses[raw] = address
            self._keys[address] = key.public_key  # the library's parsed key
        return address

    def _verify(self, signature: bytes, digest: bytes, key: Any) -> bool:
        parsed = getattr(self._scratch, "signature", None)
        if parsed is None:
            parsed = self._scratch.signature = _ffi.new("secp256k1_ecdsa_signature *")
        context = _CONTEXT.ctx
        if not _lib.secp256k1_ecdsa_signature_parse_compact(context, parsed, signature[:64]):
            return False
        return bool(_lib.secp256k1_ecdsa_verify(context, parsed, digest, key))


def _check_format(signature: bytes) -> None:
    # r and s are compared as 32-byte big-endian strings: bytes order as the numbers do, and
    # no integers are built (this runs on every paid read).
    if len(signature) != SIGNATURE_LENGTH:
        raise ValueError(f"signature must be {SIGNATURE_LENGTH} bytes")
    if signature[64] not in (27, 28):
        raise ValueError("signature v must be 27 or 28")
    r, s = signature[0:32], signature[32:64]
    if not _ZERO < r < _N_BYTES:
        raise ValueError("signature r is out of range")
    if not _ZERO < s <= _HALF_N_BYTES:
        raise ValueError("signature s is zero or in the high half (not EIP-2 canonical)")
