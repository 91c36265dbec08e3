"""Receipts and re-reads: a bought article is read again by proving the paying key, for free.

The server signs a receipt for every read paid through its ledger (checked here offline,
against the address it publishes); the agent keeps it, and on the next 402 for that article
answers the server's challenge with its key instead of paying. A receipt copied to another key
reads nothing. A read paid by channel voucher carries no receipt: the agent keeps it as a
purchase, re-read the same way (end to end in `tests/test_e2e_channel.py`; the store and the
CLI here).
"""

from __future__ import annotations

import argparse
import io
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from agent_pay.cli.receipts import register
from agent_pay.client.auth import PaymentAuth
from agent_pay.client.policy import SpendingPolicy
from agent_pay.client.receipts import RECEIPTS_FILENAME, ReceiptStore, StoredPurchase
from agent_pay.errors import Reason
from agent_pay.protocol import PaymentRequired, SettleResponse
from agent_pay.protocol.codec import (
    PAYMENT_REQUIRED_HEADER,
    PAYMENT_RESPONSE_HEADER,
    PAYMENT_SIGNATURE_HEADER,
    decode_header,
    encode_header,
)
from agent_pay.protocol.extensions import (
    ENTITLEMENT_EXTENSION,
    ENTITLEMENT_HEADER,
    NO_TRANSACTION,
    RECEIPT_EXTENSION,
    RECEIPT_HEADER,
    SignedReceipt,
)
from agent_pay.receipts import ReceiptError, load_receipt, verify_receipt
from agent_pay.server.ledger import PaymentState
from agent_pay.signing import LocalSigner
from agent_pay.testing import FakeClock, TestAgent, Testbed
from tests._entitlement import challenge_for, proof_header

SLUG = "why-micropayments-failed"  # 0.1 USDX
OTHER = "reading-a-vyper-contract"  # 0.25 USDX
PRICE = 100_000
BASE = "http://testserver"


@pytest.fixture(scope="module")
def bed() -> Testbed:
    return Testbed.create()


@pytest.fixture(scope="module")
def http(bed: Testbed) -> Iterator[httpx.Client]:
    with bed.client() as client:
        yield client


def buy(bed: Testbed, agent: TestAgent, slug: str = SLUG) -> httpx.Response:
    with bed.client(agent) as client:
        response = client.get(f"/articles/{slug}")
    assert response.status_code == 200, response.text
    return response


def receipt_of(response: httpx.Response) -> SignedReceipt:
    settled = decode_header(response.headers[PAYMENT_RESPONSE_HEADER], SettleResponse)
    assert settled.extensions is not None
    entry = settled.extensions[RECEIPT_EXTENSION]
    assert set(entry) == {"info", "schema"}  # x402's extension shape
    return SignedReceipt.from_wire(entry["info"])


def assert_refused(bed: Testbed, response: httpx.Response, slug: str, reason: str) -> None:
    article = bed.catalogue.get(slug)
    assert article is not None
    assert response.status_code == 402, response.text
    body = response.json()
    assert body["error"] == reason
    assert body["complete"] is False
    assert body["content"] == article.preview
    assert article.remainder not in response.text
    assert RECEIPT_HEADER not in response.headers
    required = decode_header(response.headers[PAYMENT_REQUIRED_HEADER], PaymentRequired)
    assert required.extensions is not None
    assert ENTITLEMENT_EXTENSION in required.extensions  # a fresh challenge to try again


# -- receipts -----------------------------------------------------------------------------------


def test_a_paid_read_carries_a_receipt_anyone_can_check_offline(
    bed: Testbed, http: httpx.Client
) -> None:
    agent = bed.agent(funds={"USDX": "1"})
    article = bed.catalogue.get(SLUG)
    assert article is not None
    response = buy(bed, agent)
    receipt = receipt_of(response)
    published = http.get("/.well-known/agent-pay").json()
    settled = decode_header(response.headers[PAYMENT_RESPONSE_HEADER], SettleResponse)

    assert verify_receipt(receipt, published["receiptSigner"]) == receipt
    assert receipt.payer == agent.address
    assert receipt.pay_to == article.author
    assert receipt.amount == PRICE
    assert receipt.asset == bed.tokens["USDX"].address
    assert receipt.network == "eip155:31337"
    assert receipt.transaction == settled.transaction
    assert receipt.resource == f"{BASE}/articles/{SLUG}"
    assert receipt.scheme == "exact"
    # ... in every form it travels in, and the agent kept it.
    assert load_receipt(response.headers[PAYMENT_RESPONSE_HEADER]) == receipt
    assert load_receipt(receipt.to_json()) == receipt
    [kept] = agent.auth.receipts.receipts(agent.address)
    assert kept.receipt == receipt
    assert agent.auth.payments[0].receipt == receipt


