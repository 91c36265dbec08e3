"""Never charge twice, never lose a paid read: retries, concurrency, failed delivery, crashes.

Everything runs in one process against the real app, the embedded chain and the in-memory (or
file) ledger. Crashes here are simulated by an exception escaping the app at a fault point —
the process-level proof with SIGKILL is tests/test_fault_injection.py — and a "restart" is a
new app over the same ledger and chain.
"""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from agent_pay.assembly.root import assemble
from agent_pay.chain.contract import Transactor
from agent_pay.chain.devkeys import dev_signer
from agent_pay.client.auth import PaymentAuth
from agent_pay.client.policy import SpendingPolicy
from agent_pay.client.receipts import ReceiptStore
from agent_pay.errors import Reason
from agent_pay.protocol import PaymentPayload, PaymentRequired, SettleResponse
from agent_pay.protocol.codec import (
    PAYMENT_REQUIRED_HEADER,
    PAYMENT_RESPONSE_HEADER,
    PAYMENT_SIGNATURE_HEADER,
    decode_header,
    encode_header,
)
from agent_pay.server.catalogue import Article, Catalogue
from agent_pay.server.faults import FaultPlan, FaultPoint
from agent_pay.server.ledger import Ledger, PaymentState
from agent_pay.signing import LocalSigner
from agent_pay.stack import FACILITATOR_INDEX
from agent_pay.testing import SyncASGITransport, TestAgent, Testbed
from tests._money import assert_ledger_matches_chain, books, delta

SLUG = "why-micropayments-failed"  # 0.1 USDX
PRICE = 100_000
BASE = "http://testserver"


class Crash(BaseException):
    """A simulated crash: escapes every handler, like the process dying mid-request."""


def crash() -> None:
    raise Crash


def restart(bed: Testbed, *, faults: FaultPlan | None = None) -> None:
    """A new server process over the same ledger and chain: new app, new checkout, no memory."""
    bed.parts = assemble(
        bed.chain,
        bed.tokens,
        Transactor(bed.chain, dev_signer(FACILITATOR_INDEX)),
        catalogue=bed.catalogue,
        ledger=bed.ledger,
        receipt_signer=LocalSigner.random(),
        faults=faults,
    )


def first_402(client: httpx.Client, slug: str = SLUG) -> PaymentRequired:
    response = client.get(f"/articles/{slug}")
    assert response.status_code == 402
    return decode_header(response.headers[PAYMENT_REQUIRED_HEADER], PaymentRequired)


def signed_header(client: httpx.Client, agent: TestAgent, slug: str = SLUG) -> str:
    required = first_402(client, slug)
    return encode_header(agent.auth.sign(required.accepts[0], required))


def parties(bed: Testbed, *agents: TestAgent) -> list[str]:
    return [a.address for a in agents] + sorted({a.author for a in bed.catalogue})


def one_debit(bed: Testbed, agent: TestAgent, amount: int = PRICE) -> dict[tuple[str, str], int]:
    article = bed.catalogue.get(SLUG)
    assert article is not None
    return {(agent.address, "USDX"): -amount, (article.author, "USDX"): amount}


# -- the same header again -----------------------------------------------------------------------


def test_a_replay_after_delivery_must_prove_the_key() -> None:
    """There is no replay window: once delivered, a copy of the header reads nothing."""
    bed = Testbed.create()
    agent = bed.agent(funds={"USDX": "1"})
    with bed.client() as client:
        assert client.get(f"/articles/{SLUG}", auth=agent.auth).status_code == 200
        [entry] = bed.ledger.entries()
        header = encode_header(entry.payment)  # what went over the wire (anyone could copy it)
        replayed = client.get(f"/articles/{SLUG}", headers={PAYMENT_SIGNATURE_HEADER: header})
        assert replayed.status_code == 402
        assert replayed.json()["error"] == Reason.NONCE_ALREADY_USED
        assert "AGENT-PAY-ENTITLEMENT" in replayed.json()["message"]
        article = bed.catalogue.get(SLUG)
        assert article is not None
        assert article.remainder not in replayed.text
        # The payer itself still reads: its client answers the challenge with its key.
        again = client.get(f"/articles/{SLUG}", auth=agent.auth)
        assert again.status_code == 200
        assert agent.auth.rereads == [f"{BASE}/articles/{SLUG}"]


