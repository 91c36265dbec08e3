"""One payment reads one article, for its payer: the boundary of a public chain.

A settled authorization is public: anyone who watches the chain can rebuild the payment header
from the settlement transaction. So a header alone reads only the payer's own lost answer (paid,
never delivered); after delivery, and for any authorization this server did not settle, a read
also needs proof of the payer's key. Two servers on one chain sell each payment once per
article it names.
"""

from __future__ import annotations

import dataclasses

import httpx
import pytest

from agent_pay.errors import Reason
from agent_pay.protocol import PaymentPayload
from agent_pay.protocol.codec import PAYMENT_SIGNATURE_HEADER, encode_header
from agent_pay.protocol.extensions import ENTITLEMENT_HEADER
from agent_pay.server.app import create_server
from agent_pay.server.catalogue import Catalogue
from agent_pay.server.ledger import Ledger, PaymentState
from agent_pay.signing import LocalSigner
from agent_pay.testing import SyncASGITransport, TestAgent, Testbed
from tests._entitlement import challenge_for, proof_header
from tests.test_e2e_exact import (
    PRICE,
    SLUG,
    authorize,
    challenge,
    check_paid_response,
    delta,
    funded_sender,
    ledger,
    paid_lines,
    party_addresses,
    submit_directly,
)

OTHER = "the-same-offer"  # on server B: the same author and price, so the very same offer


@pytest.fixture
def bed() -> Testbed:
    return Testbed.create()


@pytest.fixture
def agent(bed: Testbed) -> TestAgent:
    return bed.agent(funds={"USDX": "5"})


def read(
    http: httpx.Client, slug: str, payment: PaymentPayload | str | None, proof: str | None = None
) -> httpx.Response:
    headers = {}
    if payment is not None:
        headers[PAYMENT_SIGNATURE_HEADER] = (
            payment if isinstance(payment, str) else encode_header(payment)
        )
    if proof is not None:
        headers[ENTITLEMENT_HEADER] = proof
    return http.get(f"/articles/{slug}", headers=headers)


def proof(http: httpx.Client, signer: LocalSigner, slug: str = SLUG, **kw: str) -> str:
    return proof_header(signer, challenge_for(http, slug), f"/articles/{slug}", **kw)


def assert_refused(
    sold: Testbed | Catalogue, response: httpx.Response, reason: str, slug: str = SLUG
) -> None:
    """402 with `reason`, the preview only: no paid line anywhere in the answer."""
    assert response.status_code == 402, response.text
    body = response.json()
    assert body["error"] == reason
    assert body["complete"] is False
    catalogue = sold.catalogue if isinstance(sold, Testbed) else sold
    article = catalogue.get(slug)
    assert article is not None
    assert body["content"] == article.preview
    for line in paid_lines(article):
        assert line not in response.text


def test_a_delivered_header_alone_reads_nothing_more(bed: Testbed, agent: TestAgent) -> None:
    """The first answer delivers; the same header again (a retry after delivery, or anyone who
    rebuilt it from the chain) is refused, charged nothing; with the payer's proof it reads."""
    article = bed.catalogue.get(SLUG)
    assert article is not None
    stranger = LocalSigner.random()
    parties = party_addresses(bed, agent, article)
    with bed.client() as http:
        payment = authorize(agent.signer, challenge(http, SLUG).accepts[0], challenge(http, SLUG))
        before = ledger(bed, *parties)
        settled = check_paid_response(bed, read(http, SLUG, payment), agent, article, PRICE)
        paid = ledger(bed, *parties)

        assert_refused(bed, read(http, SLUG, payment), Reason.NONCE_ALREADY_USED)
        # A stranger's proof, as itself or claiming the payer, does not help.
        assert_refused(
            bed, read(http, SLUG, payment, proof(http, stranger)), Reason.NONCE_ALREADY_USED
        )
        claimed = proof(http, stranger, payer=agent.address)
        assert_refused(bed, read(http, SLUG, payment, claimed), Reason.NONCE_ALREADY_USED)

        again = read(http, SLUG, payment, proof(http, agent.signer))

    assert again.status_code == 200
    assert again.json()["content"] == article.body
    assert delta(paid, ledger(bed, *parties)) == {}
    assert delta(before, paid) == {(agent.address, "USDX"): -PRICE, (article.author, "USDX"): PRICE}
    assert settled.transaction
    [entry] = bed.ledger.entries()
    assert entry.state is PaymentState.DELIVERED


