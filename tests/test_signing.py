"""EIP-712 signing for EIP-3009 / EIP-2612, and the LocalSigner key holder."""

from __future__ import annotations

import dataclasses
import json
import pickle
import re
from pathlib import Path
from typing import Any

import pytest
from eth_abi import encode as abi_encode
from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_utils import keccak
from hypothesis import given, settings
from hypothesis import strategies as st

import agent_pay.signing as signing
from agent_pay.errors import ConfigurationError
from agent_pay.protocol import (
    PaymentPayload,
    PaymentRequired,
    PaymentRequirements,
    SettleResponse,
    decode_header,
)
from agent_pay.signing import (
    SECP256K1_N,
    CancelAuthorization,
    LocalSigner,
    Permit,
    Signer,
    TokenDomain,
    TransferAuthorization,
    cancel_authorization_typed_data,
    permit_typed_data,
    random_nonce,
    receive_with_authorization_typed_data,
    recover_transfer_authorizer,
    recover_typed_data_signer,
    sign_transfer_authorization,
    split_signature,
    transfer_with_authorization_typed_data,
)
from agent_pay.signing.typed_data import signable_message

# Well-known public development key (hardhat / anvil account #1). Never holds real funds.
DEV_KEY = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d"
DEV_ADDRESS = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
TOKEN = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
PAYEE = "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"
OTHER = "0x90F79bf6EB2c4f870365E785982E1f101E93b906"

SIGNER = LocalSigner.from_key(DEV_KEY)
DOMAIN = TokenDomain("USDX", "1", 31337, TOKEN)
AUTH = TransferAuthorization(DEV_ADDRESS, PAYEE, 100_000, 0, 1_800_000_000, b"\x11" * 32)

uint256 = st.integers(min_value=0, max_value=2**256 - 1)
nonces = st.binary(min_size=32, max_size=32)
addresses = st.binary(min_size=20, max_size=20).map(lambda b: "0x" + b.hex())

authorizations = st.builds(
    TransferAuthorization,
    from_=st.just(DEV_ADDRESS),
    to=addresses,
    value=uint256,
    valid_after=uint256,
    valid_before=uint256,
    nonce=nonces,
)
domains = st.builds(
    TokenDomain,
    name=st.text(max_size=20),
    version=st.text(max_size=5),
    chain_id=st.integers(min_value=1, max_value=2**64),
    verifying_contract=addresses,
)


# -- the type strings are USDC's


@pytest.mark.parametrize(
    ("fields", "type_string", "usdc_typehash"),
    [
        (
            signing.TRANSFER_WITH_AUTHORIZATION_FIELDS,
            "TransferWithAuthorization(address from,address to,uint256 value,"
            "uint256 validAfter,uint256 validBefore,bytes32 nonce)",
            "7c7c6cdb67a18743f49ec6fa9b35f50d52ed05cbed4cc592e13b44501c1a2267",
        ),
        (
            signing.RECEIVE_WITH_AUTHORIZATION_FIELDS,
            "ReceiveWithAuthorization(address from,address to,uint256 value,"
            "uint256 validAfter,uint256 validBefore,bytes32 nonce)",
            "d099cc98ef71107a616c4f0f941f04c322d8e254fe26b3c6668db87aae413de8",
        ),
        (
            signing.CANCEL_AUTHORIZATION_FIELDS,
            "CancelAuthorization(address authorizer,bytes32 nonce)",
            "158b0a9edf7a828aad02f63cd515c68ef2f50ba807396f6d12842833a1597429",
        ),
        (
            signing.PERMIT_FIELDS,
            "Permit(address owner,address spender,uint256 value,uint256 nonce,uint256 deadline)",
            "6e71edae12b1b97f4d1f60370fef10105fa2faae0126114a169c64845d6126c9",
        ),
        (
            signing.EIP712_DOMAIN_FIELDS,
            "EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)",
            "8b73c3c69bb8fe3d512ecc4cf759cc79239f7b179b0ffacaa9a75d522b39400f",
        ),
    ],
)
def test_type_strings_are_usdcs(
    fields: list[dict[str, str]], type_string: str, usdc_typehash: str
) -> None:
    name = type_string.split("(")[0]
    assert f"{name}({','.join(f['type'] + ' ' + f['name'] for f in fields)})" == type_string
    assert keccak(text=type_string).hex() == usdc_typehash


