"""The direct EIP-712 path (agent_pay.signing.eip712) against eth-account's generic one: the same
digests, the same signature bytes, the same recovered address, the same refusals."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_utils import keccak
from hypothesis import given, settings
from hypothesis import strategies as st

from agent_pay.protocol.extensions import ReceiptClaims, SignedReceipt
from agent_pay.signing import (
    SECP256K1_N,
    LocalSigner,
    Signer,
    TokenDomain,
    TransferAuthorization,
    recover_typed_data_signer,
    split_signature,
)
from agent_pay.signing.eip712 import Struct, keccak256, recover_typed, sign_typed
from agent_pay.signing.eip3009 import (
    receive_with_authorization_digest,
    receive_with_authorization_typed_data,
    recover_receive_authorizer,
    recover_transfer_authorizer,
    sign_receive_authorization,
    sign_transfer_authorization,
    transfer_with_authorization_digest,
    transfer_with_authorization_typed_data,
)
from agent_pay.signing.receipt import (
    read_proof_digest,
    read_proof_typed_data,
    receipt_digest,
    receipt_typed_data,
    recover_read_proof_signer,
    recover_receipt_signer,
    sign_read_proof,
    sign_receipt,
)
from agent_pay.signing.signer import HashSigner
from agent_pay.signing.voucher import (
    Voucher,
    recover_voucher_signer,
    sign_voucher,
    voucher_digest,
    voucher_typed_data,
)
from agent_pay.signing.voucher_check import VOUCHER_TYPEHASH
from tests._wire_strategies import addresses, hex32, uint256

DEV_KEY = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d"
SIGNER = LocalSigner.from_key(DEV_KEY)
TOKEN = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
PAYEE = "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"
DOMAIN = TokenDomain("USDX", "1", 31337, TOKEN)
AUTH = TransferAuthorization(SIGNER.address, PAYEE, 100_000, 0, 1_800_000_000, b"\x11" * 32)

uint64 = st.integers(min_value=0, max_value=2**64 - 1)
bytes32 = st.binary(min_size=32, max_size=32)
text = st.text(max_size=40)  # any code point but lone surrogates, as JSON carries
keys = st.integers(min_value=1, max_value=SECP256K1_N - 1).map(lambda k: f"{k:064x}")
domains = st.builds(
    TokenDomain,
    name=text,
    version=text,
    chain_id=st.integers(min_value=1, max_value=2**256 - 1),
    verifying_contract=addresses,
)
authorizations = st.builds(
    TransferAuthorization,
    from_=addresses,
    to=addresses,
    value=uint256,
    valid_after=uint256,
    valid_before=uint256,
    nonce=bytes32,
)
claims = st.fixed_dictionaries(
    dict(
        scheme=text,
        payer=addresses,
        pay_to=addresses,
        resource=st.text(min_size=1, max_size=80),
        amount=uint256,
        asset=addresses,
        network=st.from_regex(r"[-a-z0-9]{3,8}:[-_a-zA-Z0-9]{1,32}", fullmatch=True),
        transaction=hex32,
        issued_at=uint64,
    )
).map(ReceiptClaims.model_validate)  # not st.builds: it would fill the camelCase aliases too
proofs = st.tuples(st.text(max_size=80), bytes32, uint64, addresses)
vouchers = st.builds(Voucher, channel_id=bytes32, cumulative_amount=uint256)


def generic_digest(full_message: dict[str, Any]) -> bytes:
    signable = encode_typed_data(full_message=full_message)
    return keccak(b"\x19" + signable.version + signable.header + signable.body)


class TypedDataOnly:
    """A signer that signs typed data only (as a hardware wallet or remote service would)."""

    def __init__(self, inner: LocalSigner) -> None:
        self.inner = inner
        self.calls = 0

    @property
    def address(self) -> str:
        return self.inner.address

    def sign_typed_data(self, full_message: dict[str, Any]) -> bytes:
        self.calls += 1
        return self.inner.sign_typed_data(full_message)


# -- digests


@settings(max_examples=150)
@given(domains, authorizations)
def test_authorization_digests_are_eth_accounts(
    domain: TokenDomain, auth: TransferAuthorization
) -> None:
    assert transfer_with_authorization_digest(domain, auth) == generic_digest(
        transfer_with_authorization_typed_data(domain, auth)
    )
    assert receive_with_authorization_digest(domain, auth) == generic_digest(
        receive_with_authorization_typed_data(domain, auth)
    )


@settings(max_examples=150)
@given(claims)
def test_receipt_digest_is_eth_accounts(receipt: ReceiptClaims) -> None:
    assert receipt_digest(receipt) == generic_digest(receipt_typed_data(receipt))


@settings(max_examples=150)
@given(proofs)
def test_read_proof_digest_is_eth_accounts(proof: tuple[str, bytes, int, str]) -> None:
    assert read_proof_digest(*proof) == generic_digest(read_proof_typed_data(*proof))


@settings(max_examples=100)
@given(domains, vouchers)
def test_voucher_digest_is_eth_accounts(domain: TokenDomain, voucher: Voucher) -> None:
    assert voucher_digest(domain, voucher) == generic_digest(voucher_typed_data(domain, voucher))


def test_the_extremes_hash_alike() -> None:
    top = 2**256 - 1
    domain = TokenDomain("\U0001f4b5 \u00e9\u4e2d\x00", "", top, TOKEN)
    auth = TransferAuthorization(PAYEE, TOKEN, top, top, top, b"\xff" * 32)
    full = transfer_with_authorization_typed_data(domain, auth)
    assert transfer_with_authorization_digest(domain, auth) == generic_digest(full)
    proof = ("/\U0010ffff" * 300, bytes(32), 2**64 - 1, "0x" + "00" * 20)
    assert read_proof_digest(*proof) == generic_digest(read_proof_typed_data(*proof))


def test_voucher_checker_typehash_is_the_structs() -> None:
    fields = voucher_typed_data(DOMAIN, Voucher(bytes(32), 0))["types"]["Voucher"]
    assert Struct("Voucher", fields).typehash == VOUCHER_TYPEHASH


# -- signatures


@settings(max_examples=40, deadline=None)
@given(keys, domains, authorizations)
def test_authorization_signatures_are_eth_accounts(
    key: str, domain: TokenDomain, auth: TransferAuthorization
) -> None:
    signer = LocalSigner.from_key(key)
    auth = TransferAuthorization(
        signer.address, auth.to, auth.value, auth.valid_after, auth.valid_before, auth.nonce
    )
    for sign, typed in [
        (sign_transfer_authorization, transfer_with_authorization_typed_data),
        (sign_receive_authorization, receive_with_authorization_typed_data),
    ]:
        theirs = bytes(Account.sign_typed_data(key, full_message=typed(domain, auth)).signature)
        assert sign(signer, domain, auth) == theirs
        assert sign(TypedDataOnly(signer), domain, auth) == theirs


@settings(max_examples=40, deadline=None)
@given(keys, claims, proofs, vouchers)
def test_receipt_proof_and_voucher_signatures_are_eth_accounts(
    key: str, receipt: ReceiptClaims, proof: tuple[str, bytes, int, str], voucher: Voucher
) -> None:
    signer = LocalSigner.from_key(key)
    theirs = Account.sign_typed_data(key, full_message=receipt_typed_data(receipt)).signature
    signed = sign_receipt(signer, receipt)
    assert signed.signature == "0x" + bytes(theirs).hex()
    assert signed == sign_receipt(TypedDataOnly(signer), receipt)
    theirs = Account.sign_typed_data(key, full_message=read_proof_typed_data(*proof)).signature
    assert sign_read_proof(signer, *proof) == bytes(theirs)
    assert sign_read_proof(TypedDataOnly(signer), *proof) == bytes(theirs)
    typed = voucher_typed_data(DOMAIN, voucher)
    theirs = Account.sign_typed_data(key, full_message=typed).signature
    assert sign_voucher(signer, DOMAIN, voucher) == bytes(theirs)


def test_a_local_signer_signs_the_digest_and_others_the_typed_data() -> None:
    assert isinstance(SIGNER, HashSigner)
    other = TypedDataOnly(SIGNER)
    assert isinstance(other, Signer)
    assert not isinstance(other, HashSigner)
    digest = transfer_with_authorization_digest(DOMAIN, AUTH)

    def typed() -> dict[str, Any]:
        raise AssertionError("a HashSigner is never handed the typed data")

    fast = sign_typed(SIGNER, digest, typed)
    slow = sign_typed(other, digest, lambda: transfer_with_authorization_typed_data(DOMAIN, AUTH))
    assert fast == slow
    assert other.calls == 1


@pytest.mark.parametrize("digest", [b"", bytes(31), bytes(33), "00" * 32, bytearray(32)])
def test_unsafe_sign_hash_takes_32_bytes_only(digest: Any) -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        SIGNER.unsafe_sign_hash(digest)


def test_a_signer_returning_junk_is_caught() -> None:
    class Junk(TypedDataOnly):
        def unsafe_sign_hash(self, digest: bytes) -> bytes:
            return digest + digest

    with pytest.raises(ValueError, match="signature must be 65 bytes"):
        sign_transfer_authorization(Junk(SIGNER), DOMAIN, AUTH)


# -- recovery


Recover = Callable[[bytes], str]


def _recoveries() -> list[tuple[str, Recover, Recover, bytes]]:
    """(name, fast recovery, generic recovery, a good signature) per signed type."""
    receipt = ReceiptClaims(
        scheme="exact", payer=SIGNER.address, pay_to=PAYEE, resource="/a/\u00e9", amount=10**5,
        asset=TOKEN, network="eip155:31337", transaction="0x" + "ab" * 32, issued_at=1_700_000_000,
    )  # fmt: skip
    proof = ("/a/\u00e9", b"\x07" * 32, 1_700_000_300, PAYEE)
    voucher = Voucher(b"\x05" * 32, 12345)

    def with_signature(signature: bytes) -> SignedReceipt:
        return SignedReceipt(
            **receipt.model_dump(), signer=SIGNER.address, signature="0x" + signature.hex()
        )

    return [
        (
            "transfer",
            lambda s: recover_transfer_authorizer(DOMAIN, AUTH, s),
            lambda s: recover_typed_data_signer(
                transfer_with_authorization_typed_data(DOMAIN, AUTH), s
            ),
            sign_transfer_authorization(SIGNER, DOMAIN, AUTH),
        ),
        (
            "receive",
            lambda s: recover_receive_authorizer(DOMAIN, AUTH, s),
            lambda s: recover_typed_data_signer(
                receive_with_authorization_typed_data(DOMAIN, AUTH), s
            ),
            sign_receive_authorization(SIGNER, DOMAIN, AUTH),
        ),
        (
            "receipt",
            lambda s: recover_receipt_signer(with_signature(s)),
            lambda s: recover_typed_data_signer(receipt_typed_data(receipt), s),
            bytes.fromhex(sign_receipt(SIGNER, receipt).signature[2:]),
        ),
        (
            "proof",
            lambda s: recover_read_proof_signer(*proof, s),
            lambda s: recover_typed_data_signer(read_proof_typed_data(*proof), s),
            sign_read_proof(SIGNER, *proof),
        ),
        (
            "voucher",
            lambda s: recover_voucher_signer(DOMAIN, voucher, s),
            lambda s: recover_typed_data_signer(voucher_typed_data(DOMAIN, voucher), s),
            sign_voucher(SIGNER, DOMAIN, voucher),
        ),
    ]


RECOVERIES = _recoveries()
recoveries = pytest.mark.parametrize(
    ("name", "fast", "generic", "signature"), RECOVERIES, ids=[case[0] for case in RECOVERIES]
)


def _outcome(recover: Recover, signature: bytes) -> str:
    """The address, or the error message up to the exception type eth-account or coincurve
    names in parentheses (BadSignature against ValueError)."""
    try:
        return recover(signature)
    except ValueError as error:
        return "ValueError: " + str(error).split(" (")[0]


@recoveries
def test_recovery_names_the_signer(
    name: str, fast: Recover, generic: Recover, signature: bytes
) -> None:
    assert fast(signature) == generic(signature) == SIGNER.address


@recoveries
@settings(max_examples=60)
@given(rs=st.binary(min_size=64, max_size=64), v=st.integers(min_value=0, max_value=255))
def test_random_signatures_recover_alike(
    name: str, fast: Recover, generic: Recover, signature: bytes, rs: bytes, v: int
) -> None:
    assert _outcome(fast, rs + bytes([v])) == _outcome(generic, rs + bytes([v]))
    twin = rs[:32] + signature[32:]  # a real s: more of these recover some key
    assert _outcome(fast, twin) == _outcome(generic, twin)


def _high_s(signature: bytes) -> bytes:
    v, r, s = split_signature(signature)
    return r.to_bytes(32, "big") + (SECP256K1_N - s).to_bytes(32, "big") + bytes([55 - v])


MANGLES: list[Callable[[bytes], Any]] = [
    lambda s: s[:64],
    lambda s: s + b"\x00",
    lambda s: b"",
    lambda s: s[:64] + b"\x00",
    lambda s: s[:64] + b"\x01",
    lambda s: s[:64] + b"\x1d",
    lambda s: bytes(32) + s[32:],
    lambda s: s[:32] + bytes(32) + s[64:],
    lambda s: SECP256K1_N.to_bytes(32, "big") + s[32:],
    lambda s: b"\xff" * 32 + s[32:],
    lambda s: (5).to_bytes(32, "big") + s[32:],  # r is no point's x: recovers no key
    lambda s: "0x" + s.hex(),
    lambda s: bytearray(s),
    _high_s,
]


@recoveries
@pytest.mark.parametrize("mangle", MANGLES)
def test_malformed_signatures_are_refused_alike(
    name: str, fast: Recover, generic: Recover, signature: bytes, mangle: Callable[[bytes], Any]
) -> None:
    mangled = mangle(signature)
    if name == "receipt" and not (isinstance(mangled, bytes) and len(mangled) == 65):
        return  # a SignedReceipt holds 0x and 130 hex digits: its model refuses the rest
    with pytest.raises(ValueError, match="signature") as caught:
        fast(mangled)
    assert _outcome(fast, mangled) == _outcome(generic, mangled)
    assert str(caught.value).startswith(_outcome(generic, mangled).removeprefix("ValueError: "))


def test_high_s_message_is_the_generic_ones() -> None:
    twin = _high_s(sign_transfer_authorization(SIGNER, DOMAIN, AUTH))
    with pytest.raises(ValueError, match="high half"):
        recover_transfer_authorizer(DOMAIN, AUTH, twin)


def test_unencodable_typed_data_is_refused_alike() -> None:
    proof = ("/\ud800", bytes(32), 1, PAYEE)  # a lone surrogate has no UTF-8
    signature = sign_read_proof(SIGNER, "/a", bytes(32), 1, PAYEE)
    generic = "typed data cannot be encoded (UnicodeEncodeError)"
    with pytest.raises(ValueError, match="cannot be encoded") as caught:
        recover_typed_data_signer(read_proof_typed_data(*proof), signature)
    assert str(caught.value) == generic
    with pytest.raises(ValueError, match="cannot be encoded") as caught:
        recover_read_proof_signer(*proof, signature)
    assert str(caught.value) == generic
    with pytest.raises(ValueError, match="typed data cannot be encoded"):
        recover_read_proof_signer("/a", bytes(32), 2**64, PAYEE, signature)  # not a uint64
    with pytest.raises(ValueError, match="challenge"):
        recover_read_proof_signer("/a", bytes(31), 1, PAYEE, signature)
    with pytest.raises(ValueError, match="address"):
        recover_read_proof_signer("/a", bytes(32), 1, "0x1234", signature)


# -- the pieces


@pytest.mark.parametrize("type_", ["bool", "bytes", "int256", "uint7", "uint264", "Other", "uint"])
def test_only_flat_static_and_string_fields_are_supported(type_: str) -> None:
    with pytest.raises(ValueError, match="not supported"):
        Struct("S", [{"name": "x", "type": type_}])


@pytest.mark.parametrize(
    "values",
    [(), (1, 2), (True,), (-1,), (2**64,), ("1",), (1.0,)],
)
def test_struct_values_are_checked(values: tuple[Any, ...]) -> None:
    with pytest.raises(ValueError, match=r"uint64|zip"):
        Struct("S", [{"name": "x", "type": "uint64"}]).hash(*values)


@pytest.mark.parametrize(
    ("type_", "value"),
    [
        ("address", "0x1234"),
        ("address", b"\x00" * 20),
        ("bytes32", b"\x00" * 31),
        ("bytes32", "0x" + "00" * 31),
        ("string", b"text"),
    ],
)
def test_field_values_are_checked(type_: str, value: Any) -> None:
    with pytest.raises(ValueError, match=type_):
        Struct("S", [{"name": "x", "type": type_}]).hash(value)


@settings(max_examples=200)
@given(st.binary(max_size=300))
def test_keccak256_is_keccak(data: bytes) -> None:
    assert keccak256(data) == keccak(data)


def test_keccak256_is_thread_safe() -> None:
    inputs = [bytes([i]) * (i + 1) for i in range(64)]
    expected = [keccak(data) for data in inputs]
    failures: list[int] = []

    def work() -> None:
        for _ in range(200):
            if [keccak256(data) for data in inputs] != expected:
                failures.append(1)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures


def test_recover_typed_wraps_digest_errors() -> None:
    def broken() -> bytes:
        raise KeyError("x")

    with pytest.raises(ValueError, match=r"typed data cannot be encoded \(KeyError\)"):
        recover_typed(broken, sign_transfer_authorization(SIGNER, DOMAIN, AUTH))
