"""`agent-pay mcp`'s tools against servers and arguments a model may hand them: a server that
lies in its 402, one that takes a payment without confirming it, redirects, and strings that are
not URLs. Over policy nothing is signed; every failure is a tool error that says why; and the
tool never tells the model a read was free when it signed a payment."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("mcp")

from mcp import Client
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from agent_pay.client.auth import PaymentAuth
from agent_pay.client.policy import Spending, SpendingPolicy
from agent_pay.client.receipts import ReceiptStore
from agent_pay.mcp.agent import PayingAgent
from agent_pay.mcp.server import build_server
from agent_pay.protocol import PaymentRequired, PaymentRequirements
from agent_pay.protocol.codec import (
    PAYMENT_REQUIRED_HEADER,
    PAYMENT_SIGNATURE_HEADER,
    decode_header,
    encode_header,
)
from agent_pay.serving import serve_app
from agent_pay.signing import LocalSigner
from agent_pay.testing import Testbed

SLUG = "why-micropayments-failed"  # 0.1 USDX


class Liar:
    """A content server that answers 402 with whatever offer it is told to, and 200 to any
    payment, without a PAYMENT-RESPONSE (it keeps the payment and confirms nothing)."""

    def __init__(self, real: PaymentRequired) -> None:
        self.real = real
        self.offer: dict[str, Any] | PaymentRequirements = real.accepts[0]
        self.payments: list[str] = []
        self.listing: Any = {"articles": []}
        self.app = Starlette(
            routes=[Route("/articles", self.articles), Route("/articles/{slug}", self.article)]
        )

    async def articles(self, _: Request) -> Response:
        return JSONResponse(self.listing)

    async def article(self, request: Request) -> Response:
        if PAYMENT_SIGNATURE_HEADER in request.headers:
            self.payments.append(request.headers[PAYMENT_SIGNATURE_HEADER])
            return JSONResponse({"title": "t", "content": "the rest", "complete": True})
        if isinstance(self.offer, PaymentRequirements):
            header = encode_header(self.real.model_copy(update={"accepts": [self.offer]}))
        else:
            required = {"x402Version": 2, "accepts": [self.offer]}
            header = base64.b64encode(json.dumps(required).encode()).decode()
        return JSONResponse({"content": "free part"}, 402, {PAYMENT_REQUIRED_HEADER: header})


@pytest.fixture(scope="module")
def bed() -> Testbed:
    return Testbed.create()


@pytest.fixture(scope="module")
def liar(bed: Testbed) -> Iterator[tuple[Liar, str]]:
    with bed.client() as http:
        answer = http.get(f"/articles/{SLUG}")
    real = decode_header(answer.headers[PAYMENT_REQUIRED_HEADER], PaymentRequired)
    fake = Liar(real)
    with serve_app(fake.app) as url:
        yield fake, url


def paying_agent(bed: Testbed, tmp_path: Path) -> PayingAgent:
    signer = LocalSigner.random()
    bed.fund(signer.address, "USDX", "5")
    usdx = bed.tokens["USDX"].asset
    policy = SpendingPolicy.per_token([usdx], max_per_payment="0.2", budget="1")
    return PayingAgent(
        signer,
        Spending.open(policy, tmp_path, signer.address),
        ReceiptStore.open(tmp_path),
        bed.assets,
    )


def offer_of(liar: Liar, **changes: Any) -> PaymentRequirements:
    real = liar.real.accepts[0]
    return real.model_copy(update=changes)


@pytest.mark.anyio
@pytest.mark.parametrize(
    "lie",
    [
        "huge-amount",
        "over-the-cap",
        "another-token",
        "another-network",
        "another-family",
        "valid-for-ages",
        "valid-past-uint256",
    ],
)
async def test_a_lying_402_signs_nothing(
    bed: Testbed, liar: tuple[Liar, str], tmp_path: Path, lie: str
) -> None:
    fake, url = liar
    fake.offer = {
        "huge-amount": offer_of(fake, amount=10**30),
        "over-the-cap": offer_of(fake, amount=200_001),
        "another-token": offer_of(fake, asset="0x" + "12" * 20),
        "another-network": offer_of(fake, network="eip155:1"),
        # An authorization a server could hold and settle for 31,000 years; and one whose
        # validBefore does not fit a uint256, which used to fail after the amount was reserved
        # (held in flight for good: a server could drain the budget without being paid).
        "valid-for-ages": offer_of(fake, max_timeout_seconds=10**12),
        "valid-past-uint256": offer_of(fake, max_timeout_seconds=2**256),
        "another-family": {
            "scheme": "exact",
            "network": "solana:5eykt4UsFv8P8NJdTREpY1vzqKqZKvdp",
            "amount": "1",
            "asset": "So11111111111111111111111111111111111111112",
            "payTo": "9xQeWvG816bUx9EPjHmaT23yvVM2ZWbrrpZb9PusVFin",
            "maxTimeoutSeconds": 60,
            "extra": {},
        },
    }[lie]
    agent = paying_agent(bed, tmp_path)
    before = len(fake.payments)
    try:
        async with Client(build_server(agent)) as client:
            refused = await client.call_tool("buy_article", {"url": f"{url}/articles/{lie}"})
            report = (await client.call_tool("spending", {})).structured_content
    finally:
        await agent.aclose()
    assert refused.is_error
    assert "Nothing was signed" in refused.content[0].text
    assert len(fake.payments) == before
    assert report is not None
    assert report["tokens"][0]["inFlight"] == "0 USDX"


@pytest.mark.anyio
async def test_a_payment_the_server_never_confirmed_is_not_reported_free(
    bed: Testbed, liar: tuple[Liar, str], tmp_path: Path
) -> None:
    """The server took a payment within the policy and answered 200 without PAYMENT-RESPONSE:
    the tool says what was signed and that it is unconfirmed, not "free". It used to answer
    `cost: 0, how: free: the server asked for no payment` with 0.1 USDX in flight."""
    fake, url = liar
    fake.offer = offer_of(fake)
    agent = paying_agent(bed, tmp_path)
    try:
        async with Client(build_server(agent)) as client:
            result = await client.call_tool("buy_article", {"url": f"{url}/articles/{SLUG}"})
            report = (await client.call_tool("spending", {})).structured_content
    finally:
        await agent.aclose()
    assert not result.is_error
    bought = result.structured_content
    assert bought is not None
    assert bought["cost"] == "0.1 USDX"
    assert "not confirmed" in bought["how"]
    assert report is not None
    assert report["tokens"][0]["inFlight"] == "0.1 USDX"


@pytest.mark.anyio
@pytest.mark.parametrize(
    "url",
    [
        "x" * 100_000,
        "http://[::1",
        "http://127.0.0.1:99999/articles/a",
        "http://127.0.0.1:1/articles/\x00",
        "file:///etc/passwd",
        "not a url",
        "",
    ],
    ids=["huge", "open-bracket", "port-out-of-range", "nul", "file", "words", "empty"],
)
@pytest.mark.parametrize("tool", ["buy_article", "preview_article", "list_articles"])
async def test_a_url_that_cannot_be_fetched_is_a_tool_error_saying_why(
    bed: Testbed, tmp_path: Path, url: str, tool: str
) -> None:
    """Each is a tool error naming the problem ("could not ..."), not the SDK's bare
    "Error executing tool" that an unexpected exception becomes (it was, for URLs httpx cannot
    even parse)."""
    agent = paying_agent(bed, tmp_path)
    argument = "server_url" if tool == "list_articles" else "url"
    try:
        async with Client(build_server(agent)) as client:
            result = await client.call_tool(tool, {argument: url})
    finally:
        await agent.aclose()
    assert result.is_error
    assert "could not" in result.content[0].text


@pytest.mark.anyio
async def test_a_redirect_is_not_a_free_read(bed: Testbed, tmp_path: Path) -> None:
    """A URL with a trailing slash is redirected by the server: buy_article says so as a tool
    error, instead of returning an empty article "free: the server asked for no payment"."""
    agent = paying_agent(bed, tmp_path)
    try:
        with bed.serve() as base:
            async with Client(build_server(agent)) as client:
                result = await client.call_tool("buy_article", {"url": f"{base}/articles/{SLUG}/"})
    finally:
        await agent.aclose()
    assert result.is_error
    assert "307" in result.content[0].text
    assert bed.balance(agent.signer.address) == 5_000_000


@pytest.mark.anyio
@pytest.mark.parametrize(
    "listing",
    [{"articles": 5}, {"articles": [1, "two", None]}, {"articles": [{"prices": 7}]}, [1], "x"],
    ids=["a-number", "not-objects", "prices-a-number", "a-list", "a-string"],
)
async def test_a_catalogue_of_the_wrong_shape_is_a_tool_error_saying_why(
    bed: Testbed, liar: tuple[Liar, str], tmp_path: Path, listing: Any
) -> None:
    """list_articles against a server whose /articles is JSON of another shape: a tool error
    saying it is not an agent-pay content server (it was the SDK's bare "Error executing
    tool" for all but a missing key)."""
    fake, url = liar
    fake.listing = listing
    agent = paying_agent(bed, tmp_path)
    try:
        async with Client(build_server(agent)) as client:
            result = await client.call_tool("list_articles", {"server_url": url})
    finally:
        await agent.aclose()
    assert result.is_error
    assert "is not an agent-pay content server" in result.content[0].text


def test_a_signing_failure_releases_the_reservation(
    bed: Testbed, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A signer that fails (a remote signer down, a hardware key unplugged) signs nothing, so
    nothing may stay reserved against the budget."""

    def unavailable(*_: Any) -> Any:
        raise RuntimeError("the signer is unavailable")

    usdx = bed.tokens["USDX"].asset
    spending = Spending(SpendingPolicy.per_token([usdx], max_per_payment="0.2", budget="1"))
    auth = PaymentAuth(LocalSigner.random(), spending)
    monkeypatch.setattr(auth.schemes["exact"], "sign", unavailable)
    with bed.client() as http, pytest.raises(RuntimeError):
        http.get(f"/articles/{SLUG}", auth=auth)
    assert spending.committed_or_reserved(usdx) == 0
