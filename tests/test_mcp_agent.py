"""`agent-pay mcp` through the official MCP client, against a real content server on 127.0.0.1
whose chain is `agent-pay node` (the embedded chain over JSON-RPC), in this process.

In process (`mcp.Client(server)`): what each tool answers, and that nothing over policy is
signed. Over stdio (`agent-pay mcp` as a subprocess, as an MCP host runs it): eleven articles,
each `buy_article` sent three times, some at once; the spend is the sum of the prices, the
article over budget is refused with nothing moved, and the budget and the purchases survive a
restart of the server.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio
import pytest
from eth_account import Account

pytest.importorskip("mcp")

from mcp import Client, StdioServerParameters

from agent_pay.chain.contract import Transactor
from agent_pay.chain.devkeys import dev_signer
from agent_pay.chain.rpc import JsonRpcChain
from agent_pay.client.policy import Spending, SpendingPolicy
from agent_pay.client.receipts import ReceiptStore
from agent_pay.mcp.agent import PayingAgent
from agent_pay.mcp.server import build_server
from agent_pay.node.deployment import find_stablecoins
from agent_pay.node.node import Node
from agent_pay.signing import LocalSigner
from agent_pay.stack import FACILITATOR_INDEX, Stack

AUTHOR = "0x14dC79964da2C08b23698B3D3cc7Ca32193d9955"
PRICES = {f"note-{i:02d}": Decimal(i) / 100 for i in range(1, 11)}  # 0.01 .. 0.10 USDX
DEAR = "the-dear-one"  # 0.2 USDX: within the cap, over what the budget leaves
TOTAL = sum(PRICES.values())  # 0.55
BUDGET = "0.6"


@dataclass
class World:
    node_url: str
    server_url: str
    stack: Stack

    def url(self, slug: str) -> str:
        return f"{self.server_url}/articles/{slug}"

    def usdx(self, address: str) -> int:
        return self.stack.balance(address, "USDX")


def _write_articles(directory: Path) -> None:
    body = "A paragraph worth reading, about paying per read.\n\n" * 12
    for slug, price in [*PRICES.items(), (DEAR, Decimal("0.2"))]:
        (directory / f"{slug}.md").write_text(
            f'---\ntitle: "Note {slug}"\nauthor: "{AUTHOR}"\nsummary: "About {slug}."\n'
            f'price: "{price}"\ntokens: [USDX]\ntags: [notes]\n---\n\n{body}'
        )


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    articles = tmp_path_factory.mktemp("articles")
    _write_articles(articles)
    with Node.open(None) as node, node.serve(port=0) as url, JsonRpcChain(url) as chain:
        stack = Stack.connect(
            chain,
            find_stablecoins(chain),
            Transactor(chain, dev_signer(FACILITATOR_INDEX)),
            articles=articles,
        )
        with stack.serve() as server_url:
            yield World(url, server_url, stack)


def _data(result: Any) -> dict[str, Any]:
    assert not result.is_error, result.content[0].text
    data: dict[str, Any] = result.structured_content
    return data


def _usdx(text: str) -> Decimal:
    amount, symbol = text.split()
    assert symbol == "USDX"
    return Decimal(amount)


# -- in process --------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_the_tools_in_process(world: World, tmp_path: Path) -> None:
    signer = LocalSigner.random()
    world.stack.fund(signer.address, "USDX", "1")
    usdx = world.stack.tokens["USDX"].asset
    policy = SpendingPolicy.per_token([usdx], max_per_payment="0.05", budget="0.1")
    agent = PayingAgent(
        signer,
        Spending.open(policy, tmp_path, signer.address),
        ReceiptStore.open(tmp_path),
        world.stack.assets,
    )
    try:
        async with Client(build_server(agent)) as client:
            tools = {tool.name: tool for tool in (await client.list_tools()).tools}
            assert set(tools) == {
                "list_articles",
                "preview_article",
                "buy_article",
                "spending",
                "purchases",
            }
            assert "COSTS" in (tools["buy_article"].description or "")
            assert "FREE" in (tools["preview_article"].description or "")

            listed = _data(
                await client.call_tool("list_articles", {"server_url": world.server_url})
            )
            by_url = {a["url"]: a for a in listed["articles"]}
            assert by_url[world.url("note-03")]["prices"] == ["0.03 USDX"]

            preview = _data(
                await client.call_tool("preview_article", {"url": world.url("note-03")})
            )
            assert not preview["complete"]
            assert preview["preview"]
            [offer] = preview["offers"]
            assert offer["price"] == "0.03 USDX"
            assert offer["policy"] == "within your spending policy"
            over = _data(await client.call_tool("preview_article", {"url": world.url(DEAR)}))
            assert "exceeds the per-payment cap of 0.05 USDX" in over["offers"][0]["policy"]
            assert world.usdx(signer.address) == 1_000_000  # previews never pay

            refused = await client.call_tool("buy_article", {"url": world.url(DEAR)})
            assert refused.is_error
            assert "exceeds the per-payment cap" in refused.content[0].text
            assert "Nothing was signed" in refused.content[0].text

            bought = _data(await client.call_tool("buy_article", {"url": world.url("note-03")}))
            assert bought["cost"] == "0.03 USDX"
            assert bought["how"] == "paid"
            assert bought["receipt"]["payer"] == signer.address
            assert bought["budgetLeft"] == {"USDX": "0.07 USDX"}
            again = _data(await client.call_tool("buy_article", {"url": world.url("note-03")}))
            assert (again["cost"], again["content"]) == ("0", bought["content"])

            report = _data(await client.call_tool("spending", {}))
            assert report["tokens"][0]["spent"] == "0.03 USDX"
            assert report["tokens"][0]["left"] == "0.07 USDX"
            [purchase] = _data(await client.call_tool("purchases", {}))["purchases"]
            assert purchase["url"] == world.url("note-03")
            assert purchase["transaction"] == bought["transaction"]
    finally:
        await agent.aclose()
    assert world.usdx(signer.address) == 970_000


# -- over stdio, as an MCP host runs it --------------------------------------------------------


def _stdio(world: World, key: str, home: Path) -> StdioServerParameters:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENT_PAY_")}
    env |= {
        "AGENT_PAY_PRIVATE_KEY": key,
        "AGENT_PAY_CHAIN_URL": world.node_url,
        "AGENT_PAY_HOME": str(home),
    }
    args = ["-m", "agent_pay.cli", "mcp", "--max-price", "0.2", "--budget", BUDGET]
    args += ["--token", "USDX", "--receipts-dir", str(home / "receipts")]
    return StdioServerParameters(command=sys.executable, args=args, env=env, cwd=str(home))


@pytest.mark.slow
@pytest.mark.anyio
async def test_over_stdio_every_article_is_paid_once_and_the_budget_survives_a_restart(
    world: World, tmp_path: Path
) -> None:
    account = Account.create()
    key = "0x" + bytes(account.key).hex()
    signer = LocalSigner.from_key(key)
    world.stack.fund(signer.address, "USDX", "1")
    supply = world.stack.tokens["USDX"].total_supply()
    results: dict[str, list[dict[str, Any]]] = {slug: [] for slug in PRICES}

    async with Client(_stdio(world, key, tmp_path), read_timeout_seconds=60) as client:

        async def buy(slug: str) -> None:
            result = await client.call_tool("buy_article", {"url": world.url(slug)})
            results[slug].append(_data(result))

        for index, slug in enumerate(PRICES):
            if index % 2:  # three at once, as a model firing parallel tool calls
                async with anyio.create_task_group() as group:
                    for _ in range(3):
                        group.start_soon(buy, slug)
            else:  # one, then two retries
                for _ in range(3):
                    await buy(slug)

        refused = await client.call_tool("buy_article", {"url": world.url(DEAR)})
        assert refused.is_error
        assert "exceeds the remaining budget of 0.05 USDX" in refused.content[0].text
        before_restart = _data(await client.call_tool("spending", {}))

    for slug, answers in results.items():
        costs = sorted(_usdx(a["cost"]) if a["cost"] != "0" else Decimal(0) for a in answers)
        assert costs == [0, 0, PRICES[slug]], slug
        assert len({a["content"] for a in answers}) == 1
    paid = int(TOTAL * 10**6)
    assert world.usdx(signer.address) == 1_000_000 - paid  # nothing for the refused one
    assert world.stack.tokens["USDX"].total_supply() == supply
    assert before_restart["tokens"][0]["spent"] == f"{TOTAL} USDX"

    # A new process: what was spent and bought is still counted and still readable.
    async with Client(_stdio(world, key, tmp_path), read_timeout_seconds=60) as client:
        report = _data(await client.call_tool("spending", {}))
        assert report == before_restart
        bought = _data(await client.call_tool("purchases", {}))["purchases"]
        assert sorted(p["url"] for p in bought) == sorted(world.url(s) for s in PRICES)
        again = _data(await client.call_tool("buy_article", {"url": world.url("note-10")}))
        assert again["cost"] == "0"
        refused = await client.call_tool("buy_article", {"url": world.url(DEAR)})
        assert refused.is_error
    assert world.usdx(signer.address) == 1_000_000 - paid
