"""End to end on every chain backend: the embedded chain, anvil, and `agent-pay node`.

The representative core of `test_e2e_exact.py` (a paid read, replay, insufficient balance, a
bad signature, concurrency), each run three times: on the in-process py-evm chain, and through
`JsonRpcChain` on anvil and on our own node, with the same money invariants: a refused payment
moves nothing, a paid one moves exactly the price, total supply never changes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import httpx
import pytest

from agent_pay.chain.contract import Transactor
from agent_pay.chain.devkeys import dev_signer
from agent_pay.chain.rpc import JsonRpcChain
from agent_pay.client.auth import PaymentAuth
from agent_pay.client.policy import SpendingPolicy
from agent_pay.errors import Reason
from agent_pay.node.deployment import deploy_default_stablecoins, find_stablecoins
from agent_pay.node.node import Node
from agent_pay.protocol import (
    X402_VERSION,
    ExactEvmPayload,
    PaymentPayload,
    PaymentRequired,
    SettleResponse,
)
from agent_pay.protocol.codec import (
    PAYMENT_REQUIRED_HEADER,
    PAYMENT_RESPONSE_HEADER,
    PAYMENT_SIGNATURE_HEADER,
    decode_header,
    encode_header,
)
from agent_pay.signing import (
    LocalSigner,
    TokenDomain,
    TransferAuthorization,
    random_nonce,
    sign_transfer_authorization,
)
from agent_pay.stack import FACILITATOR_INDEX, Stack
from agent_pay.testing import SyncASGITransport

SLUG = "why-micropayments-failed"  # 0.1 USDX
OTHER = "reading-a-vyper-contract"  # 0.25 USDX
PRICES = {SLUG: 100_000, OTHER: 250_000}
SAME_TERMS = ("http-status-codes-nobody-uses", "pricing-content-for-machine-readers")
BASE = "http://testserver"

Ledger = dict[tuple[str, str], int]


@pytest.fixture(
    scope="module", params=["embedded", pytest.param("anvil", marks=pytest.mark.slow), "node"]
)
def stack(request: pytest.FixtureRequest) -> Iterator[Stack]:
    if request.param == "embedded":
        yield Stack.embedded()
    elif request.param == "anvil":
        chain = JsonRpcChain(request.getfixturevalue("anvil_url"))
        tokens = deploy_default_stablecoins(chain)
        yield Stack.connect(chain, tokens, Transactor(chain, dev_signer(FACILITATOR_INDEX)))
        chain.close()
    else:
        with Node.open(None) as node, node.serve(port=0) as url, JsonRpcChain(url) as chain:
            facilitator = Transactor(chain, dev_signer(FACILITATOR_INDEX))
            yield Stack.connect(chain, find_stablecoins(chain), facilitator)


def author(stack: Stack, slug: str) -> str:
    article = stack.catalogue.get(slug)
    assert article is not None
    return article.author


def ledger(stack: Stack, *addresses: str) -> Ledger:
    state: Ledger = {(a, "USDX"): stack.balance(a, "USDX") for a in addresses}
    state["supply", "USDX"] = stack.tokens["USDX"].total_supply()
    return state


def delta(before: Ledger, after: Ledger) -> Ledger:
    return {k: after[k] - before[k] for k in before if after[k] != before[k]}


def agent(stack: Stack, funds: str = "1") -> PaymentAuth:
    signer = LocalSigner.random()
    stack.fund(signer.address, "USDX", funds)
    policy = SpendingPolicy.per_token([stack.tokens["USDX"].asset], max_per_payment="1", budget="5")
    return PaymentAuth(signer, policy)


class Recorder:
    """Keeps the PAYMENT-SIGNATURE headers a client sent (an httpx request hook)."""

    def __init__(self) -> None:
        self.headers: list[str] = []

    def __call__(self, request: httpx.Request) -> None:
        if PAYMENT_SIGNATURE_HEADER in request.headers:
            self.headers.append(request.headers[PAYMENT_SIGNATURE_HEADER])


def client(
    stack: Stack, auth: PaymentAuth | None = None, record: Recorder | None = None
) -> httpx.Client:
    return httpx.Client(
        transport=SyncASGITransport(stack.app),
        base_url=BASE,
        auth=auth,
        event_hooks={"request": [record]} if record else {},
    )


def challenge(stack: Stack, slug: str) -> PaymentRequired:
    with client(stack) as http:
        response = http.get(f"/articles/{slug}")
    assert response.status_code == 402
    return decode_header(response.headers[PAYMENT_REQUIRED_HEADER], PaymentRequired)


def authorize(signer: LocalSigner, required: PaymentRequired) -> PaymentPayload:
    """A payment for the first offer, signed by hand (no client policy in the way)."""
    offer = required.accepts[0]
    now = int(time.time())
    auth = TransferAuthorization(
        from_=signer.address,
        to=offer.pay_to,
        value=offer.amount,
        valid_after=now - 600,
        valid_before=now + offer.max_timeout_seconds,
        nonce=random_nonce(),
    )
    signature = sign_transfer_authorization(signer, TokenDomain.from_requirements(offer), auth)
    return PaymentPayload(
        x402_version=X402_VERSION,
        resource=required.resource,
        accepted=offer,
        payload=ExactEvmPayload(
            signature="0x" + signature.hex(), authorization=auth.to_wire()
        ).to_wire(),
    )


def paid_read(stack: Stack, auth: PaymentAuth, slug: str = SLUG) -> tuple[httpx.Response, str]:
    record = Recorder()
    with client(stack, auth, record) as http:
        response = http.get(f"/articles/{slug}")
    assert response.status_code == 200, response.text
    return response, record.headers[-1]


def test_a_paid_read_moves_exactly_the_price(stack: Stack) -> None:
    auth = agent(stack)
    payee = author(stack, SLUG)
    before = ledger(stack, auth.signer.address, payee)

    response, _ = paid_read(stack, auth)

    assert response.json()["complete"] is True
    settled = decode_header(response.headers[PAYMENT_RESPONSE_HEADER], SettleResponse)
    assert settled.success
    assert settled.payer == auth.signer.address
    receipt = stack.chain.get_receipt(bytes.fromhex(settled.transaction[2:]))
    assert receipt is not None
    assert receipt.status
    assert receipt.sender == stack.scheme.signer_address
    assert delta(before, ledger(stack, auth.signer.address, payee)) == {
        (auth.signer.address, "USDX"): -PRICES[SLUG],
        (payee, "USDX"): PRICES[SLUG],
    }


def test_a_replayed_payment_is_charged_once(stack: Stack) -> None:
    """The same header again, once delivered, reads nothing (on a public chain anyone can
    rebuild it) and charges nothing; the payer re-reads by key proof. On another article (same
    price and payee, so only the chain's nonce record can tell) it is refused."""
    auth = agent(stack)
    first, second = SAME_TERMS
    payee = author(stack, first)
    assert author(stack, second) == payee
    first_response, header = paid_read(stack, auth, first)
    paid = ledger(stack, auth.signer.address, payee)

    with client(stack) as http:
        again = http.get(f"/articles/{first}", headers={PAYMENT_SIGNATURE_HEADER: header})
        stripped = decode_header(header, PaymentPayload).model_copy(update={"resource": None})
        elsewhere = http.get(
            f"/articles/{second}", headers={PAYMENT_SIGNATURE_HEADER: encode_header(stripped)}
        )

    with client(stack, auth) as http:
        reread = http.get(f"/articles/{first}")

    assert again.status_code == 402
    assert again.json()["error"] == Reason.NONCE_ALREADY_USED
    assert again.json()["complete"] is False
    assert reread.status_code == 200
    assert reread.json()["content"] == first_response.json()["content"]
    assert PAYMENT_RESPONSE_HEADER not in reread.headers  # a re-read: nothing paid
    assert elsewhere.status_code == 402
    assert elsewhere.json()["error"] == Reason.NONCE_ALREADY_USED
    assert elsewhere.json()["complete"] is False
    assert delta(paid, ledger(stack, auth.signer.address, payee)) == {}


def test_insufficient_balance_is_refused_and_moves_nothing(stack: Stack) -> None:
    auth = agent(stack, funds="0.05")
    payee = author(stack, SLUG)
    before = ledger(stack, auth.signer.address, payee)

    with client(stack, auth) as http:
        response = http.get(f"/articles/{SLUG}")

    assert response.status_code == 402
    assert response.json()["error"] == Reason.INSUFFICIENT_BALANCE
    assert delta(before, ledger(stack, auth.signer.address, payee)) == {}


def test_a_bad_signature_is_refused_and_moves_nothing(stack: Stack) -> None:
    auth = agent(stack)
    payee = author(stack, SLUG)
    payment = authorize(auth.signer, challenge(stack, SLUG))
    signature = bytearray.fromhex(payment.payload["signature"][2:])
    signature[40] ^= 0x01  # one bit of s: the signature recovers someone else
    forged = payment.model_copy(
        update={"payload": {**payment.payload, "signature": "0x" + signature.hex()}}
    )
    before = ledger(stack, auth.signer.address, payee)

    with client(stack) as http:
        response = http.get(
            f"/articles/{SLUG}", headers={PAYMENT_SIGNATURE_HEADER: encode_header(forged)}
        )

    assert response.status_code == 402
    assert response.json()["error"] == Reason.INVALID_SIGNATURE
    assert delta(before, ledger(stack, auth.signer.address, payee)) == {}
    with client(stack) as http:  # the unforged payment still works
        response = http.get(
            f"/articles/{SLUG}", headers={PAYMENT_SIGNATURE_HEADER: encode_header(payment)}
        )
    assert response.status_code == 200


@pytest.mark.anyio
async def test_many_agents_reading_at_once_pay_exactly_once_each(stack: Stack) -> None:
    agents = [agent(stack) for _ in range(8)]
    payees = {author(stack, SLUG), author(stack, OTHER)}
    addresses = [a.signer.address for a in agents] + sorted(payees)
    before = ledger(stack, *addresses)
    clients = [
        httpx.AsyncClient(transport=httpx.ASGITransport(app=stack.app), base_url=BASE, auth=a)
        for a in agents
    ]
    try:
        responses = await asyncio.gather(
            *(c.get(f"/articles/{slug}") for c in clients for slug in (SLUG, OTHER))
        )
    finally:
        await asyncio.gather(*(c.aclose() for c in clients))

    assert [r.status_code for r in responses] == [200] * 16
    transactions = {
        decode_header(r.headers[PAYMENT_RESPONSE_HEADER], SettleResponse).transaction
        for r in responses
    }
    assert len(transactions) == 16
    expected = {(a.signer.address, "USDX"): -(PRICES[SLUG] + PRICES[OTHER]) for a in agents}
    for slug in (SLUG, OTHER):
        key = (author(stack, slug), "USDX")
        expected[key] = expected.get(key, 0) + 8 * PRICES[slug]
    assert delta(before, ledger(stack, *addresses)) == expected


def test_a_node_that_goes_away_is_503_and_charges_nothing() -> None:
    with Node.open(None) as node:
        with node.serve(port=0) as url:
            chain = JsonRpcChain(url, timeout=2)
            facilitator = Transactor(chain, dev_signer(FACILITATOR_INDEX))
            stack = Stack.connect(chain, find_stablecoins(chain), facilitator)
            auth = agent(stack)
            payment = authorize(auth.signer, challenge(stack, SLUG))
        # The node stopped answering; the server and its facilitator are still up.
        with chain, client(stack) as http:
            response = http.get(
                f"/articles/{SLUG}", headers={PAYMENT_SIGNATURE_HEADER: encode_header(payment)}
            )
        assert response.status_code == 503
        assert response.json()["error"] == Reason.CHAIN_UNAVAILABLE
        assert "Retry-After" in response.headers
        assert node.tokens["USDX"].balance_of(auth.signer.address) == 1_000_000
