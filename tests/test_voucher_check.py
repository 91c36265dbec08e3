"""The fast voucher digest and recovery (signing.voucher_check) against eth-account and the
contract's rules."""

from __future__ import annotations

from typing import Any

import pytest
from eth_account.messages import encode_typed_data
from eth_utils import keccak
from hypothesis import given, settings
from hypothesis import strategies as st

from agent_pay.signing import LocalSigner
from agent_pay.signing.voucher import (
    Voucher,
    recover_voucher_signer,
    sign_voucher,
    voucher_digest,
    voucher_domain,
    voucher_typed_data,
)
from agent_pay.signing.voucher_check import VoucherChecker
from tests._channel_parts import _KEYS

# -- the fast digest and recovery --------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    channel=st.binary(min_size=32, max_size=32),
    cumulative=st.integers(0, 2**256 - 1),
    chain_id=st.integers(1, 2**64),
    manager=st.binary(min_size=20, max_size=20),
)
def test_fast_digest_is_eth_accounts_eip712_hash(
    channel: bytes, cumulative: int, chain_id: int, manager: bytes
) -> None:
    domain = voucher_domain(chain_id, "0x" + manager.hex())
    voucher = Voucher(channel, cumulative)
    signable = encode_typed_data(full_message=voucher_typed_data(domain, voucher))
    expected = keccak(b"\x19" + signable.version + signable.header + signable.body)
    assert VoucherChecker(domain).digest(channel, cumulative) == expected
    assert voucher_digest(domain, voucher) == expected


@settings(max_examples=30, deadline=None)
@given(
    key=st.sampled_from(_KEYS),
    channel=st.binary(min_size=32, max_size=32),
    cumulative=st.integers(0, 2**256 - 1),
)
def test_fast_recovery_agrees_with_eth_account(
    key: LocalSigner, channel: bytes, cumulative: int
) -> None:
    domain = voucher_domain(31337, "0x" + "ab" * 20)
    voucher = Voucher(channel, cumulative)
    signature = sign_voucher(key, domain, voucher)
    checker = VoucherChecker(domain)
    assert checker.recover_checksum(channel, cumulative, signature) == key.address
    assert recover_voucher_signer(domain, voucher, signature) == key.address
    other = (cumulative + 1) % 2**256
    assert checker.recover_checksum(channel, other, signature) != key.address


@settings(max_examples=20, deadline=None)
@given(channel=st.binary(min_size=32, max_size=32), cumulative=st.integers(0, 2**256 - 1))
def test_verification_names_the_signer_and_normalized_fixes_v(
    channel: bytes, cumulative: int
) -> None:
    domain = voucher_domain(31337, "0x" + "ab" * 20)
    checker = VoucherChecker(domain)
    key, other = (bytes.fromhex(k.address[2:]) for k in _KEYS[:2])
    signature = sign_voucher(_KEYS[0], domain, Voucher(channel, cumulative))
    flipped = signature[:64] + bytes((55 - signature[64],))
    assert checker.signer_of(channel, cumulative, signature, (other, key)) == key  # recovers
    assert checker.signer_of(channel, cumulative, signature, (other, key)) == key  # verifies
    assert checker.signer_of(channel, cumulative, signature, (other,)) is None
    assert checker.signer_of(channel, cumulative + 1 if cumulative < 2**256 - 1 else 0,
                             signature, (key,)) is None  # fmt: skip
    # Verification ignores v: the flipped signature passes, and is fixed before a claim.
    assert checker.signer_of(channel, cumulative, flipped, (key,)) == key
    assert checker.recover(channel, cumulative, flipped) != key
    assert checker.normalized(channel, cumulative, flipped, (key,)) == signature
    assert checker.normalized(channel, cumulative, signature, (key,)) == signature


@pytest.mark.parametrize(
    ("mangle", "match"),
    [
        (lambda s: s[:64], "65 bytes"),
        (lambda s: s[:64] + b"\x1d", "v must be"),
        (lambda s: bytes(32) + s[32:], "r is out of range"),
        (lambda s: s[:32] + (2**256 - 1).to_bytes(32, "big") + s[64:], "s is zero or in the high"),
    ],
    ids=["short", "bad-v", "zero-r", "high-s"],
)
def test_fast_recovery_refuses_what_the_contract_refuses(mangle: Any, match: str) -> None:
    domain = voucher_domain(31337, "0x" + "ab" * 20)
    signature = sign_voucher(_KEYS[0], domain, Voucher(bytes(32), 5))
    with pytest.raises(ValueError, match=match):
        VoucherChecker(domain).recover(bytes(32), 5, mangle(signature))


_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


def _contract_accepts_format(signature: bytes) -> bool:
    """The contract's rule, on integers: 65 bytes, v 27 or 28, 0 < r < n, 0 < s <= n / 2."""
    r, s = int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:64], "big")
    return len(signature) == 65 and signature[64] in (27, 28) and 0 < r < _N and 0 < s <= _N // 2


_EDGES = [0, 1, _N // 2 - 1, _N // 2, _N // 2 + 1, _N - 1, _N, 2**256 - 1]


@pytest.mark.parametrize("v", [27, 28, 0, 1, 29])
@pytest.mark.parametrize("s", _EDGES)
@pytest.mark.parametrize("r", _EDGES)
def test_signature_format_is_checked_as_the_contract_checks_it(r: int, s: int, v: int) -> None:
    from agent_pay.signing.voucher_check import _check_format

    signature = r.to_bytes(32, "big") + s.to_bytes(32, "big") + bytes((v,))
    try:
        _check_format(signature)
        accepted = True
    except ValueError:
        accepted = False
    assert accepted == _contract_accepts_format(signature)