@settings(max_examples=50)
@given(domains, authorizations)
def test_digest_is_what_the_token_contract_computes(
    domain: TokenDomain, auth: TransferAuthorization
) -> None:
    # An independent oracle, written the way Solidity does it (abi.encode of the typehash and
    # the fields), checks that eth-account encodes our messages as the token hashes them.
    domain_separator = keccak(
        abi_encode(
            ["bytes32", "bytes32", "bytes32", "uint256", "address"],
            [
                keccak(text=type_string_of(signing.EIP712_DOMAIN_FIELDS, "EIP712Domain")),
                keccak(text=domain.name),
                keccak(text=domain.version),
                domain.chain_id,
                domain.verifying_contract,
            ],
        )
    )
    struct_hash = keccak(
        abi_encode(
            ["bytes32", "address", "address", "uint256", "uint256", "uint256", "bytes32"],
            [
                keccak(
                    text=type_string_of(
                        signing.TRANSFER_WITH_AUTHORIZATION_FIELDS, "TransferWithAuthorization"
                    )
                ),
                auth.from_,
                auth.to,
                auth.value,
                auth.valid_after,
                auth.valid_before,
                auth.nonce,
            ],
        )
    )
    digest = keccak(b"\x19\x01" + domain_separator + struct_hash)
    full = encode_typed_data(full_message=transfer_with_authorization_typed_data(domain, auth))
    assert keccak(b"\x19" + full.version + full.header + full.body) == digest


def type_string_of(fields: list[dict[str, str]], name: str) -> str:
    return f"{name}({','.join(f['type'] + ' ' + f['name'] for f in fields)})"


# -- sign and recover


@settings(max_examples=60)
@given(authorizations, domains)
def test_recover_of_sign_is_the_signer(auth: TransferAuthorization, domain: TokenDomain) -> None:
    signature = sign_transfer_authorization(SIGNER, domain, auth)
    assert len(signature) == 65
    assert signature[64] in (27, 28)
    assert recover_transfer_authorizer(domain, auth, signature) == SIGNER.address


@settings(max_examples=60)
@given(authorizations, domains)
def test_two_signing_paths_agree(auth: TransferAuthorization, domain: TokenDomain) -> None:
    full = transfer_with_authorization_typed_data(domain, auth)
    theirs = Account.sign_typed_data(DEV_KEY, full_message=full).signature
    assert sign_transfer_authorization(SIGNER, domain, auth) == bytes(theirs)
    # ...and the cached-domain recovery path hashes exactly what encode_typed_data does.
    fast = signable_message(
        domain, "TransferWithAuthorization", signing.TRANSFER_WITH_AUTHORIZATION_FIELDS,
        auth.eip712_message(),
    )  # fmt: skip
    assert fast == encode_typed_data(full_message=full)
    assert recover_typed_data_signer(full, bytes(theirs)) == DEV_ADDRESS


def test_nonce_as_bytes_or_hex_hashes_the_same() -> None:
    full = transfer_with_authorization_typed_data(DOMAIN, AUTH)
    with_bytes = {**full, "message": {**full["message"], "nonce": AUTH.nonce}}
    assert encode_typed_data(full_message=full) == encode_typed_data(full_message=with_bytes)


def _mutations() -> list[tuple[str, TokenDomain, TransferAuthorization]]:
    auth, domain = AUTH, DOMAIN
    return [
        ("from", domain, dataclasses.replace(auth, from_=OTHER)),
        ("to", domain, dataclasses.replace(auth, to=OTHER)),
        ("value", domain, dataclasses.replace(auth, value=auth.value + 1)),
        ("validAfter", domain, dataclasses.replace(auth, valid_after=auth.valid_after + 1)),
        ("validBefore", domain, dataclasses.replace(auth, valid_before=auth.valid_before - 1)),
        ("nonce", domain, dataclasses.replace(auth, nonce=b"\x12" + auth.nonce[1:])),
        ("name", dataclasses.replace(domain, name="USDC"), auth),
        ("version", dataclasses.replace(domain, version="2"), auth),
        ("chainId", dataclasses.replace(domain, chain_id=1), auth),
        ("verifyingContract", dataclasses.replace(domain, verifying_contract=OTHER), auth),
    ]


