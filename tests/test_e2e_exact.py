"""End to end: x402 "exact" payments through the real FastAPI app on the embedded py-evm chain.

Every test talks HTTP to the app (ASGI transport), lets the in-process facilitator verify and
settle on chain, and then reads balances back from the token contract. The money invariants are
checked everywhere: a refused payment moves nothing, a paid read moves exactly the price from the
reader to the author, total supply never changes, and no refusal leaks the paid part.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

import httpx
import pytest

from agent_pay.chain.contract import Transactor
from agent_pay.chain.devkeys import dev_signer
from agent_pay.chain.embedded import EmbeddedChain
from agent_pay.chain.stablecoin import TRANSFER_WITH_AUTHORIZATION_GAS, Stablecoin
from agent_pay.client.auth import PaymentAuth
from agent_pay.client.policy import SpendingPolicy
from agent_pay.errors import NoAcceptableOfferError, PolicyViolationError, Reason
from agent_pay.facilitator.exact import VALIDITY_MARGIN
from agent_pay.protocol import (
    X402_VERSION,
    ExactEvmPayload,
    PaymentPayload,
    PaymentRequired,
    PaymentRequirements,
    SettleResponse,
)
from agent_pay.protocol.codec import (
    MAX_HEADER_BYTES,
    PAYMENT_REQUIRED_HEADER,
    PAYMENT_RESPONSE_HEADER,
    PAYMENT_SIGNATURE_HEADER,
    decode_header,
    encode_header,
)
from agent_pay.server.catalogue import Article
from agent_pay.signing import (
    SECP256K1_N,
    CancelAuthorization,
    LocalSigner,
    Signer,
    TokenDomain,
    TransferAuthorization,
    cancel_authorization_typed_data,
    random_nonce,
    split_signature,
    transfer_with_authorization_typed_data,
)
from agent_pay.testing import FakeClock, SyncASGITransport, TestAgent, Testbed

BASE_URL = "http://testserver"
NETWORK = "eip155:31337"

SLUG = "why-micropayments-failed"  # 0.1 USDX to Ada Marsh
TWO_TOKENS = "eip-3009-gasless-transfers"  # 0.1 USDX or 0.7 CNYX to Chen Wei
CNYX_ONLY = "history-of-the-paywall"  # 0.1 CNYX to Ada Marsh
PRICIER = "reading-a-vyper-contract"  # 0.25 USDX to Chen Wei
# Both 0.1 USDX to Bo Lindqvist: one payment header fits both articles' offers.
SAME_TERMS = ("http-status-codes-nobody-uses", "pricing-content-for-machine-readers")
PRICE = 100_000  # 0.1 at 6 decimals

Ledger = dict[tuple[str, str], int]


# -- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bed() -> Testbed:
    """One chain + app for the module: tests use fresh agents and compare balance deltas."""
    return Testbed.create()


@pytest.fixture(scope="module")
def http(bed: Testbed) -> Iterator[httpx.Client]:
    """A client that never pays by itself: tests put their own PAYMENT-SIGNATURE on."""
    with bed.client() as client:
        yield client


@pytest.fixture
def agent(bed: Testbed) -> TestAgent:
    return bed.agent(funds={"USDX": "5", "CNYX": "5"})


# -- helpers ---------------------------------------------------------------------------------


def ledger(bed: Testbed, *addresses: str) -> Ledger:
    """Balances of `addresses` in every token, plus every token's total supply."""
    state = {(a, s): bed.balance(a, s) for a in addresses for s in bed.tokens}
    state.update({("totalSupply", s): bed.total_supply(s) for s in bed.tokens})
    return state


def delta(before: Ledger, after: Ledger) -> Ledger:
    """The entries that changed, as after - before."""
    return {k: after[k] - before[k] for k in before if after[k] != before[k]}


def paid_lines(article: Article) -> list[str]:
    """Lines of the paid part that never occur in the preview and survive JSON unescaped: if
    any of them shows up in a response, paid content leaked."""
    return [
        line
        for line in article.remainder.splitlines()
        if len(line) >= 30 and line not in article.preview and not set(line) & {'"', "\\"}
    ]


def assert_no_paid_content(response: httpx.Response, article: Article) -> None:
    lines = paid_lines(article)
    assert lines, "the article has no recognisable paid lines"
    leaked = [line for line in lines if line in response.text]
    assert not leaked, f"paid content leaked: {leaked[0]!r}"


def challenge(http: httpx.Client, slug: str) -> PaymentRequired:
    response = http.get(f"/articles/{slug}")
    assert response.status_code == 402
    return decode_header(response.headers[PAYMENT_REQUIRED_HEADER], PaymentRequired)


def authorize(
    signer: Signer,
    offer: PaymentRequirements,
    required: PaymentRequired | None = None,
    *,
    domain: TokenDomain | None = None,
    signed_by: Signer | None = None,
    **changes: Any,
) -> PaymentPayload:
    """A payment for `offer` from `signer`, with authorization fields overridden by `changes`,
    signed (by `signed_by`, default `signer`) under `domain` (default: the offer's)."""
    now = int(time.time())
    fields: dict[str, Any] = {
        "from_": signer.address,
        "to": offer.pay_to,
        "value": offer.amount,
        "valid_after": now - 600,
        "valid_before": now + offer.max_timeout_seconds,
        "nonce": random_nonce(),
    }
    fields.update(changes)
    auth = TransferAuthorization(**fields)
    typed = transfer_with_authorization_typed_data(
        domain or TokenDomain.from_requirements(offer), auth
    )
    signature = (signed_by or signer).sign_typed_data(typed)
    return PaymentPayload(
        x402_version=X402_VERSION,
        resource=required.resource if required else None,
        accepted=offer,
        payload=ExactEvmPayload(
            signature="0x" + signature.hex(), authorization=auth.to_wire()
        ).to_wire(),
    )


def tamper(payment: PaymentPayload, **authorization: str) -> PaymentPayload:
    """`payment` with wire fields of its signed authorization replaced (signature kept)."""
    payload = copy.deepcopy(payment.payload)
    payload["authorization"].update(authorization)
    return payment.model_copy(update={"payload": payload})


def with_signature(payment: PaymentPayload, signature: bytes) -> PaymentPayload:
    payload = {**payment.payload, "signature": "0x" + signature.hex()}
    return payment.model_copy(update={"payload": payload})


def b64(data: str | bytes) -> str:
    raw = data.encode() if isinstance(data, str) else data
    return base64.b64encode(raw).decode("ascii")


def b64json(obj: Any) -> str:
    return b64(json.dumps(obj))


def send(http: httpx.Client, slug: str, header: str | bytes) -> httpx.Response:
    return http.get(f"/articles/{slug}", headers={PAYMENT_SIGNATURE_HEADER: header})


def funded_sender(bed: Testbed, index: int = 2) -> Transactor:
    """A dev account with ETH for gas, neither deployer nor facilitator."""
    return Transactor(bed.chain, dev_signer(index))


def token_of(bed: Testbed, payment: PaymentPayload) -> Stablecoin:
    return next(t for t in bed.tokens.values() if t.address == payment.accepted.asset)