def test_a_paid_but_undelivered_read_is_delivered_whenever_it_is_asked() -> None:
    """Settled, then the server died before answering: the retry delivers at any time,
    because this payment was never delivered."""
    bed = Testbed.create(faults=FaultPlan(FaultPoint.RESPONDING, action=crash))
    agent = bed.agent(funds={"USDX": "1"})
    with bed.client() as client:
        header = signed_header(client, agent)
        with pytest.raises(Crash):
            client.get(f"/articles/{SLUG}", headers={PAYMENT_SIGNATURE_HEADER: header})
    [entry] = bed.ledger.entries()
    assert entry.state is PaymentState.SETTLED
    restart(bed)
    with bed.client() as client:
        response = client.get(f"/articles/{SLUG}", headers={PAYMENT_SIGNATURE_HEADER: header})
    assert response.status_code == 200
    assert decode_header(response.headers[PAYMENT_RESPONSE_HEADER], SettleResponse).success


def test_a_different_signature_over_a_used_nonce_is_not_the_same_payment() -> None:
    bed = Testbed.create()
    agent = bed.agent(funds={"USDX": "1"})
    with bed.client() as client:
        header = signed_header(client, agent)
        assert client.get(
            f"/articles/{SLUG}", headers={PAYMENT_SIGNATURE_HEADER: header}
        ).is_success
        payment = decode_header(header, PaymentPayload)
        forged = {**payment.payload, "signature": "0x" + "5a" * 32 + "1b" * 32 + "1b"}
        forged_header = encode_header(payment.model_copy(update={"payload": forged}))
        response = client.get(
            f"/articles/{SLUG}", headers={PAYMENT_SIGNATURE_HEADER: forged_header}
        )
    assert response.status_code == 402
    assert response.json()["error"] == Reason.NONCE_ALREADY_USED


# -- concurrency ---------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_two_hundred_copies_of_one_payment_settle_once() -> None:
    bed = Testbed.create()
    agent = bed.agent(funds={"USDX": "1"})
    article = bed.catalogue.get(SLUG)
    assert article is not None
    before = books(bed.tokens, parties(bed, agent))
    async with bed.async_client() as client:
        response = await client.get(f"/articles/{SLUG}")
        required = decode_header(response.headers[PAYMENT_REQUIRED_HEADER], PaymentRequired)
        header = encode_header(agent.auth.sign(required.accepts[0], required))

        responses = await asyncio.gather(
            *(
                client.get(f"/articles/{SLUG}", headers={PAYMENT_SIGNATURE_HEADER: header})
                for _ in range(200)
            )
        )

    assert [r.status_code for r in responses] == [200] * 200
    assert all(r.json()["content"] == article.body for r in responses)
    transactions = {
        decode_header(r.headers[PAYMENT_RESPONSE_HEADER], SettleResponse).transaction
        for r in responses
    }
    assert len(transactions) == 1
    assert delta(before, books(bed.tokens, parties(bed, agent))) == one_debit(bed, agent)
    counts = assert_ledger_matches_chain(bed.ledger, bed.chain, bed.tokens)
    assert counts[PaymentState.DELIVERED] == 1


def generated_catalogue(directory: Path, count: int = 20) -> Catalogue:
    """`count` articles by five authors at prices from 0.01 to 0.2 USDX."""
    authors = [LocalSigner.random().address for _ in range(5)]
    paragraph = "This paragraph is filler written for a load test of the paywall. " * 4
    for n in range(count):
        body = "\n\n".join(f"{paragraph} Section {n}.{i}." for i in range(9))
        (directory / f"generated-{n:02d}.md").write_text(
            "---\n"
            f'title: "Generated article {n}"\n'
            f'author: "{authors[n % len(authors)]}"\n'
            f'price: "{Decimal(n + 1) / 100}"\n'
            "---\n\n" + body + "\n",
            encoding="utf-8",
        )
    return Catalogue.from_directory(directory)


@pytest.mark.slow
@pytest.mark.anyio
async def test_fifty_agents_reading_twenty_articles_at_once_pay_exactly_the_prices(
    tmp_path: Path,
) -> None:
    catalogue = generated_catalogue(tmp_path)
    bed = Testbed.create(articles=catalogue, ledger=Ledger.open(tmp_path / "data"))
    agents = bed.agents(50, funds={"USDX": "5"}, tokens=["USDX"], budget="5")
    articles = list(catalogue)
    price = {a.slug: int(a.prices["USDX"] * 10**6) for a in articles}
    addresses = [a.address for a in agents] + sorted({a.author for a in articles})
    before = books(bed.tokens, addresses)

    clients = [bed.async_client(agent) for agent in agents]
    started = time.perf_counter()
    try:
        responses = await asyncio.gather(
            *(client.get(f"/articles/{a.slug}") for client in clients for a in articles)
        )
    finally:
        await asyncio.gather(*(client.aclose() for client in clients))
    elapsed = time.perf_counter() - started

    assert [r.status_code for r in responses] == [200] * 1000
    expected: dict[tuple[str, str], int] = {}
    everything = sum(price.values())
    for agent in agents:
        expected[agent.address, "USDX"] = -everything
    for article in articles:
        key = (article.author, "USDX")
        expected[key] = expected.get(key, 0) + 50 * price[article.slug]
    assert delta(before, books(bed.tokens, addresses)) == expected  # total supply unchanged
    counts = assert_ledger_matches_chain(bed.ledger, bed.chain, bed.tokens)
    assert counts[PaymentState.DELIVERED] == 1000
    assert all(len(agent.auth.payments) == 20 for agent in agents)
    print(f"\n1000 paid reads by 50 agents in {elapsed:.1f} s ({1000 / elapsed:.0f} reads/s)")
    bed.ledger.close()


