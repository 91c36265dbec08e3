"""Discovery for machines: `/.well-known/x402` (x402's discovery shape) and `/llms.txt`."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from agent_pay.protocol import PaymentRequired, PaymentRequirements
from agent_pay.protocol.codec import PAYMENT_REQUIRED_HEADER, decode_header
from agent_pay.testing import Testbed

BASE = "http://testserver"


@pytest.fixture(scope="module")
def bed() -> Iterator[Testbed]:
    bed = Testbed.create(schemes=("exact", "channel"))
    yield bed
    bed.close()


@pytest.fixture(scope="module")
def http(bed: Testbed) -> Iterator[httpx.Client]:
    with bed.client() as client:
        yield client


def test_well_known_x402_lists_every_article_with_the_402s_offers(
    bed: Testbed, http: httpx.Client
) -> None:
    response = http.get("/.well-known/x402")
    assert response.status_code == 200
    document = response.json()
    assert document["x402Version"] == 2
    items = document["items"]
    assert len(items) == len(list(bed.catalogue)) == document["pagination"]["total"]
    for item in items:
        assert item["type"] == "http"
        assert item["x402Version"] == 2
        assert isinstance(item["lastUpdated"], int)
        assert item["resource"].startswith(f"{BASE}/articles/")
        # The same offers as the 402 of that resource: a client may pay from either.
        answer = http.get(item["resource"].removeprefix(BASE))
        required = decode_header(answer.headers[PAYMENT_REQUIRED_HEADER], PaymentRequired)
        listed = [PaymentRequirements.from_wire(offer) for offer in item["accepts"]]
        assert listed == required.accepts
        slug = item["resource"].rsplit("/", 1)[1]
        article = bed.catalogue.get(slug)
        assert article is not None
        assert item["metadata"]["title"] == article.title
        assert item["metadata"]["prices"] == {s: str(p) for s, p in article.prices.items()}
    assert document["schemes"] == ["exact", "channel"]
    assert document["networks"] == ["eip155:31337"]
    assert {"sign-in-with-x", "payment-identifier", "offer-receipt"} <= set(document["extensions"])
    agent_pay = http.get("/.well-known/agent-pay").json()
    assert document["receiptSigner"] == agent_pay["receiptSigner"]


def test_llms_txt_tells_an_agent_what_is_sold_and_how_to_pay(
    bed: Testbed, http: httpx.Client
) -> None:
    response = http.get("/llms.txt")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert text.startswith("# agent-pay content server\n")
    for article in bed.catalogue:
        line = next(x for x in text.splitlines() if f"{BASE}/articles/{article.slug})" in x)
        assert article.title in line
        for symbol, price in article.prices.items():
            assert f"{price} {symbol}" in line
    for needle in ("PAYMENT-SIGNATURE", "SIGN-IN-WITH-X", "/.well-known/x402", "402"):
        assert needle in text
    for symbol, token in bed.tokens.items():
        assert f"{symbol}: token {token.asset.address} on eip155:31337" in text
