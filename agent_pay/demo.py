"""`agent-pay demo`: agents with different interests browse, preview, decide, pay and read.

Everything runs on 127.0.0.1 in one process: the embedded py-evm chain with the two
stablecoins, the facilitator, and the content server on real uvicorn on a free port. The agents
talk to it over real HTTP with real signatures. The story printed shows each step's offer,
signature, transaction (full hash: copy it), gas and time, and every balance before and after;
with `verbose`, the x402 headers themselves, decoded. Each agent knows its balances and does
not sign a payment it cannot fund.

Every key here is throwaway: the agents' are made for this run, the deployer's and the
facilitator's are the public dev keys every dev chain ships. None is ever printed.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, TextIO

import httpx

from agent_pay.client.auth import PaymentAuth, PaymentRecord
from agent_pay.client.policy import SpendingPolicy
from agent_pay.client.reader import InterestRule, Reader
from agent_pay.errors import AgentPayError
from agent_pay.protocol import PaymentPayload
from agent_pay.protocol.codec import PAYMENT_SIGNATURE_HEADER, decode_header
from agent_pay.signing import LocalSigner
from agent_pay.stack import FACILITATOR_INDEX, Stack

__all__ = ["DemoAgent", "run_demo"]


@dataclass(frozen=True)
class DemoAgent:
    name: str
    interests: tuple[str, ...]
    funds: dict[str, str]  # token symbol -> human amount minted at start
    max_price: str  # per read, in any token it holds
    budget: str  # per token


AGENTS = (
    DemoAgent("atlas", ("economics", "micropayments", "pricing"), {"USDX": "1"}, "0.15", "0.5"),
    DemoAgent("bramble", ("ethereum", "vyper", "eip-3009"), {"USDX": "0.3", "CNYX": "2"}, "1", "1"),
    DemoAgent("cirrus", ("history", "paywalls", "http"), {"CNYX": "0.5"}, "0.2", "0.5"),
)


class _Story:
    """Prints the demo's narrative; every line flushed so it reads well when piped."""

    def __init__(self, out: TextIO) -> None:
        self.out = out

    def __call__(self, text: str = "", indent: int = 0) -> None:
        print("  " * indent + text, file=self.out, flush=True)

    def rule(self, title: str) -> None:
        self(f"\n── {title} " + "─" * max(0, 66 - len(title)))


class _SentHeaders(httpx.HTTPTransport):
    """A transport that keeps the last PAYMENT-SIGNATURE sent, for the verbose story."""

    def __init__(self) -> None:
        super().__init__()
        self.last_signature: str | None = None

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if PAYMENT_SIGNATURE_HEADER in request.headers:
            self.last_signature = request.headers[PAYMENT_SIGNATURE_HEADER]
        return super().handle_request(request)


def _decoded(say: Callable[..., None], name: str, model: Any, indent: int) -> None:
    """An x402 header, decoded (it travels as base64 JSON)."""
    text = json.dumps(model.model_dump(mode="json", by_alias=True, exclude_none=True), indent=2)
    say(f"{name} (base64 JSON on the wire, decoded):", indent)
    for line in text.splitlines():
        say("  " + line, indent)


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def run_demo(
    out: TextIO = sys.stdout,
    agents: tuple[DemoAgent, ...] = AGENTS,
    *,
    max_reads: int = 3,
    verbose: bool = False,
) -> dict[str, int]:
    """Run the demo, printing the story to `out`; return counts (bought, skipped, refused).
    With `verbose`, also print each x402 header (PAYMENT-REQUIRED, PAYMENT-SIGNATURE,
    PAYMENT-RESPONSE) decoded."""
    say = _Story(out)
    started = time.perf_counter()
    say("agent-pay demo — pay-per-read for AI agents, on an embedded EVM chain")
    say("(all keys here are throwaway: generated for this run or public dev keys)")

    t0 = time.perf_counter()
    stack = Stack.embedded()
    say.rule("setup")
    say(
        f"chain       py-evm (Prague), chain id {stack.chain.chain_id}, in this process "
        f"[{_ms(time.perf_counter() - t0)}]"
    )
    for symbol, token in stack.tokens.items():
        say(
            f"stablecoin  {symbol} ({token.asset.eip712_name}, {token.asset.decimals} decimals) "
            f"at {token.address}"
        )
    say(
        f"facilitator {stack.scheme.signer_address} pays the gas (dev account #{FACILITATOR_INDEX})"
    )

    signers = {a.name: LocalSigner.random() for a in agents}
    for agent in agents:
        stack.fund_many([signers[agent.name].address], dict(agent.funds))

    authors = {a.author: a.author_name or a.author for a in stack.catalogue}
    tracked = [*(s.address for s in signers.values()), *authors]
    before = {(a, s): stack.balance(a, s) for a in tracked for s in stack.tokens}
    counts = {"bought": 0, "skipped": 0, "refused": 0, "gas": 0}

    with stack.serve() as base_url:
        say(
            f"server      {base_url}  ({len(stack.catalogue)} articles, free first third, "
            f"402 for the rest)"
        )
        for agent in agents:
            signer = signers[agent.name]
            assets = [stack.tokens[s].asset for s in agent.funds]
            policy = SpendingPolicy.per_token(
                assets, max_per_payment=agent.max_price, budget=agent.budget
            )
            receipts: list[PaymentRecord] = []
            auth = PaymentAuth(signer, policy, on_payment=receipts.append)
            rule = InterestRule.of(agent.interests, agent.max_price, agent.funds)
            say.rule(f"agent {agent.name}")
            say(
                f"address {signer.address}, holds "
                + ", ".join(f"{v} {k}" for k, v in agent.funds.items())
                + f"; interests: {', '.join(agent.interests)}; cap {agent.max_price}/read"
            )
            sent = _SentHeaders()
            with Reader(base_url, auth, transport=sent) as reader:
                _browse(
                    say,
                    reader,
                    rule,
                    receipts,
                    counts,
                    stack,
                    max_reads,
                    _Wallet(stack, signer.address, tuple(agent.funds)),
                    sent if verbose else None,
                )

    say.rule("balances (before → after)")
    names = {s.address: f"agent {n}" for n, s in signers.items()} | {
        a: f"author {n}" for a, n in authors.items()
    }
    for address in tracked:
        changes = [
            f"{stack.tokens[s].asset.format(before[(address, s)])} → "
            f"{stack.tokens[s].asset.format(stack.balance(address, s))}"
            for s in stack.tokens
            if before[(address, s)] or stack.balance(address, s)
        ]
        if changes:
            say(f"{names[address]:<22} {'; '.join(changes)}")
    for symbol, token in stack.tokens.items():
        supply = token.asset.format(token.total_supply())
        say(f"total supply {symbol}: {supply} (minted at start; reads only move it)")
    say.rule("summary")
    say(
        f"{counts['bought']} articles bought, {counts['skipped']} skipped, "
        f"{counts['refused']} refused (nothing charged); "
        f"{counts['gas']:,} gas paid by the facilitator; "
        f"{_ms(time.perf_counter() - started)} in all"
    )
    return counts


