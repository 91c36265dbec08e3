"""Paid MCP tools in x402's MCP transport, both ways, with the stock `x402` package, settling on
`agent-pay node` (the embedded chain over JSON-RPC):

(a) the content server's articles as paid MCP tools (`paid_article_server`), paid by the stock
    `x402.mcp` client, and by ours (`ToolPayer`);
(b) our `ToolPayer` paying a paid tool made with the stock `x402.mcp` server wrapper, whose
    facilitator is x402's own exact EVM facilitator (web3.py), within our spending policy.

MCP is the official SDK, 2.x, connected in process (`mcp.Client(server)`). x402 2.25's MCP
code was written for MCP 1.x objects (`result.isError`, `content` as dicts; its FastMCP
decorator imports `mcp.server.fastmcp`, gone in 2.x), so each side here has a few lines of
glue; the x402 logic — probing, building and sending the payment, verifying and settling — is
the stock package's own.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

pytest.importorskip("mcp")
try:
    from x402 import ResourceConfig, x402Client, x402Facilitator, x402ResourceServer
    from x402.mcp import x402MCPClient
    from x402.mcp.server_async import PaymentWrapperConfig, create_payment_wrapper
    from x402.mechanisms.evm.exact import (
        ExactEvmServerScheme,
        register_exact_evm_client,
        register_exact_evm_facilitator,
    )
    from x402.mechanisms.evm.signers import EthAccountSigner, FacilitatorWeb3Signer
    from x402.schemas import ResourceInfo as X402ResourceInfo
except ImportError as missing:  # a test-only dependency
    if os.environ.get("CI", "").lower() == "true":
        raise
    pytest.skip(f"the x402 package is not installed ({missing})", allow_module_level=True)

from eth_account import Account
from eth_account.signers.local import LocalAccount
from mcp import Client
from mcp.server.mcpserver import Context, MCPServer
from mcp.types import CallToolResult, TextContent

from agent_pay.chain.dev_roles import STOCK_FACILITATOR_INDEX
from agent_pay.chain.devkeys import dev_account
from agent_pay.client.policy import Spending, SpendingPolicy
from agent_pay.errors import PolicyViolationError
from agent_pay.mcp.paid_tools import paid_article_server, tool_name
from agent_pay.mcp.payer import ToolPayer
from agent_pay.mcp.transport import payment_required_in
from agent_pay.protocol.extensions import SignedReceipt, receipt_info
from agent_pay.signing import LocalSigner
from tests._on_node import OnNode, stack_on_node

SLUG = "why-micropayments-failed"  # 0.1 USDX
PRICE = 100_000


@pytest.fixture(scope="module")
def on_node() -> Iterator[OnNode]:
    with stack_on_node() as ground:
        yield ground


# -- (a) our articles as paid MCP tools ------------------------------------------------------


class _StockShape:
    """What x402's generic `x402MCPClient` expects of an MCP client: `call_tool(params)` and a
    result with `isError`, `structuredContent`, `_meta` and `content` as dicts (MCP 1.x and the
    TypeScript SDK's shape); the official 2.x `Client` answers pydantic models."""

    def __init__(self, client: Client) -> None:
        self.client = client

    async def call_tool(self, params: dict[str, Any], **_: Any) -> Any:
        result = await self.client.call_tool(
            params["name"], params.get("arguments"), meta=params.get("_meta")
        )
        return SimpleNamespace(
            content=[
                block.model_dump(by_alias=True, exclude_none=True) for block in result.content
            ],
            isError=result.is_error,
            structuredContent=result.structured_content,
            _meta=result.meta or {},
        )


@pytest.mark.anyio
async def test_the_stock_x402_mcp_client_pays_our_articles_as_paid_tools(on_node: OnNode) -> None:
    account: LocalAccount = Account.create()
    on_node.stack.fund(account.address, "USDX", "1")
    usdx = on_node.stack.tokens["USDX"].asset
    article = on_node.stack.catalogue.get(SLUG)
    assert article is not None
    author_before = on_node.usdx(article.author)
    stock = x402Client()
    register_exact_evm_client(stock, EthAccountSigner(account), networks=usdx.network)
    stock.set_spend_controls(
        {
            "allowed_assets": [
                {"network": usdx.network, "asset": usdx.address, "max_amount_per_payment": "200000"}
            ]
        }
    )
    server, tools = await paid_article_server(on_node.server_url)
    try:
        async with Client(server) as client:
            listed = {tool.name: tool for tool in (await client.list_tools()).tools}
            assert "PAID (0.1 USDX" in (listed[tool_name(SLUG)].description or "")

            unpaid = await client.call_tool(tool_name(SLUG), {})
            required = payment_required_in(unpaid)
            assert required is not None
            assert [offer.amount for offer in required.accepts] == [PRICE]

            paid = await x402MCPClient(_StockShape(client), stock).call_tool(tool_name(SLUG), {})
    finally:
        await tools.http.aclose()

    assert paid.payment_made
    assert not paid.is_error
    assert article.body in paid.content[0]["text"]
    assert paid.payment_response is not None
    assert paid.payment_response.success
    assert on_node.usdx(account.address) == 1_000_000 - PRICE
    assert on_node.usdx(article.author) == author_before + PRICE


@pytest.mark.anyio
async def test_our_tool_payer_pays_our_paid_tools_once_within_the_policy(on_node: OnNode) -> None:
    signer = LocalSigner.random()
    on_node.stack.fund(signer.address, "USDX", "1")
    usdx = on_node.stack.tokens["USDX"].asset
    spending = Spending(SpendingPolicy.per_token([usdx], max_per_payment="0.2", budget="0.15"))
    server, tools = await paid_article_server(on_node.server_url)
    try:
        async with Client(server) as client:
            payer = ToolPayer(client, signer, spending)
            paid = await payer.call_tool(tool_name(SLUG))
            assert paid.settlement is not None
            receipt = SignedReceipt.from_wire(receipt_info(paid.settlement.extensions))
            assert receipt.payer == signer.address
            with pytest.raises(PolicyViolationError, match=r"remaining budget of 0\.05 USDX"):
                await payer.call_tool(tool_name("eip-3009-gasless-transfers"))
    finally:
        await tools.http.aclose()
    assert on_node.usdx(signer.address) == 1_000_000 - PRICE
    assert spending.spent(usdx) == PRICE


# -- (b) a stock x402 MCP server's paid tool -------------------------------------------------


def _stock_paid_tool_server(on_node: OnNode, payee: str) -> MCPServer:
    """A `premium_report` tool wrapped by x402's own MCP payment wrapper; x402's facilitator
    settles it on our node through web3.py."""
    usdx = on_node.stack.tokens["USDX"].asset
    key = "0x" + bytes(dev_account(STOCK_FACILITATOR_INDEX).key).hex()
    signer = FacilitatorWeb3Signer(
        private_key=key, rpc_url=on_node.node_url, confirmation_timeout_seconds=30
    )
    facilitator = x402Facilitator()
    register_exact_evm_facilitator(facilitator, signer, networks=usdx.network)
    resource_server = x402ResourceServer(facilitator)
    resource_server.register(usdx.network, ExactEvmServerScheme())
    resource_server.initialize()
    accepts = resource_server.build_payment_requirements(
        ResourceConfig(
            scheme="exact",
            pay_to=payee,
            price={
                "amount": str(PRICE),
                "asset": usdx.address,
                "extra": {"name": usdx.eip712_name, "version": usdx.eip712_version},
            },
            network=usdx.network,
            max_timeout_seconds=120,
        )
    )
    resource = X402ResourceInfo(url="mcp://tool/premium_report", description="a premium report")
    paid = create_payment_wrapper(
        resource_server, PaymentWrapperConfig(accepts=accepts, resource=resource)
    )

    async def report(args: dict[str, Any], extra: Any) -> dict[str, Any]:
        return {"content": [{"type": "text", "text": "the premium report"}]}

    wrapped = paid(report)
    server = MCPServer("stock x402 MCP server")

    @server.tool(name="premium_report", description="A premium report: 0.1 USDX (x402).")
    async def premium_report(ctx: Context) -> CallToolResult:
        meta = dict(ctx.request_context.meta or {})
        result = await wrapped({}, {"_meta": meta, "toolName": "premium_report"})
        return CallToolResult(
            content=[TextContent(**block) for block in result.content],
            is_error=result.is_error,
            structured_content=result.structured_content,
            _meta=result.meta or None,
        )

    return server


@pytest.mark.anyio
async def test_our_tool_payer_pays_a_stock_x402_mcp_servers_paid_tool(on_node: OnNode) -> None:
    payer_key = LocalSigner.random()
    on_node.stack.fund(payer_key.address, "USDX", "1")
    payee = Account.create().address
    usdx = on_node.stack.tokens["USDX"].asset
    spending = Spending(SpendingPolicy.per_token([usdx], max_per_payment="0.2", budget="1"))

    async with Client(_stock_paid_tool_server(on_node, payee)) as client:
        payer = ToolPayer(client, payer_key, spending)
        paid = await payer.call_tool("premium_report")

        assert not paid.result.is_error
        assert isinstance(paid.result.content[0], TextContent)
        assert paid.result.content[0].text == "the premium report"
        assert paid.settlement is not None
        assert paid.settlement.payer == payer_key.address
        receipt = on_node.stack.chain.get_receipt(bytes.fromhex(paid.settlement.transaction[2:]))
        assert receipt is not None
        assert receipt.status
        assert receipt.sender == dev_account(STOCK_FACILITATOR_INDEX).address

        tight = ToolPayer(
            client,
            payer_key,
            Spending(SpendingPolicy.per_token([usdx], max_per_payment="0.05", budget="1")),
        )
        with pytest.raises(PolicyViolationError, match=r"per-payment cap of 0\.05 USDX"):
            await tight.call_tool("premium_report")

    assert on_node.usdx(payer_key.address) == 1_000_000 - PRICE
    assert on_node.usdx(payee) == PRICE
    assert spending.spent(usdx) == PRICE