def submit_directly(bed: Testbed, payment: PaymentPayload, *, mine: bool = True) -> bytes:
    """Put `payment`'s authorization on chain ourselves (a front-runner), from a dev account.
    With `mine=False` it only enters the pending pool and is mined with the next block."""
    exact = payment.exact_evm()
    auth = TransferAuthorization.from_wire(exact.authorization)
    token = token_of(bed, payment)
    data = token.transfer_with_authorization_data(
        auth.from_,
        auth.to,
        auth.value,
        auth.valid_after,
        auth.valid_before,
        auth.nonce,
        bytes.fromhex(exact.signature[2:]),
    )
    sender = funded_sender(bed)
    tx_hash = sender.send(token.address, data, gas=TRANSFER_WITH_AUTHORIZATION_GAS)
    if mine:
        assert bed.chain.wait_for_receipt(tx_hash).status
    return tx_hash


def party_addresses(bed: Testbed, agent: TestAgent, article: Article) -> tuple[str, ...]:
    return (agent.address, article.author, bed.scheme.signer_address, bed.owner.address)


# -- 1. the happy path -----------------------------------------------------------------------


def test_unpaid_read_gets_the_preview_and_one_offer_per_token(
    bed: Testbed, http: httpx.Client
) -> None:
    article = bed.catalogue.get(SLUG)
    assert article is not None

    response = http.get(f"/articles/{SLUG}")

    assert response.status_code == 402
    body = response.json()
    assert body["error"] == "payment_required"
    assert body["complete"] is False
    assert body["content"] == article.preview
    assert article.remainder not in body["content"]
    assert len(article.preview) < len(article.body) / 2
    assert_no_paid_content(response, article)
    assert response.headers["Cache-Control"] == "no-store"

    raw = json.loads(base64.b64decode(response.headers[PAYMENT_REQUIRED_HEADER]))
    assert raw["x402Version"] == 2
    assert "error" not in raw  # first contact: nothing was refused yet
    assert raw["resource"]["url"] == f"{BASE_URL}/articles/{SLUG}"
    usdx = bed.tokens["USDX"].asset
    assert raw["accepts"] == [
        {
            "scheme": "exact",
            "network": NETWORK,
            "amount": str(PRICE),
            "asset": usdx.address,
            "payTo": article.author,
            "maxTimeoutSeconds": 120,
            "extra": {"name": "Agent Dollar", "version": "1"},
        }
    ]
    required = decode_header(response.headers[PAYMENT_REQUIRED_HEADER], PaymentRequired)
    assert required.x402_version == X402_VERSION


def test_two_token_article_offers_both(bed: Testbed, http: httpx.Client) -> None:
    article = bed.catalogue.get(TWO_TOKENS)
    assert article is not None
    required = challenge(http, TWO_TOKENS)
    offers = {o.asset: o for o in required.accepts}
    usdx, cnyx = bed.tokens["USDX"].asset, bed.tokens["CNYX"].asset
    assert set(offers) == {usdx.address, cnyx.address}
    assert offers[usdx.address].amount == 100_000
    assert offers[cnyx.address].amount == 700_000
    assert offers[cnyx.address].extra == {"name": "Agent Yuan", "version": "1"}
    assert {o.pay_to for o in required.accepts} == {article.author}
    assert {o.network for o in required.accepts} == {NETWORK}


def check_paid_response(
    bed: Testbed,
    response: httpx.Response,
    agent: TestAgent,
    article: Article,
    amount: int,
    *,
    submitted_by: str | None = None,
) -> SettleResponse:
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["complete"] is True
    assert body["content"] == article.body == article.preview + article.remainder
    assert "error" not in body
    assert PAYMENT_REQUIRED_HEADER not in response.headers
    settled = decode_header(response.headers[PAYMENT_RESPONSE_HEADER], SettleResponse)
    assert settled.success is True
    assert settled.payer == agent.address
    assert settled.network == NETWORK
    assert settled.amount == amount
    assert re.fullmatch(r"0x[0-9a-f]{64}", settled.transaction)
    receipt = bed.chain.get_receipt(bytes.fromhex(settled.transaction[2:]))
    assert receipt is not None
    assert receipt.status
    assert receipt.sender == (submitted_by or bed.scheme.signer_address)
    return settled


def test_paid_read_moves_exactly_the_price(bed: Testbed, agent: TestAgent) -> None:
    article = bed.catalogue.get(SLUG)
    assert article is not None
    parties = party_addresses(bed, agent, article)
    before = ledger(bed, *parties)

    with bed.client(agent) as paying:
        response = paying.get(f"/articles/{SLUG}")

    settled = check_paid_response(bed, response, agent, article, PRICE)
    receipt = bed.chain.get_receipt(bytes.fromhex(settled.transaction[2:]))
    assert receipt is not None
    transfers = bed.tokens["USDX"].transfers(receipt)
    assert [(t["sender"], t["receiver"], t["value"]) for t in transfers] == [
        (agent.address, article.author, PRICE)
    ]
    assert delta(before, ledger(bed, *parties)) == {
        (agent.address, "USDX"): -PRICE,
        (article.author, "USDX"): PRICE,
    }
    usdx = bed.tokens["USDX"].asset
    assert agent.spending.spent(usdx) == PRICE
    assert agent.spending.committed_or_reserved(usdx) == PRICE
    [record] = agent.auth.payments
    assert record.transaction == settled.transaction


@pytest.mark.anyio
async def test_paid_read_with_the_async_client(bed: Testbed, agent: TestAgent) -> None:
    article = bed.catalogue.get(PRICIER)
    assert article is not None
    price = 250_000
    parties = party_addresses(bed, agent, article)
    before = ledger(bed, *parties)

    async with bed.async_client(agent) as paying:
        response = await paying.get(f"/articles/{PRICIER}")

    check_paid_response(bed, response, agent, article, price)
    assert delta(before, ledger(bed, *parties)) == {
        (agent.address, "USDX"): -price,
        (article.author, "USDX"): price,
    }


@pytest.mark.parametrize(
    ("preference", "paid", "amount"),
    [
        (["USDX", "CNYX"], "USDX", 100_000),
        (["CNYX", "USDX"], "CNYX", 700_000),
    ],
)
def test_two_token_article_is_paid_in_the_preferred_token(
    bed: Testbed, preference: list[str], paid: str, amount: int
) -> None:
    article = bed.catalogue.get(TWO_TOKENS)
    assert article is not None
    reader = bed.agent(funds={"USDX": "5", "CNYX": "5"}, tokens=preference)
    parties = party_addresses(bed, reader, article)
    before = ledger(bed, *parties)

    with bed.client(reader) as paying:
        response = paying.get(f"/articles/{TWO_TOKENS}")

    settled = check_paid_response(bed, response, reader, article, amount)
    assert reader.auth.payments[0].offer.asset == bed.tokens[paid].address
    assert settled.amount == amount
    assert delta(before, ledger(bed, *parties)) == {
        (reader.address, paid): -amount,
        (article.author, paid): amount,
    }