@pytest.mark.parametrize(("field", "domain", "auth"), _mutations(), ids=lambda v: str(v)[:20])
def test_changing_any_signed_field_changes_the_signer(
    field: str, domain: TokenDomain, auth: TransferAuthorization
) -> None:
    signature = sign_transfer_authorization(SIGNER, DOMAIN, AUTH)
    assert recover_transfer_authorizer(DOMAIN, AUTH, signature) == SIGNER.address
    assert recover_transfer_authorizer(domain, auth, signature) != SIGNER.address


def test_receive_cancel_and_permit_sign_and_recover() -> None:
    messages = [
        receive_with_authorization_typed_data(DOMAIN, AUTH),
        cancel_authorization_typed_data(DOMAIN, CancelAuthorization(DEV_ADDRESS, AUTH.nonce)),
        permit_typed_data(DOMAIN, Permit(DEV_ADDRESS, PAYEE, 10**6, 0, 1_800_000_000)),
    ]
    signatures = {SIGNER.sign_typed_data(m) for m in messages}
    assert len(signatures) == 3  # three different digests
    for message in messages:
        assert recover_typed_data_signer(message, SIGNER.sign_typed_data(message)) == DEV_ADDRESS
    transfer = SIGNER.sign_typed_data(transfer_with_authorization_typed_data(DOMAIN, AUTH))
    assert transfer not in signatures  # receive and transfer are not interchangeable


def test_signing_for_someone_else_is_refused() -> None:
    with pytest.raises(ValueError, match="signer"):
        sign_transfer_authorization(SIGNER, DOMAIN, dataclasses.replace(AUTH, from_=OTHER))


# -- malformed signatures


def _high_s(signature: bytes) -> bytes:
    v, r, s = split_signature(signature)
    flipped_v = 55 - v  # 27 <-> 28
    return r.to_bytes(32, "big") + (SECP256K1_N - s).to_bytes(32, "big") + bytes([flipped_v])


def test_high_s_twin_is_refused_though_ecrecover_would_accept_it() -> None:
    signature = sign_transfer_authorization(SIGNER, DOMAIN, AUTH)
    twin = _high_s(signature)
    full = encode_typed_data(full_message=transfer_with_authorization_typed_data(DOMAIN, AUTH))
    assert Account.recover_message(full, signature=twin) == DEV_ADDRESS  # malleable...
    with pytest.raises(ValueError, match="high"):
        recover_transfer_authorizer(DOMAIN, AUTH, twin)  # ...so we refuse it


@pytest.mark.parametrize(
    "mangle",
    [
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
        lambda s: "0x" + s.hex(),
        lambda s: bytearray(s),
    ],
)
def test_malformed_signatures_raise_value_error(mangle: Any) -> None:
    signature = sign_transfer_authorization(SIGNER, DOMAIN, AUTH)
    with pytest.raises(ValueError, match="signature"):
        recover_transfer_authorizer(DOMAIN, AUTH, mangle(signature))


@settings(max_examples=200)
@given(st.binary(min_size=64, max_size=64), st.sampled_from([27, 28]))
def test_random_signatures_recover_someone_or_raise_value_error(rs: bytes, v: int) -> None:
    try:
        recovered = recover_transfer_authorizer(DOMAIN, AUTH, rs + bytes([v]))
    except ValueError:
        return
    assert recovered != SIGNER.address


# -- the dataclasses check their arguments