def test_an_altered_or_foreign_receipt_does_not_verify(bed: Testbed, http: httpx.Client) -> None:
    receipt = receipt_of(buy(bed, bed.agent(funds={"USDX": "1"})))
    signer = http.get("/.well-known/agent-pay").json()["receiptSigner"]
    inflated = receipt.model_copy(update={"amount": receipt.amount * 10})
    with pytest.raises(ReceiptError, match="altered"):
        verify_receipt(inflated, signer)
    with pytest.raises(ReceiptError, match="not signed by"):
        verify_receipt(receipt, LocalSigner.random().address)
    with pytest.raises(ReceiptError):
        load_receipt("not a receipt at all")
    with pytest.raises(ReceiptError, match="not a receipt"):
        load_receipt(json.dumps({"payer": receipt.payer}))


def test_the_server_publishes_its_receipt_address(bed: Testbed, http: httpx.Client) -> None:
    document = http.get("/.well-known/agent-pay").json()
    assert document["receiptSigner"] == bed.server.receipt_signer
    assert document["entitlementHeader"] == ENTITLEMENT_HEADER
    assert document["receiptExtension"] == RECEIPT_EXTENSION
    assert document["networks"] == ["eip155:31337"]
    assert challenge_for(http, SLUG).signer == document["receiptSigner"]


# -- re-reads ------------------------------------------------------------------------------------


def test_reading_a_bought_article_again_costs_nothing(bed: Testbed) -> None:
    agent = bed.agent(funds={"USDX": "1"})
    article = bed.catalogue.get(SLUG)
    assert article is not None
    first = buy(bed, agent)
    balance = bed.balance(agent.address)
    usdx = bed.tokens["USDX"].asset
    spent = agent.spending.spent(usdx)

    with bed.client(agent) as client:
        again = [client.get(f"/articles/{SLUG}") for _ in range(3)]

    for response in again:
        assert response.status_code == 200
        assert response.json()["content"] == article.body
        assert PAYMENT_RESPONSE_HEADER not in response.headers  # nothing was paid
        assert load_receipt(response.headers[RECEIPT_HEADER]) == receipt_of(first)
    assert bed.balance(agent.address) == balance
    assert agent.spending.spent(usdx) == spent == PRICE
    assert agent.spending.committed_or_reserved(usdx) == PRICE
    assert len(agent.auth.payments) == 1
    assert agent.auth.rereads == [f"{BASE}/articles/{SLUG}"] * 3
    paid = bed.ledger.entries(payer=agent.address)
    assert [e.state for e in paid] == [PaymentState.DELIVERED]


def test_re_reads_survive_a_client_restart(bed: Testbed, tmp_path: Path) -> None:
    signer = LocalSigner.random()
    bed.fund(signer.address, "USDX", "1")
    usdx = bed.tokens["USDX"].asset
    policy = SpendingPolicy.per_token([usdx], max_per_payment="1", budget="1")
    store = ReceiptStore.open(tmp_path / "receipts")
    with bed.client() as client:
        first = client.get(f"/articles/{SLUG}", auth=PaymentAuth(signer, policy, receipts=store))
    assert first.status_code == 200
    store.close()
    balance = bed.balance(signer.address)

    # A new process: a new PaymentAuth with a fresh budget over the same directory.
    restarted = PaymentAuth(
        signer,
        SpendingPolicy.per_token([usdx], max_per_payment="1", budget="0"),  # cannot pay at all
        receipts=ReceiptStore.open(tmp_path / "receipts"),
    )
    with bed.client() as plain:
        response = plain.get(f"/articles/{SLUG}", auth=restarted)

    assert response.status_code == 200
    assert response.json()["complete"] is True
    assert bed.balance(signer.address) == balance
    assert restarted.rereads == [f"{BASE}/articles/{SLUG}"]
    assert restarted.payments == []
    restarted.receipts.close()


