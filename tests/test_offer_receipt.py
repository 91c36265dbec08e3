"""x402's offer-receipt: offers signed in the 402, a receipt in the PAYMENT-RESPONSE.

The signatures are checked here the way the spec tells a verifier to, independently of the
signing code: the spec's EIP-712 types written out below, the payload exactly as transmitted,
eth-account's `encode_typed_data` and recovery, and the signer compared with the address the
server publishes. agent-pay's own receipt still travels beside x402's.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from eth_account import Account
from eth_account.messages import encode_typed_data

from agent_pay.protocol import PaymentRequired, SettleResponse
from agent_pay.protocol.codec import (
    PAYMENT_REQUIRED_HEADER,
    PAYMENT_RESPONSE_HEADER,
    decode_header,
)
from agent_pay.protocol.extensions import RECEIPT_EXTENSION
from agent_pay.testing import Testbed

SLUG = "why-micropayments-failed"
BASE = "http://testserver"

DOMAIN_TYPE = [
    {"name": "name", "type": "string"},
    {"name": "version", "type": "string"},
    {"name": "chainId", "type": "uint256"},
]
OFFER_TYPE = [
    {"name": "version", "type": "uint256"},
    {"name": "resourceUrl", "type": "string"},
    {"name": "scheme", "type": "string"},
    {"name": "network", "type": "string"},
    {"name": "asset", "type": "string"},
    {"name": "payTo", "type": "string"},
    {"name": "amount", "type": "string"},
    {"name": "validUntil", "type": "uint256"},
]
RECEIPT_TYPE = [
    {"name": "version", "type": "uint256"},
    {"name": "network", "type": "string"},
    {"name": "resourceUrl", "type": "string"},
    {"name": "payer", "type": "string"},
    {"name": "issuedAt", "type": "uint256"},
    {"name": "transaction", "type": "string"},
]


def signer_of(kind: str, artifact: dict[str, Any]) -> str:
    """The spec's verification: domain (name, "1", chainId 1), the canonical types, the
    payload as transmitted, ECDSA recovery."""
    primary, fields = ("Offer", OFFER_TYPE) if kind == "offer" else ("Receipt", RECEIPT_TYPE)
    assert artifact["format"] == "eip712"
    signable = encode_typed_data(
        full_message={
            "types": {"EIP712Domain": DOMAIN_TYPE, primary: fields},
            "primaryType": primary,
            "domain": {"name": f"x402 {kind}", "version": "1", "chainId": 1},
            "message": artifact["payload"],
        }
    )
    return str(Account.recover_message(signable, signature=artifact["signature"]))


@pytest.fixture(scope="module")
def bed() -> Iterator[Testbed]:
    bed = Testbed.create(schemes=("exact", "channel"))
    yield bed
    bed.close()


@pytest.fixture(scope="module")
def http(bed: Testbed) -> Iterator[httpx.Client]:
    with bed.client() as client:
        yield client


def test_every_offer_of_a_402_is_signed_by_the_published_key(
    bed: Testbed, http: httpx.Client
) -> None:
    published = http.get("/.well-known/agent-pay").json()["receiptSigner"]
    response = http.get(f"/articles/{SLUG}")
    assert response.status_code == 402
    required = decode_header(response.headers[PAYMENT_REQUIRED_HEADER], PaymentRequired)
    assert required.extensions is not None
    entry = required.extensions["offer-receipt"]
    assert set(entry) == {"info", "schema"}
    offers = entry["info"]["offers"]
    assert len(offers) == len(required.accepts) >= 2  # exact and channel
    for offer in offers:
        accepted = required.accepts[offer["acceptIndex"]].to_wire()
        payload = offer["payload"]
        assert payload["version"] == 1
        assert payload["resourceUrl"] == f"{BASE}/articles/{SLUG}"
        for name in ("scheme", "network", "asset", "payTo", "amount"):
            assert payload[name] == accepted[name]
        assert time.time() + 240 < payload["validUntil"] <= time.time() + 360
        assert signer_of("offer", offer) == published
        # Any change to the terms breaks the signature
        cheaper = {**offer, "payload": {**payload, "amount": "1"}}
        assert signer_of("offer", cheaper) != published


def test_a_paid_answer_carries_an_x402_receipt_beside_ours(bed: Testbed) -> None:
    agent = bed.agent()
    with bed.client(agent) as client:
        published = client.get("/.well-known/agent-pay").json()["receiptSigner"]
        response = client.get(f"/articles/{SLUG}")
    assert response.status_code == 200
    settled = decode_header(response.headers[PAYMENT_RESPONSE_HEADER], SettleResponse)
    assert settled.extensions is not None
    assert RECEIPT_EXTENSION in settled.extensions  # agent-pay's own, unchanged
    entry = settled.extensions["offer-receipt"]
    receipt = entry["info"]["receipt"]
    payload = receipt["payload"]
    assert payload["version"] == 1
    assert payload["network"] == settled.network
    assert payload["resourceUrl"] == f"{BASE}/articles/{SLUG}"
    assert payload["payer"] == agent.address
    assert payload["transaction"] == settled.transaction
    assert abs(payload["issuedAt"] - time.time()) < 60
    assert signer_of("receipt", receipt) == published
    forged = {**receipt, "payload": {**payload, "payer": Account.create().address}}
    assert signer_of("receipt", forged) != published