@pytest.mark.parametrize(
    "change",
    [
        {"nonce": b"\x00" * 31},
        {"nonce": "0x" + "00" * 32},
        {"value": -1},
        {"value": 2**256},
        {"value": True},
        {"valid_before": "1"},
        {"to": "0x1234"},
        {"from_": PAYEE.replace("C", "c")},
    ],
)
def test_transfer_authorization_checks_its_fields(change: dict[str, Any]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - the message varies by field
        dataclasses.replace(AUTH, **change)


def test_wire_round_trip_and_normalisation() -> None:
    auth = TransferAuthorization(DEV_ADDRESS.lower(), PAYEE.lower(), 1, 2, 3, b"\xab" * 32)
    assert auth.from_ == DEV_ADDRESS
    wire = auth.to_wire()
    assert wire.to_wire() == {
        "from": DEV_ADDRESS, "to": PAYEE, "value": "1", "validAfter": "2", "validBefore": "3",
        "nonce": "0x" + "ab" * 32,
    }  # fmt: skip
    assert TransferAuthorization.from_wire(wire) == auth


def test_domain_from_requirements() -> None:
    req = PaymentRequirements(
        scheme="exact", network="eip155:31337", amount=100_000, asset=TOKEN.lower(),
        pay_to=PAYEE, max_timeout_seconds=60, extra={"name": "USDX", "version": "1"},
    )  # fmt: skip
    assert TokenDomain.from_requirements(req) == DOMAIN
    for extra in [{}, {"name": "USDX"}, {"name": "USDX", "version": 1}]:
        with pytest.raises(ValueError, match="extra"):
            TokenDomain.from_requirements(req.model_copy(update={"extra": extra}))
    with pytest.raises(ValueError, match="eip155"):
        TokenDomain.from_requirements(req.model_copy(update={"network": "solana:abc"}))
    for chain_id in [0, -1, True]:
        with pytest.raises(ValueError, match="chain_id"):
            TokenDomain("USDX", "1", chain_id, TOKEN)


def test_random_nonce() -> None:
    nonces = {random_nonce() for _ in range(100)}
    assert len(nonces) == 100
    assert all(len(n) == 32 for n in nonces)


# -- LocalSigner


def test_local_signer_is_a_signer_and_keys_load_with_or_without_prefix() -> None:
    assert isinstance(SIGNER, Signer)
    assert SIGNER.address == DEV_ADDRESS
    assert LocalSigner.from_key(DEV_KEY[2:]).address == DEV_ADDRESS
    assert LocalSigner.from_key(f"  {DEV_KEY.upper().replace('0X', '0x')}\n").address == DEV_ADDRESS
    assert LocalSigner.random().address != LocalSigner.random().address


@pytest.mark.parametrize(
    "key",
    [
        "",
        "0x",
        DEV_KEY[:-2],
        DEV_KEY + "00",
        DEV_KEY[:-1] + "g",
        "0x" + "00" * 32,
        "0x" + SECP256K1_N.to_bytes(32, "big").hex(),
        "0x" + "ff" * 32,
    ],
)
def test_malformed_keys_are_configuration_errors_that_do_not_echo_the_key(key: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        LocalSigner.from_key(key)
    assert "malformed private key" in str(caught.value)
    if len(key) > 8:
        assert key[2:10] not in str(caught.value)
    assert caught.value.__suppress_context__


def test_repr_and_str_show_the_address_only() -> None:
    for text in (repr(SIGNER), str(SIGNER), f"{SIGNER}", f"{SIGNER!r}"):
        assert DEV_ADDRESS in text
        assert DEV_KEY[2:].lower() not in text.lower()
    assert SIGNER.unsafe_export_private_key().hex() == DEV_KEY[2:]


def test_local_signer_cannot_be_pickled() -> None:
    with pytest.raises(TypeError, match="pickle"):
        pickle.dumps(SIGNER)


def test_keystore_round_trip(tmp_path: Path) -> None:
    keystore = SIGNER.to_keystore("correct horse", kdf="pbkdf2", iterations=2)
    assert DEV_KEY[2:] not in json.dumps(keystore)
    path = tmp_path / "key.json"
    path.write_text(json.dumps(keystore))
    assert LocalSigner.from_keystore(path, "correct horse").address == DEV_ADDRESS


def test_keystore_with_scrypt(tmp_path: Path) -> None:
    path = tmp_path / "key.json"
    path.write_text(json.dumps(SIGNER.to_keystore("pw", iterations=2)))
    assert LocalSigner.from_keystore(path, "pw").address == DEV_ADDRESS


def test_keystore_wrong_password(tmp_path: Path) -> None:
    path = tmp_path / "key.json"
    path.write_text(json.dumps(SIGNER.to_keystore("right", kdf="pbkdf2", iterations=2)))
    with pytest.raises(ConfigurationError, match="wrong password") as caught:
        LocalSigner.from_keystore(path, "wrong")
    assert "right" not in caught.value.message


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "cannot read"),
        ("{not json", "not JSON"),
        ("[]", "not a keystore"),
        ('{"version": 3}', "not a valid keystore"),
    ],
)
def test_keystore_unreadable(tmp_path: Path, content: str | None, message: str) -> None:
    path = tmp_path / "key.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConfigurationError, match=message):
        LocalSigner.from_keystore(path, "pw")