def test_a_copied_receipt_presented_by_another_key_reads_nothing(
    bed: Testbed, http: httpx.Client
) -> None:
    owner = bed.agent(funds={"USDX": "1"})
    receipt = receipt_of(buy(bed, owner))
    thief = LocalSigner.random()
    path = f"/articles/{SLUG}"
    parties = [owner.address, thief.address]
    before = {a: bed.balance(a) for a in parties}

    # The thief names the owner as payer, signs with its own key: not the payer's signature.
    claimed = proof_header(
        thief, challenge_for(http, SLUG), path, payer=owner.address, receipt=receipt
    )
    refused = http.get(path, headers={ENTITLEMENT_HEADER: claimed})
    assert_refused(bed, refused, SLUG, Reason.ENTITLEMENT_INVALID)
    assert "not signed by the payer" in refused.json()["message"]

    # The thief signs as itself and attaches the owner's receipt: it bought nothing.
    as_itself = proof_header(thief, challenge_for(http, SLUG), path, receipt=receipt)
    refused = http.get(path, headers={ENTITLEMENT_HEADER: as_itself})
    assert_refused(bed, refused, SLUG, Reason.ENTITLEMENT_INVALID)
    assert "has not bought" in refused.json()["message"]

    # ... and a PaymentAuth holding a stolen receipt does not even try: it is filed under the
    # owner, and the thief has no key to answer for the owner.
    store = ReceiptStore.in_memory()
    store.add(f"{BASE}{path}", receipt)
    auth = PaymentAuth(
        thief, SpendingPolicy.per_token([], max_per_payment="0", budget="0"), receipts=store
    )
    with pytest.raises(Exception, match="no offer"):
        http.get(path, auth=auth)
    assert {a: bed.balance(a) for a in parties} == before


def test_the_key_alone_re_reads_even_without_the_receipt(bed: Testbed, http: httpx.Client) -> None:
    owner = bed.agent(funds={"USDX": "1"})
    buy(bed, owner)
    path = f"/articles/{SLUG}"
    response = http.get(
        path,
        headers={ENTITLEMENT_HEADER: proof_header(owner.signer, challenge_for(http, SLUG), path)},
    )
    assert response.status_code == 200
    assert response.json()["complete"] is True


def test_a_proof_is_bound_to_its_article_server_and_time(bed: Testbed, http: httpx.Client) -> None:
    owner = bed.agent(funds={"USDX": "1"})
    buy(bed, owner)
    path = f"/articles/{SLUG}"
    fresh = challenge_for(http, SLUG)

    cases = {
        # A challenge issued for another article does not open this one.
        "other article's challenge": proof_header(owner.signer, challenge_for(http, OTHER), path),
        # A proof made out to another server.
        "other server": proof_header(
            owner.signer, fresh, path, server=LocalSigner.random().address
        ),
        # A challenge the server never issued.
        "forged challenge": proof_header(
            owner.signer, fresh.model_copy(update={"challenge": "0x" + "42" * 32}), path
        ),
        # An expired one (and one claiming to live longer than the server allows).
        "expired": proof_header(
            owner.signer, fresh.model_copy(update={"expires_at": fresh.expires_at - 10_000}), path
        ),
        "too long": proof_header(
            owner.signer, fresh.model_copy(update={"expires_at": fresh.expires_at + 10_000}), path
        ),
    }
    for case, header in cases.items():
        response = http.get(path, headers={ENTITLEMENT_HEADER: header})
        assert response.status_code == 402, case
        assert response.json()["error"] == Reason.ENTITLEMENT_INVALID, case

    # A proof for the article it was made for, presented on another article it did not buy.
    other = proof_header(owner.signer, challenge_for(http, OTHER), f"/articles/{OTHER}")
    response = http.get(f"/articles/{OTHER}", headers={ENTITLEMENT_HEADER: other})
    assert_refused(bed, response, OTHER, Reason.ENTITLEMENT_INVALID)


def test_an_unreadable_entitlement_header_is_400(bed: Testbed, http: httpx.Client) -> None:
    for junk in [
        "%%%",
        encode_header(SettleResponse(success=True, transaction="", network="eip155:1")),
    ]:
        response = http.get(f"/articles/{SLUG}", headers={ENTITLEMENT_HEADER: junk})
        assert response.status_code == 400
        assert response.json()["error"] == Reason.ENTITLEMENT_MALFORMED


