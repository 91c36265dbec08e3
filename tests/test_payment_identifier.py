"""x402's payment-identifier: one id names one payment.

The stock x402 Python client, with the SDK's own `append_payment_identifier_to_extensions`
enriching its payments, sends an id; the same id with the same payment returns the first
result with one charge, the same id with another payment is 409 `payment_identifier_conflict`
with nothing charged and no content. The binding lives in the ledger (`payment_ids`), which a
ledger file made before it existed gains on opening.
"""

from __future__ import annotations

import base64
import json
import sqlite3
from pathlib import Path
from typing import Any

import httpx
import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from x402 import x402Client
from x402.extensions.payment_identifier import (
    PAYMENT_IDENTIFIER,
    append_payment_identifier_to_extensions,
)
from x402.http.clients.httpx import x402_httpx_transport
from x402.mechanisms.evm.exact import register_exact_evm_client
from x402.mechanisms.evm.signers import EthAccountSigner

from agent_pay.errors import Reason
from agent_pay.protocol import PaymentRequired
from agent_pay.protocol.codec import (
    PAYMENT_REQUIRED_HEADER,
    PAYMENT_RESPONSE_HEADER,
    PAYMENT_SIGNATURE_HEADER,
    decode_header,
)
from agent_pay.server.ledger import Ledger
from agent_pay.server.ledger_sql import SCHEMA
from agent_pay.testing import Testbed

SLUG = "why-micropayments-failed"  # 0.1 USDX
OTHER = "reading-a-vyper-contract"  # 0.25 USDX
PRICE = 100_000
BASE = "http://testserver"


@pytest.fixture(scope="module")
def bed() -> Testbed:
    return Testbed.create()


class _WithId:
    """A stock client extension: every payment carries `payment_id` (via the SDK's helper)."""

    key = PAYMENT_IDENTIFIER

    def __init__(self, payment_id: str) -> None:
        self.payment_id = payment_id

    def enrich_payment_payload(self, payload: Any, required: Any) -> Any:
        extensions = dict(payload.extensions or required.extensions or {})
        append_payment_identifier_to_extensions(extensions, self.payment_id)
        return payload.model_copy(update={"extensions": extensions})


class _Recording(httpx.AsyncBaseTransport):
    """The app over ASGI, keeping every payment header sent."""

    def __init__(self, bed: Testbed) -> None:
        self.inner = httpx.ASGITransport(app=bed.app)
        self.payments: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if PAYMENT_SIGNATURE_HEADER in request.headers:
            self.payments.append(request.headers[PAYMENT_SIGNATURE_HEADER])
        return await self.inner.handle_async_request(request)


def stock(bed: Testbed, account: LocalAccount, payment_id: str) -> tuple[x402Client, _Recording]:
    client = x402Client()
    register_exact_evm_client(client, EthAccountSigner(account), networks="eip155:*")
    usdx = bed.tokens["USDX"].asset
    client.set_spend_controls(
        {
            "allowed_assets": [
                {"network": usdx.network, "asset": usdx.address, "max_amount_per_payment": "300000"}
            ]
        }
    )
    client.register_extension(_WithId(payment_id))  # type: ignore[arg-type]
    return client, _Recording(bed)


async def read(client: x402Client, recording: _Recording, slug: str = SLUG) -> httpx.Response:
    transport = x402_httpx_transport(client, recording)
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as http:
        return await http.get(f"/articles/{slug}")


async def send(bed: Testbed, header: str, slug: str = SLUG) -> httpx.Response:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=bed.app), base_url=BASE) as http:
        return await http.get(f"/articles/{slug}", headers={PAYMENT_SIGNATURE_HEADER: header})


def funded(bed: Testbed) -> LocalAccount:
    account: LocalAccount = Account.create()
    bed.fund(account.address, "USDX", "1")
    return account


@pytest.mark.anyio
async def test_a_402_declares_payment_identifier(bed: Testbed) -> None:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=bed.app), base_url=BASE) as http:
        response = await http.get(f"/articles/{SLUG}")
    required = decode_header(response.headers[PAYMENT_REQUIRED_HEADER], PaymentRequired)
    assert required.extensions is not None
    entry = required.extensions[PAYMENT_IDENTIFIER]
    assert entry["info"] == {"required": False}
    assert entry["schema"]["properties"]["id"] == {
        "type": "string",
        "minLength": 16,
        "maxLength": 128,
    }


@pytest.mark.anyio
async def test_the_same_id_and_payment_is_the_first_result_with_one_charge(bed: Testbed) -> None:
    account = funded(bed)
    client, recording = stock(bed, account, "pay_" + "a1" * 12)
    first = await read(client, recording)
    assert first.status_code == 200, first.text
    (header,) = recording.payments
    sent = json.loads(base64.b64decode(header))
    assert sent["extensions"][PAYMENT_IDENTIFIER]["info"]["id"] == "pay_" + "a1" * 12
    again = await send(bed, header)
    assert again.status_code == 200
    assert again.json() == first.json()
    assert again.headers[PAYMENT_RESPONSE_HEADER] == first.headers[PAYMENT_RESPONSE_HEADER]
    assert bed.balance(account.address, "USDX") == 1_000_000 - PRICE  # one charge


@pytest.mark.anyio
async def test_the_same_id_with_another_payment_is_a_409(bed: Testbed) -> None:
    account = funded(bed)
    payment_id = "pay_" + "b2" * 12
    client, recording = stock(bed, account, payment_id)
    assert (await read(client, recording)).status_code == 200
    # The stock client again, same id: a new payment (another nonce) under a used id
    conflict = await read(client, recording)
    assert conflict.status_code == 409, conflict.text
    assert conflict.json()["error"] == Reason.PAYMENT_ID_CONFLICT == "payment_identifier_conflict"
    assert "content" not in conflict.json()
    # ... and for another article, with yet another payment
    other = await read(client, recording, OTHER)
    assert other.status_code == 409
    assert bed.balance(account.address, "USDX") == 1_000_000 - PRICE  # nothing more charged
    assert len(recording.payments) == 3


@pytest.mark.anyio
async def test_an_unusable_id_is_a_400(bed: Testbed) -> None:
    account = funded(bed)
    client, recording = stock(bed, account, "pay_" + "c3" * 12)
    assert (await read(client, recording)).status_code == 200
    sent = json.loads(base64.b64decode(recording.payments[0]))
    for bad in ("short", "has spaces in it, sixteen+", 12345678901234567890):
        sent["extensions"][PAYMENT_IDENTIFIER]["info"]["id"] = bad
        header = base64.b64encode(json.dumps(sent).encode()).decode()
        response = await send(bed, header)
        assert response.status_code == 400
        assert response.json()["error"] == Reason.PAYMENT_ID_INVALID
    assert bed.balance(account.address, "USDX") == 1_000_000 - PRICE


def test_a_ledger_file_made_before_payment_ids_gains_the_table(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    old = sqlite3.connect(path)
    old.executescript(SCHEMA)  # the ledger as it was: payments only
    old.close()
    with Ledger.open(path) as ledger:
        assert ledger.bind_payment_id("id-" + "0" * 16, "f1", "/a") == ("f1", "/a", False)
        assert ledger.bind_payment_id("id-" + "0" * 16, "f2", "/b") == ("f1", "/a", True)
    with Ledger.open(path) as ledger:  # kept across reopening
        assert ledger.bind_payment_id("id-" + "0" * 16, "f3", "/c") == ("f1", "/a", True)