def test_catalogue_lists_slugs_titles_and_prices(bed: Testbed, http: httpx.Client) -> None:
    response = http.get("/articles")
    assert response.status_code == 200
    listed = {a["slug"]: a for a in response.json()["articles"]}
    assert set(listed) == {a.slug for a in bed.catalogue}
    for article in bed.catalogue:
        entry = listed[article.slug]
        assert entry["title"] == article.title
        assert entry["author"] == article.author
        prices = {p["token"]: p for p in entry["prices"]}
        assert {t: p["price"] for t, p in prices.items()} == {
            t: str(v) for t, v in article.prices.items()
        }
        for symbol, price in prices.items():
            asset = bed.tokens[symbol].asset
            assert price["asset"] == asset.address
            assert price["network"] == NETWORK
            assert price["amount"] == str(article.price_atomic(symbol, asset.decimals))
        assert "content" not in entry
    assert len(listed[TWO_TOKENS]["prices"]) == 2
    assert all(line not in response.text for a in bed.catalogue for line in paid_lines(a))


def test_unknown_article_is_404_not_402(bed: Testbed, http: httpx.Client, agent: TestAgent) -> None:
    response = http.get("/articles/no-such-article")
    assert response.status_code == 404
    assert response.json()["error"] == Reason.NOT_FOUND
    assert PAYMENT_REQUIRED_HEADER not in response.headers

    # A valid payment sent to a missing article is not taken either.
    article = bed.catalogue.get(SLUG)
    assert article is not None
    required = challenge(http, SLUG)
    parties = party_addresses(bed, agent, article)
    before = ledger(bed, *parties)
    header = encode_header(agent.auth.sign(required.accepts[0], required))
    response = send(http, "no-such-article", header)
    assert response.status_code == 404
    assert response.json()["error"] == Reason.NOT_FOUND
    assert delta(before, ledger(bed, *parties)) == {}
    # ... and the payment is still good for the article it was made for.
    assert send(http, SLUG, header).status_code == 200


# -- 2. bad input: every refusal moves nothing and leaks nothing ------------------------------


@dataclass
class Attempt:
    """What a bad-input case needs: a funded agent and the offer it is answering."""

    bed: Testbed
    agent: TestAgent
    required: PaymentRequired

    @property
    def offer(self) -> PaymentRequirements:
        return self.required.accepts[0]

    def now(self) -> int:
        return self.bed.chain.next_timestamp()

    def sign(self, **changes: Any) -> PaymentPayload:
        """A correctly signed payment whose authorization fields are `changes`."""
        return authorize(self.agent.signer, self.offer, self.required, **changes)

    def good(self) -> PaymentPayload:
        return self.agent.auth.sign(self.offer, self.required)

    def accepting(self, **changes: Any) -> str:
        """A payment signed honestly for an `accepted` offer altered by `changes`."""
        offer = self.offer.model_copy(update=changes)
        exact = self.agent.auth.schemes["exact"]  # signs whatever scheme the offer names
        return encode_header(exact.sign(offer, self.required))

    def wire(self, edit: Callable[[dict[str, Any]], object]) -> str:
        """A good payment's JSON, edited in place by `edit`, re-encoded."""
        data = self.good().to_wire()
        edit(data)
        return b64json(data)


Case = Callable[[Attempt], str | bytes]


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    *parents, last = path.split(".")

    def edit(data: dict[str, Any]) -> None:
        for key in parents:
            data = data[key]
        data[last] = value

    return edit


def _drop(path: str) -> Callable[[dict[str, Any]], None]:
    *parents, last = path.split(".")

    def edit(data: dict[str, Any]) -> None:
        for key in parents:
            data = data[key]
        del data[last]

    return edit


def _duplicate_key(a: Attempt) -> str:
    text = a.good().to_json()
    return b64(text[:-1] + ',"x402Version":2}')


def _oversized(a: Attempt) -> str:
    header = a.wire(_set("extensions", {"padding": "x" * MAX_HEADER_BYTES}))
    assert len(header) > MAX_HEADER_BYTES
    return header


INVALID_HEADER = Reason.INVALID_HEADER.value
INVALID_PAYLOAD = Reason.INVALID_PAYLOAD.value
INVALID_VERSION = Reason.INVALID_X402_VERSION.value

MALFORMED: list[Any] = [
    pytest.param(lambda a: "", INVALID_HEADER, id="empty-header"),
    pytest.param(lambda a: b"\xe9t\xe9", INVALID_HEADER, id="latin-1-bytes"),
    pytest.param(lambda a: "%%% not base64 %%%", INVALID_HEADER, id="garbled-base64"),
    pytest.param(lambda a: a.good().to_json(), INVALID_HEADER, id="plain-json-not-base64"),
    pytest.param(lambda a: b64("hello, world"), INVALID_HEADER, id="base64-of-text"),
    pytest.param(lambda a: b64(b"\xff\xfe\x00"), INVALID_HEADER, id="base64-of-binary"),
    pytest.param(lambda a: b64("[1, 2]"), INVALID_HEADER, id="base64-of-json-array"),
    pytest.param(lambda a: b64('{"x402Version": NaN}'), INVALID_HEADER, id="json-nan"),
    pytest.param(_duplicate_key, INVALID_HEADER, id="json-duplicate-key"),
    pytest.param(_oversized, INVALID_HEADER, id="over-8KiB"),
    pytest.param(lambda a: b64json({}), INVALID_PAYLOAD, id="empty-object"),
    pytest.param(lambda a: a.wire(_drop("accepted")), INVALID_PAYLOAD, id="missing-accepted"),
    pytest.param(lambda a: a.wire(_drop("payload")), INVALID_PAYLOAD, id="missing-payload"),
    pytest.param(
        lambda a: a.wire(_drop("accepted.payTo")), INVALID_PAYLOAD, id="missing-accepted-payTo"
    ),
    pytest.param(lambda a: a.wire(_drop("x402Version")), INVALID_PAYLOAD, id="missing-x402Version"),
    pytest.param(
        lambda a: a.wire(_set("accepted.amount", PRICE)), INVALID_PAYLOAD, id="amount-as-number"
    ),
    pytest.param(
        lambda a: a.wire(_set("accepted.maxTimeoutSeconds", "120")),
        INVALID_PAYLOAD,
        id="timeout-as-string",
    ),
    pytest.param(
        lambda a: a.wire(_set("accepted.payTo", "0x1234")), INVALID_PAYLOAD, id="payTo-not-address"
    ),
    pytest.param(
        lambda a: a.wire(_set("payload", "0xdeadbeef")), INVALID_PAYLOAD, id="payload-not-object"
    ),
    pytest.param(lambda a: a.wire(_set("accepted", [])), INVALID_PAYLOAD, id="accepted-a-list"),
    pytest.param(lambda a: a.wire(_set("tip", "1")), INVALID_PAYLOAD, id="extra-top-level-field"),
    pytest.param(
        lambda a: a.wire(_set("accepted.discount", "1")),
        INVALID_PAYLOAD,
        id="extra-field-in-accepted",
    ),
    pytest.param(lambda a: a.wire(_set("x402Version", 1)), INVALID_VERSION, id="x402Version-1"),
    pytest.param(lambda a: a.wire(_set("x402Version", 3)), INVALID_VERSION, id="x402Version-3"),
    pytest.param(
        lambda a: a.wire(_set("x402Version", "2")), INVALID_VERSION, id="x402Version-string"
    ),
    pytest.param(
        lambda a: a.wire(_set("x402Version", True)), INVALID_VERSION, id="x402Version-true"
    ),
    # -- a readable envelope whose "exact" payload is malformed: as unreadable as the rest
    pytest.param(
        lambda a: a.wire(_set("payload.signature", "0x" + "ab" * 64)),
        INVALID_PAYLOAD,
        id="signature-64-bytes",
    ),
    pytest.param(
        lambda a: a.wire(_set("payload.signature", "0x" + "zz" * 65)),
        INVALID_PAYLOAD,
        id="signature-not-hex",
    ),
    pytest.param(
        lambda a: a.wire(_drop("payload.authorization")),
        INVALID_PAYLOAD,
        id="payload-without-authorization",
    ),
    pytest.param(
        lambda a: a.wire(_drop("payload.authorization.nonce")),
        INVALID_PAYLOAD,
        id="authorization-without-nonce",
    ),
    pytest.param(
        lambda a: a.wire(_set("payload.authorization.value", PRICE)),
        INVALID_PAYLOAD,
        id="authorization-value-as-number",
    ),
    pytest.param(
        lambda a: a.wire(_set("payload.authorization.memo", "hi")),
        INVALID_PAYLOAD,
        id="authorization-extra-field",
    ),
]