@dataclass(frozen=True)
class _Wallet:
    """What an agent knows of its own balances, asked of the chain before it signs."""

    stack: Stack
    address: str
    tokens: tuple[str, ...]

    def cannot_fund(self, prices: list[dict[str, Any]]) -> str | None:
        """Why none of `prices` (in tokens it holds) can be paid from its balance, or None."""
        held = []
        for price in prices:
            symbol = price["token"]
            if symbol not in self.tokens:
                continue
            asset = self.stack.tokens[symbol].asset
            balance = self.stack.balance(self.address, symbol)
            if balance >= asset.parse(Decimal(price["price"])):
                return None
            held.append(f"{price['price']} {symbol} but holds {asset.format(balance)}")
        return "cannot fund it: costs " + "; ".join(held) if held else None


def _browse(
    say: Callable[..., None],
    reader: Reader,
    rule: InterestRule,
    receipts: list[PaymentRecord],
    counts: dict[str, int],
    stack: Stack,
    max_reads: int,
    wallet: _Wallet,
    sent: _SentHeaders | None,
) -> None:
    t0 = time.perf_counter()
    listing = reader.articles()
    say(f"GET /articles → {len(listing)} articles [{_ms(time.perf_counter() - t0)}]")
    reads = 0
    for entry in listing:
        if reads >= max_reads:
            break
        prices = ", ".join(f"{p['price']} {p['token']}" for p in entry["prices"])
        say(f"“{entry['title']}” by {entry['authorName']} — {prices}", 1)
        page = reader.preview(entry["slug"])
        offers = len(page.challenge.accepts) if page.challenge else 0
        free = f"{len(page.content):,} characters free"  # words mean nothing in Chinese
        say(f"preview: 402 with {free} and {offers} offer(s) [{_ms(page.elapsed)}]", 2)
        if sent is not None and page.challenge is not None:
            _decoded(say, "PAYMENT-REQUIRED", page.challenge, 2)
        verdict = rule(entry, page.content)
        if not verdict.buy:
            say(f"decision: skip — {verdict.why}", 2)
            counts["skipped"] += 1
            continue
        unfunded = wallet.cannot_fund(entry["prices"])
        if unfunded is not None:  # signing would only earn a refusal from the server
            say(f"decision: skip — wanted it ({verdict.why.split(';')[0]}), but {unfunded}", 2)
            counts["skipped"] += 1
            continue
        say(f"decision: buy — {verdict.why}", 2)
        try:
            paid = reader.buy(entry["slug"])
        except AgentPayError as exc:
            say(f"refused, nothing charged: {exc.message} [{exc.reason}]", 2)
            counts["refused"] += 1
            continue
        record = receipts[-1]
        offer, settlement = record.offer, record.settlement
        receipt = stack.chain.get_receipt(bytes.fromhex(settlement.transaction[2:]))
        gas = receipt.gas_used if receipt else 0
        counts["gas"] += gas
        asset = stack.assets.find(offer.network, offer.asset)
        price = asset.format(offer.amount) if asset else f"{offer.amount} units"
        say(f"offer: exact {price} → {offer.pay_to} on {offer.network}", 2)
        say(f"signed: EIP-3009 transferWithAuthorization, valid {offer.max_timeout_seconds} s", 2)
        timing = ", ".join(f"{k} {v:.1f} ms" for k, v in paid.server_timing.items())
        block = receipt.block_number if receipt else "?"
        say(f"settled: block {block}, gas {gas:,} ({timing})", 2)
        say(f"tx {settlement.transaction}", 3)
        if sent is not None and sent.last_signature is not None:
            _decoded(
                say, "PAYMENT-SIGNATURE", decode_header(sent.last_signature, PaymentPayload), 2
            )
            _decoded(say, "PAYMENT-RESPONSE", settlement, 2)
        say(
            f"read: 200, {len(paid.content.split())} words in all [{_ms(paid.elapsed)} "
            f"for 402 + sign + pay + read]",
            2,
        )
        counts["bought"] += 1
        reads += 1