@pytest.mark.parametrize("named", [True, False], ids=["with-resource", "without-resource"])
def test_an_authorization_settled_elsewhere_is_only_the_payers_to_claim(
    bed: Testbed, agent: TestAgent, named: bool
) -> None:
    """Someone puts the authorization on chain directly (the payer, or whoever it leaked to).
    The header alone, or with a stranger's proof, reads nothing; the payer with its key claims
    the article the payment names, once the money has moved once. A payment that names no
    article cannot be claimed at all: it could be claimed for any article at that price."""
    article = bed.catalogue.get(SLUG)
    assert article is not None
    parties = party_addresses(bed, agent, article)
    with bed.client() as http:
        required = challenge(http, SLUG)
        payment = authorize(agent.signer, required.accepts[0], required if named else None)
        assert (payment.resource is not None) is named
        before = ledger(bed, *parties)
        submit_directly(bed, payment)
        moved = ledger(bed, *parties)

        assert_refused(bed, read(http, SLUG, payment), Reason.NONCE_ALREADY_USED)
        stranger = LocalSigner.random()
        refused = read(http, SLUG, payment, proof(http, stranger))
        assert_refused(bed, refused, Reason.NONCE_ALREADY_USED)
        claimed = read(http, SLUG, payment, proof(http, agent.signer))

    assert delta(before, moved) == {
        (agent.address, "USDX"): -PRICE,
        (article.author, "USDX"): PRICE,
    }
    assert delta(moved, ledger(bed, *parties)) == {}  # nothing more, whatever was served
    if named:
        submitter = funded_sender(bed).address
        check_paid_response(bed, claimed, agent, article, PRICE, submitted_by=submitter)
    else:
        assert_refused(bed, claimed, Reason.NONCE_ALREADY_USED)


def test_two_servers_on_one_chain_sell_a_payment_once_per_article(
    bed: Testbed, agent: TestAgent
) -> None:
    """Server B shares server A's chain, catalogue and payees but not its ledger. A payment
    A delivered reads nothing on B by its header; the payer's proof reads the same article on
    B, and nothing buys another article with it."""
    article = bed.catalogue.get(SLUG)
    assert article is not None
    twin = dataclasses.replace(article, slug=OTHER, title="Another article, the same offer")
    catalogue = Catalogue([*bed.catalogue, twin])
    second = create_server(catalogue, bed.assets, bed.facilitator, ledger=Ledger.in_memory()).app
    parties = party_addresses(bed, agent, article)
    with (
        bed.client() as a,
        httpx.Client(transport=SyncASGITransport(second), base_url="http://b.test") as b,
    ):
        required = challenge(a, SLUG)
        named = authorize(agent.signer, required.accepts[0], required)
        anonymous = authorize(agent.signer, required.accepts[0], None)
        before = ledger(bed, *parties)
        check_paid_response(bed, read(a, SLUG, named), agent, article, PRICE)
        assert read(a, SLUG, anonymous).status_code == 200
        paid = ledger(bed, *parties)

        assert_refused(bed, read(b, SLUG, named), Reason.NONCE_ALREADY_USED)
        assert_refused(bed, read(b, SLUG, anonymous), Reason.NONCE_ALREADY_USED)
        other = read(b, OTHER, named, proof(b, agent.signer, OTHER))
        assert_refused(catalogue, other, Reason.RESOURCE_MISMATCH, OTHER)
        other = read(b, OTHER, anonymous, proof(b, agent.signer, OTHER))
        assert_refused(catalogue, other, Reason.NONCE_ALREADY_USED, OTHER)
        same = read(b, SLUG, named, proof(b, agent.signer))

    assert same.status_code == 200
    assert delta(before, paid) == {
        (agent.address, "USDX"): -2 * PRICE,
        (article.author, "USDX"): 2 * PRICE,
    }
    assert delta(paid, ledger(bed, *parties)) == {}


def test_our_client_claims_its_own_payment_after_a_lost_delivered_answer(
    bed: Testbed, agent: TestAgent
) -> None:
    """The answer was delivered but never reached the client (it crashed): the client resends
    its pending header, hears "already used", and claims it with its key, counted once."""
    article = bed.catalogue.get(SLUG)
    assert article is not None
    with bed.client() as http:
        payment = authorize(agent.signer, challenge(http, SLUG).accepts[0], challenge(http, SLUG))
        header = encode_header(payment)
        url = f"http://testserver/articles/{SLUG}"
        agent.auth.receipts.add_pending(url, agent.address, header, payment.accepted)
        assert read(http, SLUG, header).status_code == 200  # delivered; the client never heard

    with bed.client(agent) as client:
        response = client.get(f"/articles/{SLUG}")

    assert response.status_code == 200
    assert response.json()["content"] == article.body
    assert agent.auth.receipts.all_pending() == []
    assert agent.spending.spent(bed.tokens["USDX"].asset) == PRICE
    [record] = agent.auth.payments
    assert record.receipt is not None
    assert record.transaction == record.receipt.transaction


def test_a_payment_identifier_added_after_delivery_reads_nothing(
    bed: Testbed, agent: TestAgent
) -> None:
    """Someone who rebuilds a delivered header from the chain and adds a payment-identifier of
    its own choosing gets 402 every time: only an id bound before the payment reached the
    ledger (the payer's, on its first request) marks the payer's retry. The first send used
    to bind the stranger's id to the payment, and the second then read the article."""
    article = bed.catalogue.get(SLUG)
    assert article is not None
    with bed.client() as http:
        payment = authorize(agent.signer, challenge(http, SLUG).accepts[0], challenge(http, SLUG))
        check_paid_response(bed, read(http, SLUG, payment), agent, article, PRICE)
        paid = bed.balance(agent.address)
        rebuilt = payment.model_copy(
            update={"extensions": {"payment-identifier": {"info": {"id": "stranger-" + "7" * 16}}}}
        )
        for _ in range(3):
            assert_refused(bed, read(http, SLUG, rebuilt), Reason.NONCE_ALREADY_USED)
    assert bed.balance(agent.address) == paid