def _high_s(a: Attempt) -> str:
    payment = a.good()
    v, r, s = split_signature(bytes.fromhex(payment.exact_evm().signature[2:]))
    flipped = r.to_bytes(32, "big") + (SECP256K1_N - s).to_bytes(32, "big") + bytes([55 - v])
    return encode_header(with_signature(payment, flipped))


def _junk_signature(v: int) -> Case:
    def case(a: Attempt) -> str:
        junk = bytes.fromhex("5a" * 32 + "1b" * 32) + bytes([v])
        return encode_header(with_signature(a.good(), junk))

    return case


def _zero_r(a: Attempt) -> str:
    payment = a.good()
    signature = bytes.fromhex(payment.exact_evm().signature[2:])
    return encode_header(with_signature(payment, bytes(32) + signature[32:]))


def _tampered(wire_field: str, wire_value: Callable[[Attempt], str], **signed: Any) -> Case:
    """Sign (with `signed` authorization fields), then change `wire_field` on the wire."""

    def case(a: Attempt) -> str:
        return encode_header(tamper(a.sign(**signed), **{wire_field: wire_value(a)}))

    return case


def _other_domain(change: Callable[[Attempt, TokenDomain], TokenDomain]) -> Case:
    """Sign the right fields under another EIP-712 domain than the offer's."""

    def case(a: Attempt) -> str:
        domain = change(a, TokenDomain.from_requirements(a.offer))
        return encode_header(authorize(a.agent.signer, a.offer, a.required, domain=domain))

    return case


def _other_key(a: Attempt) -> str:
    payment = authorize(a.agent.signer, a.offer, a.required, signed_by=LocalSigner.random())
    return encode_header(payment)


STRANGER = LocalSigner.random().address
ASSET_MISMATCH = Reason.ASSET_MISMATCH.value
RECIPIENT_MISMATCH = Reason.RECIPIENT_MISMATCH.value
AMOUNT_MISMATCH = Reason.AMOUNT_MISMATCH.value
REQUIREMENTS_MISMATCH = Reason.REQUIREMENTS_MISMATCH.value
VALID_BEFORE = Reason.VALID_BEFORE_EXPIRED.value
VALID_AFTER = Reason.VALID_AFTER_FUTURE.value
INVALID_SIGNATURE = Reason.INVALID_SIGNATURE.value

REJECTED: list[Any] = [
    # -- `accepted` is not an offer the server made
    pytest.param(
        lambda a: a.accepting(scheme="upto"), Reason.UNSUPPORTED_SCHEME.value, id="scheme-upto"
    ),
    pytest.param(
        lambda a: a.accepting(network="eip155:1"),
        Reason.NETWORK_MISMATCH.value,
        id="network-eip155:1",
    ),
    pytest.param(
        lambda a: a.accepting(network="eip155:8453"),
        Reason.NETWORK_MISMATCH.value,
        id="network-base",
    ),
    pytest.param(
        lambda a: a.accepting(asset=a.bed.tokens["CNYX"].address),
        ASSET_MISMATCH,
        id="asset-CNYX-for-USDX-only",
    ),
    pytest.param(lambda a: a.accepting(asset=STRANGER), ASSET_MISMATCH, id="asset-random"),
    pytest.param(lambda a: a.accepting(pay_to=STRANGER), RECIPIENT_MISMATCH, id="accepted-payTo"),
    pytest.param(
        lambda a: a.accepting(amount=PRICE - 1), AMOUNT_MISMATCH, id="accepted-amount-lower"
    ),
    pytest.param(
        lambda a: a.accepting(amount=PRICE * 10), AMOUNT_MISMATCH, id="accepted-amount-higher"
    ),
    pytest.param(lambda a: a.accepting(amount=0), AMOUNT_MISMATCH, id="accepted-amount-zero"),
    pytest.param(
        lambda a: a.accepting(max_timeout_seconds=60),
        REQUIREMENTS_MISMATCH,
        id="accepted-maxTimeoutSeconds",
    ),
    pytest.param(
        lambda a: a.accepting(extra={"name": "Agent Dollar", "version": "2"}),
        REQUIREMENTS_MISMATCH,
        id="accepted-extra-version",
    ),
    pytest.param(
        lambda a: a.accepting(extra={"name": "USD Coin", "version": "1"}),
        REQUIREMENTS_MISMATCH,
        id="accepted-extra-name",
    ),
    pytest.param(
        lambda a: a.accepting(extra={"name": "Agent Dollar", "version": "1", "vip": True}),
        REQUIREMENTS_MISMATCH,
        id="accepted-extra-added-key",
    ),
    # -- `accepted` is right but the signed authorization says otherwise
    pytest.param(
        lambda a: encode_header(a.sign(to=STRANGER)), RECIPIENT_MISMATCH, id="authorization-to"
    ),
    pytest.param(
        lambda a: encode_header(a.sign(value=PRICE - 1)),
        AMOUNT_MISMATCH,
        id="authorization-value-lower",
    ),
    pytest.param(
        lambda a: encode_header(a.sign(value=PRICE + 1)),
        AMOUNT_MISMATCH,
        id="authorization-value-higher",
    ),
    pytest.param(
        lambda a: encode_header(a.sign(valid_before=a.now() - 1)),
        VALID_BEFORE,
        id="validBefore-passed",
    ),
    pytest.param(
        lambda a: encode_header(a.sign(valid_before=a.now())), VALID_BEFORE, id="validBefore-now"
    ),
    pytest.param(
        lambda a: encode_header(a.sign(valid_before=a.now() + VALIDITY_MARGIN)),
        VALID_BEFORE,
        id="validBefore-within-margin",
    ),
    pytest.param(
        lambda a: encode_header(a.sign(valid_before=0)), VALID_BEFORE, id="validBefore-zero"
    ),
    pytest.param(
        lambda a: encode_header(a.sign(valid_after=a.now() + 60)),
        VALID_AFTER,
        id="validAfter-future",
    ),
    # -- the signature does not cover these fields, or not by this payer
    pytest.param(_other_key, INVALID_SIGNATURE, id="signed-by-another-key"),
    pytest.param(
        _other_domain(lambda a, d: replace(d, chain_id=1)),
        INVALID_SIGNATURE,
        id="signed-for-chain-1",
    ),
    pytest.param(
        _other_domain(lambda a, d: replace(d, verifying_contract=a.bed.tokens["CNYX"].address)),
        INVALID_SIGNATURE,
        id="signed-for-the-other-token",
    ),
    pytest.param(
        _other_domain(lambda a, d: replace(d, version="2")),
        INVALID_SIGNATURE,
        id="signed-for-domain-version-2",
    ),
    pytest.param(
        _tampered("value", lambda a: str(PRICE), value=PRICE + 1),
        INVALID_SIGNATURE,
        id="tampered-value",
    ),
    pytest.param(
        _tampered("to", lambda a: a.offer.pay_to, to=STRANGER),
        INVALID_SIGNATURE,
        id="tampered-to",
    ),
    pytest.param(
        _tampered("nonce", lambda a: "0x" + random_nonce().hex()),
        INVALID_SIGNATURE,
        id="tampered-nonce",
    ),
    pytest.param(
        _tampered("validBefore", lambda a: str(a.now() + 3600)),
        INVALID_SIGNATURE,
        id="tampered-validBefore",
    ),
    pytest.param(
        _tampered("validAfter", lambda a: "0"), INVALID_SIGNATURE, id="tampered-validAfter"
    ),
    pytest.param(
        _tampered("from", lambda a: a.bed.owner.address),
        INVALID_SIGNATURE,
        id="tampered-from",
    ),
    pytest.param(_junk_signature(0xAB), INVALID_SIGNATURE, id="junk-signature-bad-v"),
    pytest.param(_junk_signature(27), INVALID_SIGNATURE, id="junk-signature-v27"),
    pytest.param(_junk_signature(0), INVALID_SIGNATURE, id="junk-signature-v0"),
    pytest.param(_high_s, INVALID_SIGNATURE, id="high-s-signature"),
    pytest.param(_zero_r, INVALID_SIGNATURE, id="zero-r-signature"),
]