# -- failed delivery -----------------------------------------------------------------------------


class Flaky:
    """A renderer that fails while `broken` is set."""

    def __init__(self) -> None:
        self.broken = True

    def __call__(self, article: Article) -> str:
        if self.broken:
            raise RuntimeError("the disk is on fire")
        return article.body


def test_a_read_that_could_not_be_produced_is_not_charged_and_the_retry_pays_once() -> None:
    render = Flaky()
    bed = Testbed.create(render=render)
    agent = bed.agent(funds={"USDX": "1"})
    before = books(bed.tokens, parties(bed, agent))
    with bed.client() as client:
        header = signed_header(client, agent)
        failed = client.get(f"/articles/{SLUG}", headers={PAYMENT_SIGNATURE_HEADER: header})
        assert failed.status_code == 503
        assert failed.json()["error"] == Reason.CONTENT_UNAVAILABLE
        assert delta(before, books(bed.tokens, parties(bed, agent))) == {}
        [entry] = bed.ledger.entries()
        assert (entry.state, entry.error_reason) == (PaymentState.FAILED, "content_unavailable")

        render.broken = False
        retried = client.get(f"/articles/{SLUG}", headers={PAYMENT_SIGNATURE_HEADER: header})
    assert retried.status_code == 200
    assert delta(before, books(bed.tokens, parties(bed, agent))) == one_debit(bed, agent)
    [entry] = bed.ledger.entries()
    assert entry.attempts == 2
    assert_ledger_matches_chain(bed.ledger, bed.chain, bed.tokens)


# -- the client retries by itself ------------------------------------------------------------------


class DropAnswers(httpx.BaseTransport):
    """Delivers requests to the app, then loses the next `count` answers to paid requests
    (the server did the work; the client never hears)."""

    def __init__(self, inner: httpx.BaseTransport, count: int = 1) -> None:
        self.inner = inner
        self.count = count

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        if PAYMENT_SIGNATURE_HEADER in request.headers and self.count:
            self.count -= 1
            response.close()
            raise httpx.ReadError("connection reset by peer", request=request)
        return response


def test_a_lost_answer_is_resent_and_charged_once(tmp_path: Path) -> None:
    bed = Testbed.create()
    agent = bed.agent(funds={"USDX": "1"}, receipts=ReceiptStore.open(tmp_path))
    usdx = bed.tokens["USDX"].asset
    before = books(bed.tokens, parties(bed, agent))
    with httpx.Client(
        transport=DropAnswers(SyncASGITransport(bed.app)), base_url=BASE, auth=agent.auth
    ) as client:
        with pytest.raises(httpx.ReadError):
            client.get(f"/articles/{SLUG}")
        assert delta(before, books(bed.tokens, parties(bed, agent))) == one_debit(bed, agent)
        assert agent.spending.committed_or_reserved(usdx) == PRICE  # outcome unknown: reserved
        assert len(agent.auth.receipts.all_pending()) == 1

        response = client.get(f"/articles/{SLUG}")  # the same header goes out again

    assert response.status_code == 200
    assert delta(before, books(bed.tokens, parties(bed, agent))) == one_debit(bed, agent)
    assert agent.spending.spent(usdx) == PRICE
    assert agent.spending.committed_or_reserved(usdx) == PRICE
    assert agent.auth.receipts.all_pending() == []
    assert len(agent.auth.payments) == 1
    agent.auth.receipts.close()