def test_a_refused_proof_alongside_a_payment_falls_back_to_the_payment(
    bed: Testbed, http: httpx.Client
) -> None:
    agent = bed.agent(funds={"USDX": "1"})
    required = decode_header(
        http.get(f"/articles/{SLUG}").headers[PAYMENT_REQUIRED_HEADER], PaymentRequired
    )
    payment = encode_header(agent.auth.sign(required.accepts[0], required))
    proof = proof_header(agent.signer, challenge_for(http, SLUG), f"/articles/{SLUG}")
    response = http.get(
        f"/articles/{SLUG}", headers={ENTITLEMENT_HEADER: proof, PAYMENT_SIGNATURE_HEADER: payment}
    )
    assert response.status_code == 200
    assert PAYMENT_RESPONSE_HEADER in response.headers


def test_a_server_that_forgot_the_purchase_is_paid_again_by_the_policy(bed: Testbed) -> None:
    """The agent holds a receipt, but this server (a new ledger) refuses the proof: the client
    falls back to paying, within its policy, rather than failing the read."""
    agent = bed.agent(funds={"USDX": "1"})
    receipt = receipt_of(buy(bed, agent))
    amnesiac = Testbed.create()  # another server (and chain) that never saw the purchase
    amnesiac_agent = amnesiac.agent(
        funds={"USDX": "1"}, signer=agent.signer, receipts=ReceiptStore.in_memory()
    )
    amnesiac_agent.auth.receipts.add(f"{BASE}/articles/{SLUG}", receipt)
    with amnesiac.client(amnesiac_agent) as client:
        response = client.get(f"/articles/{SLUG}")
    assert response.status_code == 200
    assert PAYMENT_RESPONSE_HEADER in response.headers
    assert len(amnesiac_agent.auth.payments) == 1


# -- the CLI -------------------------------------------------------------------------------------


def run_cli(*argv: str) -> tuple[int, str]:
    parser = argparse.ArgumentParser(prog="agent-pay")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    args.out = io.StringIO()
    code = args.run(args, None)
    return code, args.out.getvalue()


def test_the_receipts_commands(bed: Testbed, http: httpx.Client, tmp_path: Path) -> None:
    store = ReceiptStore.open(tmp_path)
    agent = bed.agent(funds={"USDX": "1"}, receipts=store)
    buy(bed, agent)
    buy(bed, agent, OTHER)
    store.close()
    signer = http.get("/.well-known/agent-pay").json()["receiptSigner"]

    code, out = run_cli("receipts", "--dir", str(tmp_path))
    assert code == 0
    assert f"/articles/{SLUG}" in out
    assert f"/articles/{OTHER}" in out
    assert "2 receipts" in out

    code, out = run_cli("receipts", "--dir", str(tmp_path), "--json")
    listed = json.loads(out)
    assert [r["receipt"]["amount"] for r in listed] == ["100000", "250000"]

    receipt_file = tmp_path / "receipt.json"
    receipt_file.write_text(json.dumps(listed[0]))
    code, out = run_cli("verify-receipt", str(receipt_file), "--signer", signer)
    assert code == 0
    assert out.startswith("valid: signed by")
    code, out = run_cli("verify-receipt", str(receipt_file), "--signer", agent.address)
    assert code == 2
    assert out.startswith("INVALID")

    code, out = run_cli("receipts", "--dir", str(tmp_path / "nowhere"))
    assert code == 0
    assert "nothing bought" in out


# -- purchases without a receipt (reads paid by channel voucher) -------------------------------


_OLD_SCHEMA = """
CREATE TABLE receipts (
    url TEXT NOT NULL, payer TEXT NOT NULL, transaction_hash TEXT NOT NULL,
    receipt TEXT NOT NULL, stored_at REAL NOT NULL, PRIMARY KEY (url, payer, transaction_hash)
);
CREATE TABLE pending (
    url TEXT NOT NULL, payer TEXT NOT NULL, header TEXT NOT NULL, offer TEXT NOT NULL,
    created_at REAL NOT NULL, PRIMARY KEY (url, payer, header)
);
"""


