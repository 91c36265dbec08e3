"""The timed phases of `agent-pay bench` and the figures each yields.

A `Session` is one run against one `BenchServer`. A paid phase signs its payments first (from
`Payers`: the agents of one scheme), sends them from the load generator's process, then reads
the chain back: settlements, blocks, gas, and what the author earned.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from agent_pay.assets import Asset
from agent_pay.bench.config import BenchConfig
from agent_pay.bench.loadgen import Lane, LoadResult, run_load
from agent_pay.bench.progress import Progress
from agent_pay.bench.schemes import SchemeKit
from agent_pay.bench.server import BenchServer, SettlementInfo
from agent_pay.client.policy import SpendingPolicy
from agent_pay.client.schemes import ClientScheme
from agent_pay.protocol import PaymentRequired, PaymentRequirements
from agent_pay.protocol.codec import (
    PAYMENT_REQUIRED_HEADER,
    PAYMENT_SIGNATURE_HEADER,
    decode_header,
    encode_header,
)
from agent_pay.signing import LocalSigner

__all__ = [
    "Payers",
    "Session",
    "Span",
    "first_reads",
    "make_payers",
    "paid_phase",
    "phase_figures",
]


@dataclass
class Session:
    """One benchmark run against one server process: its config, the agents, the checks made
    and the server's memory readings so far."""

    config: BenchConfig
    server: BenchServer
    progress: Progress
    signers: list[LocalSigner]
    checks: dict[str, bool] = field(default_factory=dict)
    memory: dict[str, float] = field(default_factory=dict)

    def url(self, base: str | None = None) -> str:
        return f"{base or self.server.url}/articles/{self.config.slug}"

    def remember_memory(self, label: str) -> None:
        reading = self.server.memory()
        if reading is not None:
            self.memory[label] = round(reading.rss_mib, 1)

    def load(
        self, label: str, lanes: Sequence[Lane], concurrency: int, base: str | None = None
    ) -> LoadResult:
        total = sum(len(lane) for lane in lanes)
        self.progress.step(f"{label}: {total:,} requests, {concurrency} connection(s)")
        result = run_load(
            self.url(base),
            lanes,
            concurrency,
            max_seconds=self.config.phase_seconds,
            on_progress=self.progress.counter(label, total),
            server_pid=self.server.pid,
            chain_pid=self.server.chain_pid,
        )
        self.progress.step(
            f"{label}: {result.completed:,} answered in {result.seconds:.2f} s = "
            f"{result.rate:,.1f}/s, p50 {result.latency.p50_ms:.1f} ms, "
            f"p99 {result.latency.p99_ms:.1f} ms"
            + (
                f", server CPU {result.server_cpu_seconds / result.completed * 1e6:.0f} us/read"
                if result.server_cpu_seconds is not None and result.completed
                else ""
            )
            + (f", {result.errors} errors" if result.errors else "")
            + (f", {result.unsent} not sent (time cap)" if result.unsent else "")
        )
        return result


def phase_figures(result: LoadResult, requests: int, concurrency: int) -> dict[str, Any]:
    return {
        "requests": requests,
        "completed": result.completed,
        "errors": result.errors,
        "error_samples": result.error_samples,
        "unsent": result.unsent,
        "concurrency": concurrency,
        "seconds": round(result.seconds, 4),
        "reads_per_second": round(result.rate, 1),
        "latency_ms": result.latency.to_dict(),
        "statuses": {str(k): v for k, v in sorted(result.statuses.items())},
        "server_timing_ms": {k: round(v, 3) for k, v in result.server_timing_mean_ms().items()},
        # CPU time of the whole server process (every thread) over the phase, per answer.
        "server_cpu_us_per_read": (
            round(result.server_cpu_seconds / result.completed * 1e6, 1)
            if result.server_cpu_seconds is not None and result.completed
            else None
        ),
        # ... and of the chain's own process (None: the chain runs in the server's).
        "chain_cpu_us_per_read": (
            round(result.chain_cpu_seconds / result.completed * 1e6, 1)
            if result.chain_cpu_seconds is not None and result.completed
            else None
        ),
    }


def transaction_of(header: str) -> str:
    """The `transaction` of a PAYMENT-RESPONSE header, ours or stock x402's ("" if none)."""
    try:
        value = json.loads(base64.b64decode(header, validate=True)).get("transaction", "")
    except (binascii.Error, ValueError, AttributeError):
        return ""
    return value if isinstance(value, str) else ""


def challenge_at(url: str) -> PaymentRequired:
    response = httpx.get(url, timeout=30)
    if response.status_code != 402 or PAYMENT_REQUIRED_HEADER not in response.headers:
        raise RuntimeError(f"{url} answered {response.status_code} without a payment challenge")
    return decode_header(response.headers[PAYMENT_REQUIRED_HEADER], PaymentRequired)


def offer_for(challenge: PaymentRequired, scheme: str, asset: str) -> PaymentRequirements:
    for offer in challenge.accepts:
        if offer.scheme == scheme and offer.asset == asset:
            return offer
    raise RuntimeError(f"the server offers no {scheme} payment in {asset}")


@dataclass
class Payers:
    """The agents paying one scheme: their keys, their client schemes, and their policy."""

    kit: SchemeKit
    policy: SpendingPolicy
    clients: list[tuple[LocalSigner, ClientScheme]]
    reads: int = 0  # paid reads so far, all phases (a channel's reads amortize its deposit)