def test_a_client_that_crashed_mid_payment_resumes_it_after_a_restart(tmp_path: Path) -> None:
    bed = Testbed.create()
    signer = LocalSigner.random()
    bed.fund(signer.address, "USDX", "1")
    usdx = bed.tokens["USDX"].asset
    policy = SpendingPolicy.per_token([usdx], max_per_payment="1", budget="1")
    first = PaymentAuth(signer, policy, receipts=ReceiptStore.open(tmp_path))
    with (
        httpx.Client(transport=DropAnswers(SyncASGITransport(bed.app)), base_url=BASE) as client,
        pytest.raises(httpx.ReadError),
    ):
        client.get(f"/articles/{SLUG}", auth=first)
    first.receipts.close()  # the process dies here
    balance = bed.balance(signer.address)

    again = PaymentAuth(signer, policy, receipts=ReceiptStore.open(tmp_path))
    with bed.client() as client:
        response = client.get(f"/articles/{SLUG}", auth=again)

    assert response.status_code == 200
    assert bed.balance(signer.address) == balance  # the resend was not a second charge
    assert again.spending.spent(usdx) == PRICE  # ... but it is counted in the new budget
    assert [p.transaction for p in again.payments] == [
        e.tx_hash for e in bed.ledger.entries(payer=signer.address)
    ]
    assert again.receipts.all_pending() == []
    assert again.receipts.find(f"{BASE}/articles/{SLUG}", signer.address) is not None
    again.receipts.close()


# -- a crash at every step, in process ----------------------------------------------------------


@pytest.fixture(params=list(FaultPoint), ids=str)
def point(request: pytest.FixtureRequest) -> FaultPoint:
    point: FaultPoint = request.param
    return point


@pytest.mark.parametrize("ledger_kind", ["memory", "file"])
def test_a_crash_at_any_step_then_a_retry_charges_once_and_delivers(
    point: FaultPoint, ledger_kind: str, tmp_path: Path
) -> None:
    ledger = Ledger.in_memory() if ledger_kind == "memory" else Ledger.open(tmp_path)
    bed = Testbed.create(ledger=ledger, faults=FaultPlan(point, action=crash))
    agent = bed.agent(funds={"USDX": "1"})
    article = bed.catalogue.get(SLUG)
    assert article is not None
    before = books(bed.tokens, parties(bed, agent))
    with bed.client() as client:
        header = signed_header(client, agent)
        with pytest.raises(Crash):
            client.get(f"/articles/{SLUG}", headers={PAYMENT_SIGNATURE_HEADER: header})

    restart(bed)  # reconciliation runs before the first request is served
    with bed.client() as client:
        response = client.get(f"/articles/{SLUG}", headers={PAYMENT_SIGNATURE_HEADER: header})

    assert response.status_code == 200, response.text
    assert response.json()["content"] == article.body
    assert delta(before, books(bed.tokens, parties(bed, agent))) == one_debit(bed, agent)
    counts = assert_ledger_matches_chain(bed.ledger, bed.chain, bed.tokens)
    assert counts[PaymentState.DELIVERED] == 1
    ledger.close()


def test_reconciliation_resolves_what_a_crash_left_before_serving() -> None:
    """Two payments crash mid-way (one settling, one verified), neither sent; nobody retries.
    Nobody got a 200, so the restarted server charges neither: it abandons both."""
    bed = Testbed.create(faults=FaultPlan(FaultPoint.SETTLING, action=crash))
    settling, verified = bed.agent(funds={"USDX": "1"}), bed.agent(funds={"USDX": "1"})
    before = books(bed.tokens, parties(bed, settling, verified))
    for agent, point in [(settling, FaultPoint.SETTLING), (verified, FaultPoint.VERIFIED)]:
        bed.server.faults.point = point  # the same "process": its plan moves on
        bed.server.faults.nth = 2 if point is FaultPoint.VERIFIED else 1
        with bed.client() as client:  # a crash ends the client's loop: one client each
            header = signed_header(client, agent)
            with pytest.raises(Crash):
                client.get(f"/articles/{SLUG}", headers={PAYMENT_SIGNATURE_HEADER: header})
    assert {e.state for e in bed.ledger.entries()} == {PaymentState.SETTLING, PaymentState.VERIFIED}

    restart(bed)
    with bed.client() as client:
        assert client.get("/articles").status_code == 200  # no payment: nothing to reconcile
        assert client.get(f"/articles/{SLUG}").status_code == 402  # the first paywall request

    states = {e.key.payer: e for e in bed.ledger.entries()}
    for agent in (settling, verified):
        assert states[agent.address].state is PaymentState.FAILED
        assert states[agent.address].error_reason == "payment_abandoned"
    assert delta(before, books(bed.tokens, parties(bed, settling, verified))) == {}
    assert_ledger_matches_chain(bed.ledger, bed.chain, bed.tokens)