def test_the_store_keeps_purchases_without_receipts_across_reopening(tmp_path: Path) -> None:
    clock = FakeClock(1_700_000_000.0)
    payer, other = LocalSigner.random().address, LocalSigner.random().address
    url = f"{BASE}/articles/{SLUG}"
    store = ReceiptStore.open(tmp_path, clock=clock)
    assert not store.bought(url, payer)
    store.add_purchase(f"{url}?utm=1#top", payer, "channel")  # filed by origin and path
    clock.now += 60
    store.add_purchase(url, payer, "channel")  # bought again (a crash lost it): one record
    assert store.bought(url, payer)
    assert not store.bought(url, other)
    assert not store.bought(f"{BASE}/articles/{OTHER}", payer)
    assert store.find(url, payer) is None  # a purchase is not a receipt
    store.close()

    reopened = ReceiptStore.open(tmp_path, clock=clock)
    try:
        assert reopened.bought(url, payer)
        assert reopened.purchases() == [StoredPurchase(url, payer, "channel", 1_700_000_000.0)]
        assert reopened.purchases(other) == []
        assert reopened.receipts() == []
    finally:
        reopened.close()


def test_a_store_made_before_purchases_were_kept_opens_and_keeps_its_receipts(
    tmp_path: Path,
) -> None:
    with sqlite3.connect(tmp_path / RECEIPTS_FILENAME) as db:
        db.executescript(_OLD_SCHEMA)
        db.execute(
            "INSERT INTO receipts VALUES (?, ?, ?, ?, ?)",
            (f"{BASE}/articles/{SLUG}", "0x" + "11" * 20, NO_TRANSACTION, "{}", 1.0),
        )
    db.close()
    for _ in range(2):  # created once, then found
        store = ReceiptStore.open(tmp_path)
        try:
            assert store.bought(f"{BASE}/articles/{SLUG}", "0x" + "11" * 20)
            assert store.purchases() == []
        finally:
            store.close()


def test_the_receipts_command_lists_purchases_without_receipts(
    bed: Testbed, tmp_path: Path
) -> None:
    store = ReceiptStore.open(tmp_path)
    agent = bed.agent(funds={"USDX": "1"}, receipts=store)
    buy(bed, agent)  # a receipt
    store.add_purchase(f"{BASE}/articles/{OTHER}", agent.address, "channel")  # a voucher read
    store.close()

    code, out = run_cli("receipts", "--dir", str(tmp_path))
    assert code == 0
    lines = out.splitlines()
    assert f"/articles/{SLUG}" in lines[0]
    assert f"/articles/{OTHER}" in lines[1]
    assert "bought by voucher, no receipt" in lines[1]
    assert "1 receipt and 1 bought without one" in out

    code, out = run_cli("receipts", "--dir", str(tmp_path), "--json")
    listed = json.loads(out)
    assert [r["receipt"] is None for r in listed] == [False, True]
    assert (listed[1]["url"], listed[1]["scheme"]) == (f"{BASE}/articles/{OTHER}", "channel")


def test_a_re_read_keeps_only_a_receipt_that_is_its_own() -> None:
    from agent_pay.protocol.codec import encode_header
    from agent_pay.protocol.extensions import NO_TRANSACTION, RECEIPT_HEADER, ReceiptClaims
    from agent_pay.signing.receipt import sign_receipt

    payer, server, other = LocalSigner.random(), LocalSigner.random(), LocalSigner.random()
    auth = PaymentAuth(payer, SpendingPolicy.per_token([], max_per_payment="0", budget="0"))
    url = "http://shop.test/articles/a"
    request = httpx.Request("GET", url)

    def receipt(resource: str = url, for_payer: str = payer.address) -> str:
        claims = ReceiptClaims(
            scheme="channel",
            payer=for_payer,
            pay_to=server.address,
            resource=resource,
            amount=100_000,
            asset=other.address,
            network="eip155:31337",
            transaction=NO_TRANSACTION,
            issued_at=1_700_000_000,
        )
        return encode_header(sign_receipt(server, claims))

    def answered(header: str) -> httpx.Response:
        return httpx.Response(200, headers={RECEIPT_HEADER: header}, request=request)

    forged = load_receipt(receipt()).model_copy(update={"signer": other.address})
    for wrong in (
        "not base64!",
        receipt(resource="http://shop.test/articles/b"),  # another article's
        receipt(for_payer=other.address),  # another payer's
        encode_header(forged),  # says another key signed it
    ):
        auth._keep_reread_receipt(request, answered(wrong))
        assert auth.receipts.find(url, payer.address) is None
    auth._keep_reread_receipt(request, answered(receipt()))
    kept = auth.receipts.find(url, payer.address)
    assert kept is not None
    assert kept.receipt == load_receipt(receipt())