def test_keystore_stating_another_address_is_refused(tmp_path: Path) -> None:
    keystore = SIGNER.to_keystore("pw", kdf="pbkdf2", iterations=2)
    keystore["address"] = OTHER[2:].lower()
    path = tmp_path / "key.json"
    path.write_text(json.dumps(keystore))
    with pytest.raises(ConfigurationError, match="another address"):
        LocalSigner.from_keystore(path, "pw")


def test_from_env() -> None:
    assert LocalSigner.from_env({"AGENT_PAY_PRIVATE_KEY": DEV_KEY}).address == DEV_ADDRESS
    assert LocalSigner.from_env({"MY_KEY": DEV_KEY}, var="MY_KEY").address == DEV_ADDRESS
    for environ in [{}, {"AGENT_PAY_PRIVATE_KEY": ""}, {"AGENT_PAY_PRIVATE_KEY": "  "}]:
        with pytest.raises(ConfigurationError, match="AGENT_PAY_PRIVATE_KEY is not set"):
            LocalSigner.from_env(environ)
    with pytest.raises(ConfigurationError, match="does not hold a valid private key") as caught:
        LocalSigner.from_env({"AGENT_PAY_PRIVATE_KEY": DEV_KEY[:-1] + "x"})
    assert DEV_KEY[2:20] not in str(caught.value)


def test_public_names_are_locked() -> None:
    assert sorted(signing.__all__) == sorted(
        [
            "CANCEL_AUTHORIZATION_FIELDS", "DEFAULT_KEY_VARIABLE", "EIP712_DOMAIN_FIELDS",
            "PERMIT_FIELDS", "RECEIVE_WITH_AUTHORIZATION_FIELDS", "SECP256K1_N",
            "TRANSFER_WITH_AUTHORIZATION_FIELDS", "CancelAuthorization", "LocalSigner", "Permit",
            "Signer", "TokenDomain", "TransferAuthorization", "build_typed_data",
            "cancel_authorization_typed_data", "permit_typed_data", "random_nonce",
            "receive_with_authorization_typed_data", "recover_transfer_authorizer",
            "recover_typed_data_signer", "sign_transfer_authorization", "split_signature",
            "transfer_with_authorization_typed_data",
        ]
    )  # fmt: skip
    for name in signing.__all__:
        assert hasattr(signing, name)


def test_the_worked_example_in_the_docs_is_real() -> None:
    doc = (Path(__file__).parents[1] / "docs" / "protocol.md").read_text(encoding="utf-8")

    def header(name: str) -> str:
        match = re.search(rf"^{name}: (\S+)$", doc, re.MULTILINE | re.IGNORECASE)
        assert match is not None, name
        return match.group(1)

    required = decode_header(header("payment-required"), PaymentRequired)
    payment = decode_header(header("payment-signature"), PaymentPayload)
    settled = decode_header(header("payment-response"), SettleResponse)
    offer = required.accepts[0]
    assert (offer.amount, offer.network, offer.extra) == (
        100_000, "eip155:31337", {"name": "Agent Dollar", "version": "1"}
    )  # fmt: skip
    assert payment.accepted == offer
    exact = payment.exact_evm()
    auth = TransferAuthorization.from_wire(exact.authorization)
    signature = bytes.fromhex(exact.signature[2:])
    domain = TokenDomain.from_requirements(payment.accepted)
    assert recover_transfer_authorizer(domain, auth, signature) == auth.from_
    assert (auth.to, auth.value) == (offer.pay_to, offer.amount)
    assert settled.success
    assert (settled.payer, settled.amount) == (auth.from_, offer.amount)
    digest = encode_typed_data(full_message=transfer_with_authorization_typed_data(domain, auth))
    assert "0x" + digest.header.hex() in doc  # the domain separator shown
    assert "0x" + exact.signature[2:] in doc
