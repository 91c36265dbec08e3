"""`agent-pay demo --mcp`: a scripted model reads and pays through `agent-pay mcp`.

The set: `agent-pay node`'s chain and the content server run in this process on 127.0.0.1;
`agent-pay mcp` runs as a subprocess, launched and driven over stdio by the official MCP
client, exactly as an MCP host (a desktop assistant, an IDE) would. The "model" is a script,
so the run is the same every time: it lists the articles, previews each, and buys by a rule it
says out loud (an interest in the title or summary, and a price under its own cap); then it
retries a purchase, as models do, and asks what it spent. The budget is the server's, given on
its command line: the model cannot raise it, and the purchase over it is refused.
"""

from __future__ import annotations

import os
import sys
import tempfile
import textwrap
import time
from contextlib import ExitStack
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, TextIO

import anyio
from eth_account import Account
from mcp import Client, StdioServerParameters

from agent_pay.chain.contract import Transactor
from agent_pay.chain.devkeys import dev_signer
from agent_pay.chain.rpc import JsonRpcChain
from agent_pay.node.deployment import find_stablecoins
from agent_pay.node.node import Node
from agent_pay.stack import FACILITATOR_INDEX, Stack

__all__ = ["ScriptedModel", "run_mcp_demo"]

MAX_PRICE = "0.2"  # the user's policy, on agent-pay mcp's command line
BUDGET = "0.25"
FUNDS = "1"


@dataclass(frozen=True)
class ScriptedModel:
    """The model's visible rule: buy what touches an interest, at most `cap` per article."""

    interests: tuple[str, ...] = ("micropayments", "agents", "eip-3009", "gasless", "vyper")
    cap: Decimal = Decimal("0.3")  # the model's own taste; the policy below it still rules

    def decide(self, article: dict[str, Any], offers: list[dict[str, Any]]) -> tuple[bool, str]:
        text = f"{article.get('title', '')} {article.get('summary', '')}".lower()
        hits = [word for word in self.interests if word in text]
        if not hits:
            return False, f"not about {', '.join(self.interests)}"
        usable = [o for o in offers if o["price"].endswith(" USDX")]
        if not usable:
            return False, "priced only in tokens I do not hold"
        price = Decimal(usable[0]["price"].split()[0])
        if price > self.cap:
            return False, f"{usable[0]['price']} is more than I pay for one article ({self.cap})"
        return True, f"about {', '.join(hits)}, and {usable[0]['price']} is within my cap"


class _Say:
    def __init__(self, out: TextIO) -> None:
        self.out = out

    def __call__(self, text: str = "", indent: int = 0) -> None:
        print("  " * indent + text, file=self.out, flush=True)

    def rule(self, title: str) -> None:
        self(f"\n── {title} " + "─" * max(0, 66 - len(title)))


def run_mcp_demo(out: TextIO = sys.stdout, model: ScriptedModel | None = None) -> dict[str, int]:
    """Run the demo, printing the conversation; return counts (bought, skipped, refused,
    rereads)."""
    say = _Say(out)
    model = model or ScriptedModel()
    started = time.perf_counter()
    say("agent-pay demo --mcp — a model reads and pays through MCP, within a policy it")
    say("cannot change: the budget is on the MCP server's command line, not in the prompt")
    say("(all keys here are throwaway: generated for this run or public dev keys)")
    account = Account.create()
    key = "0x" + bytes(account.key).hex()
    with ExitStack() as stack_of:
        node = stack_of.enter_context(Node.open(None))
        node_url = stack_of.enter_context(node.serve(port=0))
        chain = stack_of.enter_context(JsonRpcChain(node_url))
        stack = Stack.connect(
            chain, find_stablecoins(chain), Transactor(chain, dev_signer(FACILITATOR_INDEX))
        )
        server_url = stack_of.enter_context(stack.serve())
        home = Path(stack_of.enter_context(tempfile.TemporaryDirectory(prefix="agent-pay-mcp-")))
        stack.fund(account.address, "USDX", FUNDS)
        say.rule("setup")
        say(f"chain       agent-pay node (embedded py-evm) at {node_url}")
        say(f"server      {server_url}  ({len(stack.catalogue)} articles)")
        say(f"wallet      {account.address}, holds {FUNDS} USDX")
        command = [
            "agent-pay",
            "mcp",
            "--max-price",
            MAX_PRICE,
            "--budget",
            BUDGET,
            "--token",
            "USDX",
        ]
        say(f"MCP server  {' '.join(command)}   (stdio; key from AGENT_PAY_PRIVATE_KEY)")
        say(f"model       a script; it buys what is about {', '.join(model.interests)}")
        tracked = [account.address, *{a.author for a in stack.catalogue}]
        before = {a: stack.balance(a, "USDX") for a in tracked}
        counts = anyio.run(_converse, say, model, _params(command, key, node_url, home), server_url)
        say.rule("balances, USDX (before → after)")
        usdx = stack.tokens["USDX"].asset
        names = {account.address: "the model's wallet"} | {
            a.author: f"author {a.author_name or a.author}" for a in stack.catalogue
        }
        for address in tracked:
            after = stack.balance(address, "USDX")
            if before[address] or after:
                say(f"{names[address]:<24} {usdx.format(before[address])} → {usdx.format(after)}")
    say.rule("summary")
    say(
        f"{counts['bought']} bought, {counts['rereads']} retried for free, {counts['skipped']} "
        f"skipped, {counts['refused']} refused by the policy (nothing signed); "
        f"{(time.perf_counter() - started):.1f} s in all"
    )
    return counts