def assert_refused(
    response: httpx.Response,
    status: int,
    reason: str,
    article: Article,
    offers: list[PaymentRequirements],
) -> None:
    """The refusal says `reason`, serves at most the preview, and confirms no payment."""
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == reason, body.get("message")
    assert_no_paid_content(response, article)
    assert PAYMENT_RESPONSE_HEADER not in response.headers
    if status == 402:
        assert body["complete"] is False
        assert body["content"] == article.preview
        required = decode_header(response.headers[PAYMENT_REQUIRED_HEADER], PaymentRequired)
        assert required.error == reason
        assert required.accepts == offers  # a fresh challenge to pay again with
    else:
        assert set(body) == {"error", "message"}
        assert PAYMENT_REQUIRED_HEADER not in response.headers


def start(bed: Testbed, http: httpx.Client, agent: TestAgent) -> tuple[Attempt, Article]:
    article = bed.catalogue.get(SLUG)
    assert article is not None
    return Attempt(bed, agent, challenge(http, SLUG)), article


@pytest.mark.parametrize(("make", "reason"), MALFORMED)
def test_unreadable_payment_header_is_400(
    bed: Testbed, http: httpx.Client, agent: TestAgent, make: Case, reason: str
) -> None:
    a, article = start(bed, http, agent)
    header = make(a)
    parties = party_addresses(bed, agent, article)
    before = ledger(bed, *parties)

    response = send(http, SLUG, header)

    assert_refused(response, 400, reason, article, a.required.accepts)
    assert delta(before, ledger(bed, *parties)) == {}


@pytest.mark.parametrize(("make", "reason"), REJECTED)
def test_unacceptable_payment_is_402(
    bed: Testbed, http: httpx.Client, agent: TestAgent, make: Case, reason: str
) -> None:
    a, article = start(bed, http, agent)
    header = make(a)
    parties = party_addresses(bed, agent, article)
    before = ledger(bed, *parties)

    response = send(http, SLUG, header)

    assert_refused(response, 402, reason, article, a.required.accepts)
    assert delta(before, ledger(bed, *parties)) == {}


def test_missing_header_is_402_payment_required(
    bed: Testbed, http: httpx.Client, agent: TestAgent
) -> None:
    article = bed.catalogue.get(SLUG)
    assert article is not None
    parties = party_addresses(bed, agent, article)
    before = ledger(bed, *parties)

    response = http.get(f"/articles/{SLUG}")

    assert response.status_code == 402
    body = response.json()
    assert body["error"] == "payment_required"
    assert body["content"] == article.preview
    assert_no_paid_content(response, article)
    required = decode_header(response.headers[PAYMENT_REQUIRED_HEADER], PaymentRequired)
    assert required.error is None  # the body names it; the header leaves `error` out
    assert delta(before, ledger(bed, *parties)) == {}


@pytest.mark.parametrize("slug", [SLUG, TWO_TOKENS])
def test_the_preview_is_the_first_third(bed: Testbed, http: httpx.Client, slug: str) -> None:
    article = bed.catalogue.get(slug)
    assert article is not None
    content = http.get(f"/articles/{slug}").json()["content"]
    assert article.body.startswith(content)
    assert len(article.body) / 5 < len(content) < len(article.body) / 2


def test_asset_mismatch_on_a_cnyx_only_article(
    bed: Testbed, http: httpx.Client, agent: TestAgent
) -> None:
    """USDX offered where only CNYX is sold (the mirror image of the parametrized case)."""
    article = bed.catalogue.get(CNYX_ONLY)
    assert article is not None
    required = challenge(http, CNYX_ONLY)
    usdx = bed.tokens["USDX"].asset
    offer = required.accepts[0].model_copy(
        update={"asset": usdx.address, "extra": {"name": usdx.eip712_name, "version": "1"}}
    )
    parties = party_addresses(bed, agent, article)
    before = ledger(bed, *parties)
    response = send(http, CNYX_ONLY, encode_header(agent.auth.sign(offer, required)))
    assert_refused(response, 402, ASSET_MISMATCH, article, required.accepts)
    assert delta(before, ledger(bed, *parties)) == {}


# -- chain state: replay, balance, cancellation ------------------------------------------------


def test_replay_for_another_article_is_refused(
    bed: Testbed, http: httpx.Client, agent: TestAgent
) -> None:
    first, second = (bed.catalogue.get(s) for s in SAME_TERMS)
    assert first is not None
    assert second is not None
    assert first.author == second.author  # so only the nonce can stop the replay
    required = challenge(http, first.slug)
    assert challenge(http, second.slug).accepts == required.accepts
    header = encode_header(agent.auth.sign(required.accepts[0], required))
    parties = party_addresses(bed, agent, first)
    assert send(http, first.slug, header).status_code == 200
    paid = ledger(bed, *parties)

    response = send(http, second.slug, header)

    # The header names the first article as its resource: refused before the nonce is looked at.
    assert_refused(response, 402, Reason.RESOURCE_MISMATCH, second, required.accepts)
    assert delta(paid, ledger(bed, *parties)) == {}

    # Stripped of its resource (a stock client may omit it), the nonce still stops it.
    payment = decode_header(header, PaymentPayload).model_copy(update={"resource": None})
    response = send(http, second.slug, encode_header(payment))
    assert_refused(response, 402, Reason.NONCE_ALREADY_USED, second, required.accepts)
    assert delta(paid, ledger(bed, *parties)) == {}


