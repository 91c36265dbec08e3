"""Interoperability with the stock x402 Python SDK (the `x402` package), over our node.

(a) x402's own client, with our token added to its allowed assets, pays our content server,
    which settles on `agent-pay node` through `JsonRpcChain`.
(b) Our client pays a FastAPI app protected by x402's own payment middleware, whose facilitator
    is x402's own exact EVM facilitator with its web3.py signer (`FacilitatorWeb3Signer`),
    settling on `agent-pay node` over JSON-RPC.

Everything runs over real HTTP on 127.0.0.1, and balances are checked on chain afterwards.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

try:
    from x402 import x402Client, x402Facilitator, x402ResourceServer
    from x402.http.clients.httpx import PaymentError, x402HttpxClient
    from x402.http.middleware.fastapi import payment_middleware
    from x402.http.types import PaymentOption, RouteConfig
    from x402.mechanisms.evm.exact import (
        ExactEvmServerScheme,
        register_exact_evm_client,
        register_exact_evm_facilitator,
    )
    from x402.mechanisms.evm.signers import EthAccountSigner, FacilitatorWeb3Signer
except ImportError as missing:  # a test-only dependency
    if os.environ.get("CI", "").lower() == "true":
        raise
    pytest.skip(f"the x402 package is not installed ({missing})", allow_module_level=True)

from eth_account import Account
from eth_account.signers.local import LocalAccount
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from starlette.requests import Request
from starlette.responses import Response

from agent_pay.chain.dev_roles import STOCK_FACILITATOR_INDEX
from agent_pay.chain.devkeys import dev_account
from agent_pay.client.auth import PaymentAuth
from agent_pay.client.policy import SpendingPolicy
from agent_pay.protocol import SettleResponse
from agent_pay.protocol.codec import PAYMENT_RESPONSE_HEADER, decode_header
from agent_pay.serving import serve_app
from agent_pay.signing import LocalSigner
from tests._on_node import OnNode, stack_on_node

SLUG = "why-micropayments-failed"  # 0.1 USDX
PRICE = 100_000


@pytest.fixture(scope="module")
def on_node() -> Iterator[OnNode]:
    with stack_on_node() as ground:
        yield ground


def funded(on_node: OnNode, amount: str = "1") -> LocalAccount:
    account: LocalAccount = Account.create()
    on_node.stack.fund(account.address, "USDX", amount)
    return account


def stock_client(account: LocalAccount, allowed: dict[str, Any] | None) -> x402Client:
    client = x402Client()
    register_exact_evm_client(client, EthAccountSigner(account), networks="eip155:31337")
    if allowed is not None:
        client.set_spend_controls({"allowed_assets": [allowed]})
    return client


# -- (a) the stock client pays our server --------------------------------------------------------


@pytest.mark.anyio
async def test_the_stock_client_pays_our_server_on_our_node(on_node: OnNode) -> None:
    account = funded(on_node)
    usdx = on_node.stack.tokens["USDX"].asset
    article = on_node.stack.catalogue.get(SLUG)
    assert article is not None
    before = (on_node.usdx(account.address), on_node.usdx(article.author))
    allowed = {"network": usdx.network, "asset": usdx.address, "max_amount_per_payment": "200000"}

    async with x402HttpxClient(
        stock_client(account, allowed), base_url=on_node.server_url, timeout=30
    ) as http:
        response = await http.get(f"/articles/{SLUG}")

    assert response.status_code == 200, response.text
    assert response.json()["complete"] is True
    assert response.json()["content"] == article.body
    settled = decode_header(response.headers[PAYMENT_RESPONSE_HEADER], SettleResponse)
    assert settled.success
    assert settled.payer == account.address
    receipt = on_node.stack.chain.get_receipt(bytes.fromhex(settled.transaction[2:]))
    assert receipt is not None
    assert receipt.status
    after = (on_node.usdx(account.address), on_node.usdx(article.author))
    assert (after[0] - before[0], after[1] - before[1]) == (-PRICE, PRICE)


@pytest.mark.anyio
async def test_the_stock_client_refuses_our_token_until_it_is_allowed(on_node: OnNode) -> None:
    """x402's client pays only tokens it knows unless told otherwise: nothing is signed."""
    account = funded(on_node)
    before = on_node.usdx(account.address)

    async with x402HttpxClient(
        stock_client(account, None), base_url=on_node.server_url, timeout=30
    ) as http:
        with pytest.raises(PaymentError, match="spend_controls"):
            await http.get(f"/articles/{SLUG}")

    assert on_node.usdx(account.address) == before


# -- (b) our client pays the stock server --------------------------------------------------------


def stock_server(on_node: OnNode, payee: str) -> FastAPI:
    """x402's FastAPI middleware in front of one paid route; x402's facilitator settles it on
    our node through web3.py."""
    usdx = on_node.stack.tokens["USDX"].asset
    key = "0x" + bytes(dev_account(STOCK_FACILITATOR_INDEX).key).hex()
    signer = FacilitatorWeb3Signer(
        private_key=key, rpc_url=on_node.node_url, confirmation_timeout_seconds=30
    )
    facilitator = x402Facilitator()
    register_exact_evm_facilitator(facilitator, signer, networks=usdx.network)
    server = x402ResourceServer(facilitator)
    server.register(usdx.network, ExactEvmServerScheme())
    routes = {
        "GET /premium": RouteConfig(
            accepts=PaymentOption(
                scheme="exact",
                pay_to=payee,
                price={
                    "amount": str(PRICE),
                    "asset": usdx.address,
                    "extra": {"name": usdx.eip712_name, "version": usdx.eip712_version},
                },
                network=usdx.network,
                max_timeout_seconds=120,
            ),
            description="a premium report",
            mime_type="application/json",
        )
    }
    app = FastAPI()
    middleware = payment_middleware(routes, server)

    @app.middleware("http")
    async def x402(request: Request, call_next: Any) -> Response:
        response: Response = await middleware(request, call_next)
        return response

    @app.get("/premium")
    async def premium() -> JSONResponse:
        return JSONResponse({"content": "the premium report"})

    return app


def test_our_client_pays_the_stock_server_whose_facilitator_settles_on_our_node(
    on_node: OnNode,
) -> None:
    payer = LocalSigner.random()
    on_node.stack.fund(payer.address, "USDX", "1")
    payee = Account.create().address
    usdx = on_node.stack.tokens["USDX"].asset
    auth = PaymentAuth(payer, SpendingPolicy.per_token([usdx], max_per_payment="0.2", budget="1"))

    with (
        serve_app(stock_server(on_node, payee)) as url,
        httpx.Client(base_url=url, auth=auth, timeout=30) as http,
    ):
        response = http.get("/premium")

    assert response.status_code == 200, response.text
    assert response.json() == {"content": "the premium report"}
    settled = decode_header(response.headers[PAYMENT_RESPONSE_HEADER], SettleResponse)
    assert settled.success
    assert settled.payer == payer.address
    [record] = auth.payments
    assert record.transaction == settled.transaction
    receipt = on_node.stack.chain.get_receipt(bytes.fromhex(settled.transaction[2:]))
    assert receipt is not None
    assert receipt.status
    assert receipt.sender == dev_account(STOCK_FACILITATOR_INDEX).address
    assert on_node.usdx(payer.address) == 1_000_000 - PRICE
    assert on_node.usdx(payee) == PRICE
    assert auth.spending.spent(usdx) == PRICE
