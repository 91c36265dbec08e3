"""x402 offers and receipts: the directly computed EIP-712 digests and signatures are
eth-account's, byte for byte."""

from __future__ import annotations

from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_utils import keccak
from hypothesis import given, settings
from hypothesis import strategies as st

from agent_pay.protocol.offer_receipt import OfferPayload, ReceiptPayload
from agent_pay.signing import LocalSigner
from agent_pay.signing.offer_receipt import (
    offer_digest,
    offer_typed_data,
    recover_x402_receipt_signer,
    sign_offer,
    sign_x402_receipt,
    x402_receipt_digest,
    x402_receipt_typed_data,
)

_KEY = "0x" + "42" * 32
_UINT = st.integers(min_value=0, max_value=2**256 - 1)


def _eth_account_digest(typed: dict[str, object]) -> bytes:
    signable = encode_typed_data(full_message=typed)
    return bytes(b"\x19" + signable.version + signable.header + signable.body)


@settings(max_examples=50, deadline=None)
@given(version=_UINT, issued_at=_UINT, text=st.lists(st.text(max_size=40), min_size=4, max_size=4))
def test_receipt_digest_and_signature_match_eth_account(
    version: int, issued_at: int, text: list[str]
) -> None:
    payload = ReceiptPayload(
        version=version,
        network=text[0],
        resource_url=text[1],
        payer=text[2],
        issued_at=issued_at,
        transaction=text[3],
    )
    typed = x402_receipt_typed_data(payload)

    assert x402_receipt_digest(payload) == keccak(_eth_account_digest(typed))
    signer = LocalSigner.from_key(_KEY)
    signed = sign_x402_receipt(signer, payload)
    expected = Account.from_key(_KEY).sign_typed_data(full_message=typed).signature
    assert signed.signature == "0x" + bytes(expected).hex()
    assert recover_x402_receipt_signer(signed) == signer.address


@settings(max_examples=50, deadline=None)
@given(
    version=_UINT,
    valid_until=_UINT,
    text=st.lists(st.text(max_size=40), min_size=6, max_size=6),
)
def test_offer_digest_and_signature_match_eth_account(
    version: int, valid_until: int, text: list[str]
) -> None:
    payload = OfferPayload(
        version=version,
        resource_url=text[0],
        scheme=text[1],
        network=text[2],
        asset=text[3],
        pay_to=text[4],
        amount=text[5],
        valid_until=valid_until,
    )
    typed = offer_typed_data(payload)

    assert offer_digest(payload) == keccak(_eth_account_digest(typed))
    signed = sign_offer(LocalSigner.from_key(_KEY), payload, 0)
    expected = Account.from_key(_KEY).sign_typed_data(full_message=typed).signature
    assert signed.signature == "0x" + bytes(expected).hex()