def test_unused_payment_for_one_article_cannot_buy_another(
    bed: Testbed, http: httpx.Client, agent: TestAgent
) -> None:
    first, second = (bed.catalogue.get(s) for s in SAME_TERMS)
    assert first is not None
    assert second is not None
    required = challenge(http, first.slug)
    assert challenge(http, second.slug).accepts == required.accepts  # identical offers
    header = encode_header(agent.auth.sign(required.accepts[0], required))
    parties = party_addresses(bed, agent, first)
    before = ledger(bed, *parties)

    response = send(http, second.slug, header)

    assert_refused(response, 402, Reason.RESOURCE_MISMATCH, second, required.accepts)
    assert delta(before, ledger(bed, *parties)) == {}
    assert send(http, first.slug, header).status_code == 200  # still good where it belongs


def test_insufficient_balance(bed: Testbed, http: httpx.Client) -> None:
    poor = bed.agent(funds={"USDX": "0.099999"})
    a, article = start(bed, http, poor)
    parties = party_addresses(bed, poor, article)
    before = ledger(bed, *parties)

    response = send(http, SLUG, encode_header(a.good()))

    assert_refused(response, 402, Reason.INSUFFICIENT_BALANCE, article, a.required.accepts)
    assert delta(before, ledger(bed, *parties)) == {}


def test_cancelled_authorization_is_refused(
    bed: Testbed, http: httpx.Client, agent: TestAgent
) -> None:
    a, article = start(bed, http, agent)
    payment = a.good()
    nonce = bytes.fromhex(payment.exact_evm().authorization.nonce[2:])
    token = bed.tokens["USDX"]
    domain = TokenDomain.from_requirements(a.offer)
    cancel = CancelAuthorization(agent.address, nonce)
    signature = agent.signer.sign_typed_data(cancel_authorization_typed_data(domain, cancel))
    v, r, s = split_signature(signature)
    token.contract.transact(
        funded_sender(bed),
        "cancelAuthorization",
        agent.address,
        nonce,
        v,
        r.to_bytes(32, "big"),
        s.to_bytes(32, "big"),
    )
    assert token.authorization_state(agent.address, nonce)
    parties = party_addresses(bed, agent, article)
    before = ledger(bed, *parties)

    response = send(http, SLUG, encode_header(payment))

    assert_refused(response, 402, Reason.NONCE_ALREADY_USED, article, a.required.accepts)
    assert delta(before, ledger(bed, *parties)) == {}


def test_validity_window_boundaries_on_a_frozen_clock() -> None:
    """validBefore must exceed now + VALIDITY_MARGIN, validAfter must be below now; a payment
    that waits too long expires."""
    clock = FakeClock(int(time.time()))
    frozen = Testbed.create(chain=EmbeddedChain(clock=clock))
    article = frozen.catalogue.get(SLUG)
    assert article is not None
    t = clock.now
    with frozen.client() as client:
        reader = frozen.agent(funds={"USDX": "1"})
        required = challenge(client, SLUG)
        offer = required.accepts[0]

        def pay(**changes: Any) -> httpx.Response:
            return send(client, SLUG, encode_header(authorize(reader.signer, offer, **changes)))

        parties = party_addresses(frozen, reader, article)
        before = ledger(frozen, *parties)
        for changes, reason in [
            ({"valid_before": t + VALIDITY_MARGIN}, VALID_BEFORE),
            ({"valid_after": t, "valid_before": t + 60}, VALID_AFTER),
        ]:
            assert_refused(pay(**changes), 402, reason, article, required.accepts)
        assert delta(before, ledger(frozen, *parties)) == {}

        late = encode_header(
            authorize(reader.signer, offer, valid_after=t - 1, valid_before=t + 60)
        )
        assert pay(valid_after=t - 1, valid_before=t + VALIDITY_MARGIN + 1).status_code == 200
        clock.now = t + 60 - VALIDITY_MARGIN  # the second payment waited too long
        assert_refused(send(client, SLUG, late), 402, VALID_BEFORE, article, required.accepts)
        assert delta(before, ledger(frozen, *parties)) == {
            (reader.address, "USDX"): -PRICE,
            (article.author, "USDX"): PRICE,
        }


# -- 3. client-side spending policy ----------------------------------------------------------


class CountingSigner:
    """A Signer that counts its signatures."""

    def __init__(self, inner: LocalSigner) -> None:
        self.inner = inner
        self.signatures = 0

    @property
    def address(self) -> str:
        return self.inner.address

    def sign_typed_data(self, full_message: dict[str, Any]) -> bytes:
        self.signatures += 1
        return self.inner.sign_typed_data(full_message)


class Recorder(httpx.BaseTransport):
    """Passes requests through and remembers the headers each was sent with (a copy: an auth
    flow may add headers to the same request object before retrying it)."""

    def __init__(self, inner: httpx.BaseTransport) -> None:
        self.inner = inner
        self.sent: list[httpx.Headers] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.sent.append(httpx.Headers(request.headers))
        return self.inner.handle_request(request)

    def close(self) -> None:
        self.inner.close()

    @property
    def payments_sent(self) -> int:
        return sum(PAYMENT_SIGNATURE_HEADER in headers for headers in self.sent)


@dataclass
class PolicedReader:
    signer: CountingSigner
    auth: PaymentAuth
    recorder: Recorder
    http: httpx.Client


@contextmanager
def policed_reader(
    bed: Testbed,
    *,
    max_per_payment: str = "1",
    budget: str = "10",
    tokens: tuple[str, ...] = ("USDX",),
    allowed_payees: list[str] | None = None,
    funds: str = "5",
) -> Iterator[PolicedReader]:
    signer = CountingSigner(LocalSigner.random())
    bed.fund(signer.address, "USDX", funds)
    policy = SpendingPolicy.per_token(
        [bed.tokens[s].asset for s in tokens],
        max_per_payment=max_per_payment,
        budget=budget,
        allowed_payees=allowed_payees,
    )
    auth = PaymentAuth(signer, policy)
    recorder = Recorder(SyncASGITransport(bed.app))
    with httpx.Client(transport=recorder, base_url=BASE_URL, auth=auth) as client:
        yield PolicedReader(signer, auth, recorder, client)


def test_price_over_the_per_payment_cap_is_never_signed(bed: Testbed) -> None:
    with policed_reader(bed, max_per_payment="0.2") as reader:
        before = ledger(bed, reader.signer.address)
        with pytest.raises(PolicyViolationError, match="per-payment cap"):
            reader.http.get(f"/articles/{PRICIER}")  # 0.25 USDX
        assert len(reader.recorder.sent) == 1
        assert reader.recorder.payments_sent == 0
        assert reader.signer.signatures == 0
        usdx = bed.tokens["USDX"].asset
        assert reader.auth.spending.committed_or_reserved(usdx) == 0
        assert delta(before, ledger(bed, reader.signer.address)) == {}


def test_budget_runs_out_after_some_reads(bed: Testbed) -> None:
    with policed_reader(bed, budget="0.25") as reader:
        before = ledger(bed, reader.signer.address)
        for slug in SAME_TERMS:
            assert reader.http.get(f"/articles/{slug}").status_code == 200
        with pytest.raises(PolicyViolationError, match="remaining budget"):
            reader.http.get(f"/articles/{SLUG}")
        assert reader.recorder.payments_sent == 2
        assert PAYMENT_SIGNATURE_HEADER not in reader.recorder.sent[-1]
        assert reader.signer.signatures == 2
        usdx = bed.tokens["USDX"].asset
        assert reader.auth.spending.spent(usdx) == 2 * PRICE
        assert reader.auth.spending.remaining(usdx) == 50_000
        assert delta(before, ledger(bed, reader.signer.address)) == {
            (reader.signer.address, "USDX"): -2 * PRICE
        }