def _params(command: list[str], key: str, node_url: str, home: Path) -> StdioServerParameters:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENT_PAY_")}
    env |= {"AGENT_PAY_PRIVATE_KEY": key, "AGENT_PAY_CHAIN_URL": node_url}
    env |= {"AGENT_PAY_HOME": str(home), "AGENT_PAY_RECEIPTS_DIR": str(home / "receipts")}
    args = ["-m", "agent_pay.cli", *command[1:]]
    return StdioServerParameters(command=sys.executable, args=args, env=env, cwd=str(home))


async def _converse(
    say: _Say, model: ScriptedModel, params: StdioServerParameters, server_url: str
) -> dict[str, int]:
    counts = {"bought": 0, "skipped": 0, "refused": 0, "rereads": 0}
    async with Client(params, read_timeout_seconds=60) as client:
        tools = (await client.list_tools()).tools
        say.rule("the tools the host shows the model")
        for tool in tools:
            say(f"{tool.name}: {textwrap.shorten(tool.description or '', 100)}")
        say.rule("the conversation")
        listing = await _call(say, client, "list_articles", server_url=server_url)
        articles = listing["articles"] if listing else []
        say(f"← {len(articles)} articles", 1)
        bought: list[str] = []
        for article in articles:
            say(f"model: “{article['title']}” ({', '.join(article['prices'])})")
            preview = await _call(say, client, "preview_article", url=article["url"])
            if preview is None:
                continue
            offers = preview["offers"]
            free = len(str(preview["preview"]))  # characters: words mean nothing in Chinese
            priced = "; ".join(f"{o['price']} ({o['policy']})" for o in offers)
            say(f"← {free:,} characters free; offers: {priced}", 1)
            buy, why = model.decide(article, offers)
            say(f"model thinks: {'buy' if buy else 'skip'} — {why}", 1)
            if not buy:
                counts["skipped"] += 1
                continue
            paid = await _call(say, client, "buy_article", url=article["url"])
            if paid is None:
                counts["refused"] += 1
                continue
            say(f"← {len(str(paid['content']).split())} words in all; cost {paid['cost']}", 1)
            say(f"  tx {paid['transaction']}", 1)
            say(f"  receipt signed by {paid['receipt']['signer']}", 1)
            say(f"  budget left: {paid['budgetLeft']['USDX']}", 1)
            counts["bought"] += 1
            bought.append(article["url"])
        if bought:
            say("model: (the answer was slow; it calls buy_article again, twice at once)")
            async with anyio.create_task_group() as group:
                for _ in range(2):
                    group.start_soon(_retry, say, client, bought[0], counts)
        report = await _call(say, client, "spending")
        for token in report["tokens"] if report else []:
            say(
                f"← spent {token['spent']} of {token['budget']}; left {token['left']}; "
                f"cap {token['maxPerPayment']} per article",
                1,
            )
        purchases = await _call(say, client, "purchases")
        for purchase in purchases["purchases"] if purchases else []:
            say(f"← {purchase['url']}: {purchase.get('paid')}, tx {purchase.get('transaction')}", 1)
    return counts


async def _retry(say: _Say, client: Client, url: str, counts: dict[str, int]) -> None:
    again = await _call(say, client, "buy_article", url=url)
    if again is not None:
        say(f"← cost {again['cost']}: {again['how']}", 1)
        counts["rereads"] += again["cost"] == "0"


async def _call(say: _Say, client: Client, tool: str, **arguments: str) -> dict[str, Any] | None:
    shown = ", ".join(f"{k}={v!r}" for k, v in arguments.items())
    say(f"→ {tool}({shown})", 1)
    result = await client.call_tool(tool, arguments)
    if result.is_error:
        text = getattr(result.content[0], "text", "") if result.content else ""
        say(f"← tool error: {text}", 1)
        return None
    data: dict[str, Any] = result.structured_content or {}
    return data