def make_payers(
    run: Session, kit: SchemeKit, asset: Asset, signers: list[LocalSigner], reads: int
) -> Payers:
    policy = SpendingPolicy.per_token([asset], max_per_payment="1", budget="1000000")
    per_payer = -(-reads // len(signers))
    clients = [(s, kit.client(s, policy, reads_per_payee=per_payer)) for s in signers]
    return Payers(kit, policy, clients)


@dataclass(frozen=True)
class Span:
    """Reads paid, and the blocks mined for them, outside a timed phase (a channel's opening)."""

    first_block: int
    last_block: int
    reads: int


def first_reads(run: Session, payers: Payers) -> Span:
    """One paid read per agent through its `PaymentAuth`, over HTTP: warms the server up and,
    for a channel, opens it (deposit and first voucher)."""
    paid = 0
    first = run.server.call("block_number") + 1
    with httpx.Client(timeout=60) as http:
        for _, scheme in payers.clients:
            auth = payers.kit.payment_auth(scheme, payers.policy)
            response = http.get(run.url(), auth=auth)
            paid += response.status_code == 200
    payers.reads += paid
    return Span(first, run.server.call("block_number"), paid)


def sign_payments(
    payers: Payers, challenge: PaymentRequired, offer: PaymentRequirements, count: int
) -> tuple[list[list[dict[str, str]]], float]:
    """`count` payments from the agents in turn, each its own lane; and the signing time."""
    lanes: list[list[dict[str, str]]] = []
    clients = payers.clients
    started = time.perf_counter()
    for i in range(count):
        payload = clients[i % len(clients)][1].sign(offer, challenge)
        lanes.append([{PAYMENT_SIGNATURE_HEADER: encode_header(payload)}])
    return lanes, time.perf_counter() - started


def chain_figures(
    run: Session,
    result: LoadResult,
    block_before: int,
    block_after: int,
    earlier: Span | None,
) -> dict[str, Any]:
    """What the chain says about a paid phase (and the `earlier` reads it amortizes):
    transactions, blocks, gas."""
    hashes = [transaction_of(h) for h in result.payment_responses]
    distinct = sorted({h for h in hashes if h})
    infos: list[SettlementInfo | None] = run.server.call("settlements", distinct)
    ok = [i for i in infos if i is not None and i.status]
    blocks = block_after - block_before
    stats: list[tuple[int, int]] = (
        run.server.call("block_stats", block_before + 1, block_after) if blocks else []
    )
    paid = result.statuses.get(200, 0)
    if earlier is not None:
        if earlier.last_block >= earlier.first_block:
            stats += run.server.call("block_stats", earlier.first_block, earlier.last_block)
        paid += earlier.reads
    chain_txs = sum(n for n, _ in stats)
    chain_gas = sum(g for _, g in stats)
    settling_blocks = len({i.block_number for i in ok})
    gas = [i.gas_used for i in ok]
    seconds = result.seconds or 1e-9
    return {
        "paid_reads": result.statuses.get(200, 0),
        "settlement_transactions": len(distinct),
        "settlements_succeeded": len(ok),
        "settlements_per_second": round(len(ok) / seconds, 1),
        "blocks": blocks,
        "blocks_with_settlements": settling_blocks,
        "settlements_per_block": round(len(ok) / settling_blocks, 2) if settling_blocks else 0.0,
        "chain_transactions": chain_txs,
        "chain_gas": chain_gas,
        "gas_per_read": round(chain_gas / paid, 1) if paid else 0.0,
        "settlement_gas": {
            "mean": round(sum(gas) / len(gas), 1) if gas else 0.0,
            "min": min(gas, default=0),
            "max": max(gas, default=0),
        },
    }


def paid_phase(
    run: Session,
    label: str,
    payers: Payers,
    base: str,
    count: int,
    concurrency: int,
    author: str,
    *,
    earlier: Span | None = None,
) -> dict[str, Any]:
    """Pre-sign `count` payments, send them under load, then read the chain.

    Gas counts the blocks mined from the phase's start until the payee has claimed what it is
    owed, plus those of `earlier` (a channel's opening reads), over all those paid reads: a
    deposit and its claims are amortized over the reads they served.
    """
    kit = payers.kit
    challenge = challenge_at(run.url(base))
    offer = offer_for(challenge, kit.name, payers.policy.limits[0].asset.address)
    lanes, sign_seconds = sign_payments(payers, challenge, offer, count)
    run.progress.step(f"{label}: signed {count:,} payments in {sign_seconds:.2f} s")
    before = run.server.call("block_number")
    earned_before: int = run.server.call("balance", author, "USDX")
    result = run.load(label, lanes, concurrency, base)
    claim_gas: int = run.server.call("claim_channels") if kit.name == "channel" else 0
    after = run.server.call("block_number")
    earned: int = run.server.call("balance", author, "USDX") - earned_before
    paid = result.statuses.get(200, 0)
    payers.reads += paid
    figures = phase_figures(result, count, concurrency)
    figures["signing_per_second"] = round(count / sign_seconds, 1) if sign_seconds else 0.0
    figures["price_atomic"] = offer.amount
    figures["author_earned_atomic"] = earned
    figures.update(chain_figures(run, result, before, after, earlier))
    figures["paid_reads"] = paid
    figures["payers"] = len(payers.clients)
    if kit.name == "channel":
        figures["reads_per_channel"] = round(payers.reads / len(payers.clients), 1)
        figures["claim_gas"] = claim_gas
    name = label.replace(" ", "_")
    run.checks[f"{name}: every request answered 200"] = paid == count
    # A channel's payee is paid by the claim after the phase, for the opening reads too.
    claimed = paid + (earlier.reads if earlier is not None else 0)
    run.checks[f"{name}: the author was paid the price of every read"] = (
        earned == (claimed if kit.name == "channel" else paid) * offer.amount
    )
    if kit.name == "exact":
        run.checks[f"{name}: one settlement transaction per paid read"] = (
            figures["settlement_transactions"] == paid == figures["settlements_succeeded"]
        )
    return figures