def test_payee_outside_the_allowed_list_is_refused(bed: Testbed) -> None:
    article = bed.catalogue.get(SLUG)
    assert article is not None
    with policed_reader(bed, allowed_payees=[STRANGER]) as reader:
        before = ledger(bed, reader.signer.address, article.author)
        with pytest.raises(PolicyViolationError, match="not allowed"):
            reader.http.get(f"/articles/{SLUG}")
        assert reader.recorder.payments_sent == 0
        assert reader.signer.signatures == 0
        assert delta(before, ledger(bed, reader.signer.address, article.author)) == {}
    with policed_reader(bed, allowed_payees=[article.author.lower()]) as reader:
        assert reader.http.get(f"/articles/{SLUG}").status_code == 200


def test_token_outside_the_policy_is_no_acceptable_offer(bed: Testbed) -> None:
    with policed_reader(bed, tokens=("USDX",)) as reader:
        with pytest.raises(NoAcceptableOfferError):
            reader.http.get(f"/articles/{CNYX_ONLY}")
        assert reader.recorder.payments_sent == 0
        assert reader.signer.signatures == 0


def test_token_allowed_but_not_held_is_refused_and_released(bed: Testbed) -> None:
    """The policy allows CNYX but the agent holds none: it signs, the server refuses with
    insufficient balance, and the reservation is released."""
    with policed_reader(bed, tokens=("USDX", "CNYX")) as reader:
        response = reader.http.get(f"/articles/{CNYX_ONLY}")
        assert response.status_code == 402
        assert response.json()["error"] == Reason.INSUFFICIENT_BALANCE
        assert reader.recorder.payments_sent == 1
        cnyx = bed.tokens["CNYX"].asset
        assert reader.auth.spending.committed_or_reserved(cnyx) == 0
        assert reader.auth.payments == []


def test_reservation_released_on_refusal_and_committed_on_success(bed: Testbed) -> None:
    usdx = bed.tokens["USDX"].asset
    with policed_reader(bed, funds="0.05", budget="0.1") as reader:
        response = reader.http.get(f"/articles/{SLUG}")
        assert response.status_code == 402
        assert response.json()["error"] == Reason.INSUFFICIENT_BALANCE
        assert reader.recorder.payments_sent == 1
        assert reader.auth.spending.committed_or_reserved(usdx) == 0
        assert reader.auth.spending.remaining(usdx) == PRICE  # the whole budget is back

        bed.fund(reader.signer.address, "USDX", "0.05")
        response = reader.http.get(f"/articles/{SLUG}")
        assert response.status_code == 200
        assert reader.auth.spending.spent(usdx) == PRICE
        assert reader.auth.spending.committed_or_reserved(usdx) == PRICE
        assert reader.auth.spending.remaining(usdx) == 0
        assert bed.balance(reader.signer.address) == 0


def test_declining_in_decide_returns_the_preview_unpaid(bed: Testbed) -> None:
    article = bed.catalogue.get(SLUG)
    assert article is not None
    seen: list[str] = []

    def decide(response: httpx.Response, _: PaymentRequired, __: PaymentRequirements) -> bool:
        seen.append(response.json()["content"])
        return False

    reader = bed.agent(funds={"USDX": "1"}, decide=decide)
    before = ledger(bed, reader.address)
    with bed.client(reader) as client:
        response = client.get(f"/articles/{SLUG}")
    assert response.status_code == 402
    assert seen == [article.preview]
    assert delta(before, ledger(bed, reader.address)) == {}


# -- 4. failed delivery ------------------------------------------------------------------------


def test_render_failure_is_503_and_charges_nothing() -> None:
    def broken(article: Article) -> str:
        raise RuntimeError("the disk is on fire")

    down = Testbed.create(render=broken)
    reader = down.agent(funds={"USDX": "1"})
    article = down.catalogue.get(SLUG)
    assert article is not None
    parties = party_addresses(down, reader, article)
    before = ledger(down, *parties)
    with down.client() as client:
        required = challenge(client, SLUG)
        payment = reader.auth.sign(required.accepts[0], required)
        response = send(client, SLUG, encode_header(payment))

    assert response.status_code == 503
    assert response.json()["error"] == Reason.CONTENT_UNAVAILABLE
    assert response.headers["Retry-After"] == "1"
    assert "content" not in response.json()
    assert_no_paid_content(response, article)
    assert PAYMENT_RESPONSE_HEADER not in response.headers
    assert delta(before, ledger(down, *parties)) == {}
    nonce = bytes.fromhex(payment.exact_evm().authorization.nonce[2:])
    assert not down.tokens["USDX"].authorization_state(reader.address, nonce)


def test_render_failure_with_the_paying_client_keeps_the_reservation() -> None:
    """The client cannot tell a 503 from a lost answer, so it keeps the amount reserved
    (it never under-counts); nothing moved on chain."""

    def broken(article: Article) -> str:
        raise RuntimeError("the disk is on fire")

    down = Testbed.create(render=broken)
    reader = down.agent(funds={"USDX": "1"})
    before = ledger(down, reader.address)
    with down.client(reader) as client:
        response = client.get(f"/articles/{SLUG}")
    assert response.status_code == 503
    usdx = down.tokens["USDX"].asset
    assert reader.spending.spent(usdx) == 0
    assert reader.spending.committed_or_reserved(usdx) == PRICE
    assert delta(before, ledger(down, reader.address)) == {}


class Sabotage:
    """A renderer that, while the article is being produced (after verify, before settle),
    runs `attack` once, then renders normally."""

    def __init__(self) -> None:
        self.attack: Callable[[], None] | None = None

    def __call__(self, article: Article) -> str:
        attack, self.attack = self.attack, None
        if attack is not None:
            attack()
        return article.body


SINK = LocalSigner.random().address


@pytest.mark.parametrize("mine", [True, False], ids=["mined-before-settle", "same-block"])
def test_a_front_run_settlement_is_this_payment(mine: bool) -> None:
    """Between verify and settle, someone else submits the same authorization, in an earlier
    block or in the same block before ours (which then reverts). The signature binds payer,
    payee, value and nonce, so that transfer *is* this payment: the reader gets the article,
    PAYMENT-RESPONSE names the front-runner's transaction, and the price moved once."""
    sabotage = Sabotage()
    bed = Testbed.create(render=sabotage)
    reader = bed.agent(funds={"USDX": "1"})
    article = bed.catalogue.get(SLUG)
    assert article is not None
    parties = party_addresses(bed, reader, article)
    front_run: list[bytes] = []
    with bed.client() as client:
        required = challenge(client, SLUG)
        payment = authorize(reader.signer, required.accepts[0], required)
        sabotage.attack = lambda: front_run.append(submit_directly(bed, payment, mine=mine))
        before = ledger(bed, *parties)

        response = send(client, SLUG, encode_header(payment))

    assert sabotage.attack is None, "the attack did not run"
    front_runner = funded_sender(bed).address
    settled = check_paid_response(bed, response, reader, article, PRICE, submitted_by=front_runner)
    assert settled.transaction == "0x" + front_run[0].hex()
    assert delta(before, ledger(bed, *parties)) == {
        (reader.address, "USDX"): -PRICE,
        (article.author, "USDX"): PRICE,
    }


@pytest.mark.parametrize("mine", [True, False], ids=["mined-before-settle", "same-block"])
def test_settlement_failure_serves_nothing_and_charges_at_most_once(mine: bool) -> None:
    """Between verify and settle, the agent's whole balance leaves with another authorization
    (drain), in an earlier block (settlement's re-verify refuses) or in the same block before
    the settlement (the settlement transaction reverts). The reader gets a 402 without the paid
    part, and the only money that moved is the attacker's one transfer."""
    sabotage = Sabotage()
    bed = Testbed.create(render=sabotage)
    reader = bed.agent(funds={"USDX": "1"})
    article = bed.catalogue.get(SLUG)
    assert article is not None
    parties = (*party_addresses(bed, reader, article), SINK)
    with bed.client() as client:
        required = challenge(client, SLUG)
        payment = authorize(reader.signer, required.accepts[0], required)
        everything = bed.balance(reader.address)
        drain = authorize(reader.signer, required.accepts[0], to=SINK, value=everything)
        sabotage.attack = lambda: submit_directly(bed, drain, mine=mine)
        moved = {(reader.address, "USDX"): -everything, (SINK, "USDX"): everything}
        before = ledger(bed, *parties)

        response = send(client, SLUG, encode_header(payment))

    assert sabotage.attack is None, "the attack did not run"
    assert response.status_code == 402, response.text
    assert response.json()["content"] == article.preview
    assert_no_paid_content(response, article)
    assert PAYMENT_RESPONSE_HEADER not in response.headers
    assert delta(before, ledger(bed, *parties)) == moved
    # Same block: the revert reason is the token's "erc20: transfer amount exceeds balance".
    assert response.json()["error"] == Reason.INSUFFICIENT_BALANCE
    # Mined first: settlement's own re-verify refuses. Same block: the settlement reverts.
    assert ("transfer reverted" in response.json()["message"]) is not mine


def test_settlement_reverting_on_balance_reports_insufficient_balance() -> None:
    sabotage = Sabotage()
    bed = Testbed.create(render=sabotage)
    reader = bed.agent(funds={"USDX": "1"})
    with bed.client() as client:
        required = challenge(client, SLUG)
        payment = authorize(reader.signer, required.accepts[0], required)
        drain = authorize(reader.signer, required.accepts[0], to=SINK, value=1_000_000)
        sabotage.attack = lambda: submit_directly(bed, drain, mine=False)
        response = send(client, SLUG, encode_header(payment))
    assert response.status_code == 402
    assert response.json()["error"] == Reason.INSUFFICIENT_BALANCE


# -- 5. concurrency --------------------------------------------------------------------------


@pytest.mark.anyio
async def test_many_agents_reading_concurrently_pay_exactly_once_each(bed: Testbed) -> None:
    slugs = (SLUG, PRICIER, CNYX_ONLY)
    articles = [bed.catalogue.get(s) for s in slugs]
    readers = bed.agents(20, funds={"USDX": "1", "CNYX": "1"})
    authors = {a.author for a in articles if a is not None}
    addresses = [r.address for r in readers] + sorted(authors) + [bed.scheme.signer_address]
    before = ledger(bed, *addresses)

    clients = [bed.async_client(r) for r in readers]
    try:
        responses = await asyncio.gather(
            *(client.get(f"/articles/{slug}") for client in clients for slug in slugs)
        )
    finally:
        await asyncio.gather(*(client.aclose() for client in clients))

    assert [r.status_code for r in responses] == [200] * 60
    assert all(r.json()["complete"] for r in responses)
    transactions = {
        decode_header(r.headers[PAYMENT_RESPONSE_HEADER], SettleResponse).transaction
        for r in responses
    }
    assert len(transactions) == 60

    expected: dict[tuple[str, str], int] = {}
    for reader in readers:
        expected[reader.address, "USDX"] = -(100_000 + 250_000)
        expected[reader.address, "CNYX"] = -100_000
    for article in articles:
        assert article is not None
        [(symbol, price)] = article.prices.items()
        key = (article.author, symbol)
        expected[key] = expected.get(key, 0) + 20 * int(price * 10**6)
    assert delta(before, ledger(bed, *addresses)) == expected
    for reader in readers:
        assert len(reader.auth.payments) == 3


@pytest.mark.anyio
async def test_one_payment_sent_thirty_times_at_once_is_charged_once_and_read_thirty_times(
    bed: Testbed, agent: TestAgent
) -> None:
    article = bed.catalogue.get(SLUG)
    assert article is not None
    parties = party_addresses(bed, agent, article)
    async with bed.async_client() as client:
        response = await client.get(f"/articles/{SLUG}")
        required = decode_header(response.headers[PAYMENT_REQUIRED_HEADER], PaymentRequired)
        header = encode_header(agent.auth.sign(required.accepts[0], required))
        before = ledger(bed, *parties)

        responses = await asyncio.gather(
            *(
                client.get(f"/articles/{SLUG}", headers={PAYMENT_SIGNATURE_HEADER: header})
                for _ in range(30)
            )
        )

    # The same payer sent them all: every copy gets the article, one settlement pays for all.
    assert [r.status_code for r in responses] == [200] * 30
    transactions = {
        decode_header(r.headers[PAYMENT_RESPONSE_HEADER], SettleResponse).transaction
        for r in responses
    }
    assert len(transactions) == 1
    assert delta(before, ledger(bed, *parties)) == {
        (agent.address, "USDX"): -PRICE,
        (article.author, "USDX"): PRICE,
    }


@pytest.mark.anyio
async def test_two_reads_racing_for_one_balance_charge_once(bed: Testbed) -> None:
    """An agent holding the price of one read pays for two articles at once with two valid
    authorizations (distinct nonces): both verify, only one can settle."""
    reader = bed.agent(funds={"USDX": "0.1"})
    first, second = (bed.catalogue.get(s) for s in SAME_TERMS)
    assert first is not None
    assert second is not None
    parties = party_addresses(bed, reader, first)
    before = ledger(bed, *parties)
    async with bed.async_client() as client:
        headers = []
        for article in (first, second):
            response = await client.get(f"/articles/{article.slug}")
            required = decode_header(response.headers[PAYMENT_REQUIRED_HEADER], PaymentRequired)
            headers.append(encode_header(reader.auth.sign(required.accepts[0], required)))
        responses = await asyncio.gather(
            *(
                client.get(f"/articles/{article.slug}", headers={PAYMENT_SIGNATURE_HEADER: h})
                for article, h in zip((first, second), headers, strict=True)
            )
        )

    assert sorted(r.status_code for r in responses) == [200, 402]
    refused = next(r for r in responses if r.status_code == 402)
    assert refused.json()["error"] in {Reason.INSUFFICIENT_BALANCE, Reason.TRANSACTION_FAILED}
    for article, response in zip((first, second), responses, strict=True):
        if response.status_code == 402:
            assert_no_paid_content(response, article)
    assert delta(before, ledger(bed, *parties)) == {
        (reader.address, "USDX"): -PRICE,
        (first.author, "USDX"): PRICE,
    }
