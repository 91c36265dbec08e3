"""What a simulation found, read back from the chain and the ledger, as one JSON-ready dict.

Three parts, kept apart on purpose:
- `deterministic`: revenue per author, spend per agent, counts, transactions, blocks, gas, the
  daily series, cost per read, and the consistency checks. Two runs with one seed give the same
  bytes here; `digest` is its SHA-256.
- `order_dependent`: per-transaction gas, which depends on the order in which concurrent
  settlements entered their block (totals do not);
- `chain_head`: the last block's hash and state root. With "exact" two runs build the same
  chain, hash for hash. With "channel" they agree on everything above but may order a claim
  batch's vouchers differently (the settler sorts due channels by payee and token only, and
  channels enter its table in the order their opening threads finish), so hashes can differ;
- `performance`: wall-clock figures (run time, reads per second, latency), which depend on the
  machine and on what else runs on it.

Money is read from the token contract (balances after the run), not from the ledger; the ledger
is checked against it. Cost per read is gas times a gas price and an ETH price that are stated
assumptions, not measurements.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter, defaultdict
from dataclasses import dataclass
from statistics import median
from typing import Any

from agent_pay.assets import format_amount
from agent_pay.bench.loadgen import summarize_latencies
from agent_pay.bench.machine import describe_machine
from agent_pay.simulate.engine import SIM_EPOCH, SimulationRun
from agent_pay.simulate.ledger import OUTCOMES, Visit

__all__ = ["CostAssumptions", "summarize"]


@dataclass(frozen=True)
class CostAssumptions:
    """What a unit of gas costs in dollars, and how yuan convert: assumptions, stated."""

    gas_price_gwei: float = 1.0
    eth_usd: float = 3_000.0
    cny_per_usd: float = 7.0

    def usd_per_gas(self) -> float:
        return self.gas_price_gwei * 1e-9 * self.eth_usd

    def to_dict(self) -> dict[str, Any]:
        return {
            "gas_price_gwei": self.gas_price_gwei,
            "eth_usd": self.eth_usd,
            "cny_per_usd": self.cny_per_usd,
            "note": "assumptions, not measurements: gas is measured, its price in dollars is not",
        }


def _human(atomic: int, decimals: int) -> str:
    return format_amount(atomic, decimals)


def _distribution(values: list[float]) -> dict[str, float]:
    if not values:
        return {"count": 0, "mean": 0.0, "median": 0.0, "min": 0.0, "max": 0.0}
    return {
        "count": len(values),
        "mean": round(sum(values) / len(values), 6),
        "median": round(float(median(values)), 6),
        "min": round(min(values), 6),
        "max": round(max(values), 6),
    }


def summarize(run: SimulationRun, assumptions: CostAssumptions | None = None) -> dict[str, Any]:
    """Aggregate `run` into the report (see the module docstring)."""
    assumptions = assumptions or CostAssumptions()
    stack, market, ledger = run.stack, run.market, run.ledger
    tokens = stack.tokens
    symbol_of = {t.address: s for s, t in tokens.items()}
    decimals = {s: t.asset.decimals for s, t in tokens.items()}
    usd_rate = {"USDX": 1.0, "CNYX": 1.0 / assumptions.cny_per_usd}
    paid = ledger.paid()
    author_of = {a.slug: a.author for a in market.articles}

    # -- money, from the chain
    authors = []
    revenue_total: Counter[str] = Counter()
    reads_by_author: Counter[str] = Counter(author_of[v.slug] for v in paid)
    ledger_revenue: dict[str, Counter[str]] = defaultdict(Counter)
    for v in paid:
        ledger_revenue[author_of[v.slug]][symbol_of[v.asset]] += v.amount
    articles_by_author = Counter(a.author for a in market.articles)
    for author in market.authors:
        revenue = {s: tokens[s].balance_of(author.address) for s in tokens}
        revenue_total.update(revenue)
        authors.append(
            {
                "name": author.name,
                "address": author.address,
                "articles": articles_by_author[author.address],
                "paid_reads": reads_by_author[author.address],
                "revenue": {s: _human(v, decimals[s]) for s, v in revenue.items() if v},
                "revenue_usd": round(
                    sum(v / 10 ** decimals[s] * usd_rate[s] for s, v in revenue.items()), 6
                ),
                "_ledger_matches": dict(ledger_revenue[author.address])
                == {s: v for s, v in revenue.items() if v},
            }
        )
    authors.sort(key=lambda a: (-a["revenue_usd"], a["address"]))

    agents = []
    spend_total: Counter[str] = Counter()
    ledger_spend: dict[int, Counter[str]] = defaultdict(Counter)
    visits_by_agent: Counter[int] = Counter(v.agent for v in ledger.visits)
    paid_by_agent: Counter[int] = Counter(v.agent for v in paid)
    for v in paid:
        ledger_spend[v.agent][symbol_of[v.asset]] += v.amount
    exhausted = 0
    hit_budget = {v.agent for v in ledger.visits if v.outcome == "over_budget"}
    locked_by_agent = _locked_in_channels(run)
    outflow_total: Counter[str] = Counter()
    for agent in market.agents:
        # What left the wallet (chain) = what was spent on reads (ledger) + what still sits in
        # the agent's channels (deposits not yet claimed: refundable on close).
        outflow = {
            s: run.funded[s][agent.address] - tokens[s].balance_of(agent.address)
            for s in agent.tokens
        }
        spent = {s: ledger_spend[agent.index].get(s, 0) for s in agent.tokens}
        locked = locked_by_agent.get(agent.index, Counter())
        outflow_total.update(outflow)
        spend_total.update(spent)
        refused_budget = agent.index in hit_budget
        exhausted += refused_budget
        agents.append(
            {
                "index": agent.index,
                "address": agent.address,
                "tokens": list(agent.tokens),
                "interests": sorted(agent.interests),
                "budget": {s: str(b) for s, b in agent.budgets.items()},
                "spent": {s: _human(v, decimals[s]) for s, v in spent.items()},
                "spent_usd": round(
                    sum(v / 10 ** decimals[s] * usd_rate[s] for s, v in spent.items()), 6
                ),
                "in_channels": {s: _human(v, decimals[s]) for s, v in locked.items() if v},
                "channels": len(run.channels.get(agent.index, [])),
                "visits": visits_by_agent[agent.index],
                "paid_reads": paid_by_agent[agent.index],
                "hit_budget": refused_budget,
                "_ledger_matches": all(
                    outflow[s] == spent[s] + locked.get(s, 0) for s in agent.tokens
                ),
            }
        )

    # -- the chain
    hashes = sorted({v.transaction for v in paid if v.transaction})
    receipts = [stack.chain.get_receipt(bytes.fromhex(h[2:])) for h in hashes]
    settled = [r for r in receipts if r is not None and r.status]
    gas_by_tx = {r.tx_hash_hex: r.gas_used for r in settled}
    last_block = stack.chain.block_number()
    blocks = last_block - run.first_block + 1 if last_block >= run.first_block else 0
    read: dict[int, tuple[int, int]] = {}  # each block is decoded once, for all totals
    chain_gas, chain_txs = _block_totals(run, run.first_block, last_block, read)
    paid_count = len(paid)
    gas_per_read = chain_gas / paid_count if paid_count else 0.0

    # -- days
    days = []
    by_day: dict[int, list[Visit]] = defaultdict(list)
    for v in ledger.visits:
        by_day[v.day].append(v)
    for day in range(market.spec.days):
        today = by_day[day]
        today_paid = [v for v in today if v.outcome == "paid"]
        first, last = run.day_blocks[day] if day < len(run.day_blocks) else (0, -1)
        gas, txs = _block_totals(run, first, last, read)
        earned: Counter[str] = Counter()
        for v in today_paid:
            earned[symbol_of[v.asset]] += v.amount
        days.append(
            {
                "day": day + 1,
                "visits": len(today),
                "paid_reads": len(today_paid),
                "revenue": {s: _human(earned[s], decimals[s]) for s in sorted(earned)},
                "transactions": txs,
                "gas": gas,
                "blocks": max(0, last - first + 1),
            }
        )

    # -- cost per read, at the stated prices
    revenue_usd = sum(v / 10 ** decimals[s] * usd_rate[s] for s, v in revenue_total.items())
    price_usd = revenue_usd / paid_count if paid_count else 0.0
    usd_per_read = gas_per_read * assumptions.usd_per_gas()
    cost = {
        "gas_per_paid_read": round(gas_per_read, 1),
        "usd_per_paid_read": round(usd_per_read, 8),
        "mean_price_usd": round(price_usd, 6),
        "cost_over_price": round(usd_per_read / price_usd, 4) if price_usd else None,
        "total_gas_usd": round(chain_gas * assumptions.usd_per_gas(), 4),
        "revenue_usd": round(revenue_usd, 4),
    }

    outcomes = Counter(v.outcome for v in ledger.visits)
    supply = {s: t.total_supply() for s, t in tokens.items()}
    checks = {
        "no visit failed": outcomes["error"] == 0,
        "token supply unchanged by reads": supply == run.supply_after_funding,
        "authors' revenue equals agents' spend, per token": all(
            revenue_total[s] == spend_total[s] for s in tokens
        ),
        "what left the agents' wallets is revenue plus open channel deposits": all(
            outflow_total[s]
            == revenue_total[s] + sum(locked.get(s, 0) for locked in locked_by_agent.values())
            for s in tokens
        ),
        "ledger matches the chain, per author": all(a["_ledger_matches"] for a in authors),
        "ledger matches the chain, per agent": all(a["_ledger_matches"] for a in agents),
        "every settlement transaction succeeded": len(settled) == len(hashes),
    }
    if run.config.scheme == "exact":
        checks["one settlement transaction per paid read"] = len(hashes) == paid_count
    for entry in (*authors, *agents):
        del entry["_ledger_matches"]

    deterministic = {
        "totals": {
            "visits": len(ledger.visits),
            **{o: outcomes[o] for o in OUTCOMES},
            "settlement_transactions": len(hashes),
            "chain_transactions": chain_txs,
            "blocks": blocks,
            "chain_gas": chain_gas,
            "agents_who_hit_budget": exhausted,
            "paid_by_scheme": dict(sorted(Counter(v.scheme for v in paid).items())),
            "channels_opened": sum(len(c) for c in run.channels.values()),
        },
        "revenue": {s: _human(revenue_total[s], decimals[s]) for s in sorted(tokens)},
        "spend": {s: _human(spend_total[s], decimals[s]) for s in sorted(tokens)},
        "cost": cost,
        "authors": authors,
        "agents": agents,
        "days": days,
        "agent_spend_usd": _distribution([a["spent_usd"] for a in agents]),
        "author_revenue_usd": _distribution([a["revenue_usd"] for a in authors]),
        "checks": checks,
    }
    # Which settlement of a block pays a payee's first credit (20k gas more) depends on the
    # order threads submitted them in: per-transaction figures are kept out of the digest.
    order_dependent = {
        "settlement_gas": _distribution([float(g) for g in gas_by_tx.values()]),
        "note": "per-transaction gas depends on the order within a block; totals do not",
    }
    digest = hashlib.sha256(
        json.dumps(deterministic, sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()
    return {
        "schema": 1,
        "tool": "agent-pay simulate",
        "config": {
            "agents": market.spec.agents,
            "articles": market.spec.articles,
            "authors": len(market.authors),
            "days": market.spec.days,
            "seed": market.spec.seed,
            "reads_per_day": market.spec.reads_per_day,
            "scheme": run.config.scheme,
            "batch": run.config.batch,
            "channel_deposit_reads": run.config.channel_deposit_reads,
            "channel_after_reads": run.config.channel_after_reads,
            "simulated_start": SIM_EPOCH,
            "assumptions": assumptions.to_dict(),
        },
        "deterministic": deterministic,
        "digest": digest,
        "order_dependent": order_dependent,
        "chain_head": _head(run),
        "performance": _performance(run, ledger.visits),
        "machine": describe_machine(),
    }


def _head(run: SimulationRun) -> dict[str, Any]:
    """The last block: with the same seed, the same chain, hash for hash."""
    head = getattr(run.stack.chain, "head", None)
    if head is None:
        return {}
    return {
        "number": int(head.block_number),
        "hash": "0x" + bytes(head.hash).hex(),
        "state_root": "0x" + bytes(head.state_root).hex(),
    }


def _locked_in_channels(run: SimulationRun) -> dict[int, Counter[str]]:
    """Per agent and token: deposit not claimed yet, read from the channel contract."""
    handler = getattr(run.stack, "channels", None)
    if handler is None:
        return {}
    symbol_of = {t.address: s for s, t in run.stack.tokens.items()}
    locked: dict[int, Counter[str]] = {}
    for agent, channels in run.channels.items():
        held: Counter[str] = Counter()
        for channel in channels:
            state = handler.manager.channel(channel)
            if state.token in symbol_of:
                held[symbol_of[state.token]] += state.remaining
        locked[agent] = held
    return locked


def _block_totals(
    run: SimulationRun, first: int, last: int, read: dict[int, tuple[int, int]]
) -> tuple[int, int]:
    """(gas used, transactions) of blocks first..last on the embedded chain. `read` keeps each
    block's own totals: decoding a block of a hundred transactions is not free."""
    evm = getattr(run.stack.chain, "evm", None)
    if evm is None or last < first:
        return 0, 0
    gas = txs = 0
    for number in range(first, last + 1):
        if number not in read:
            block = evm.get_canonical_block_by_number(number)
            read[number] = int(block.header.gas_used), len(block.transactions)
        block_gas, block_txs = read[number]
        gas += block_gas
        txs += block_txs
    return gas, txs


def _performance(run: SimulationRun, visits: list[Visit]) -> dict[str, Any]:
    paid = [v for v in visits if v.outcome == "paid"]
    unpaid = [v for v in visits if v.outcome != "paid"]
    seconds = run.timings.get("reads", 0.0)
    return {
        "note": "wall clock: differs between runs and machines",
        "seconds": {k: round(v, 3) for k, v in run.timings.items()},
        "visits_per_second": round(len(visits) / seconds, 1) if seconds else 0.0,
        "paid_reads_per_second": round(len(paid) / seconds, 1) if seconds else 0.0,
        "latency_ms": {
            "paid": summarize_latencies([v.latency for v in paid]).to_dict(),
            "unpaid": summarize_latencies([v.latency for v in unpaid]).to_dict(),
        },
        "server_timing_ms": {
            "verify": summarize_latencies(
                [v.verify_ms / 1000 for v in paid if v.verify_ms is not None]
            ).to_dict(),
            "settle": summarize_latencies(
                [v.settle_ms / 1000 for v in paid if v.settle_ms is not None]
            ).to_dict(),
        },
        "latency_note": (
            f"a paid read's latency includes waiting for its batch's block: {run.config.batch} "
            "reads run together and settle in one block, on one core"
        ),
        "errors": [v.detail for v in visits if v.outcome == "error"][:5],
        "_latencies": {
            "paid": [round(v.latency * 1000, 3) for v in paid],
            "unpaid": [round(v.latency * 1000, 3) for v in unpaid],
            "verify": [v.verify_ms for v in paid if v.verify_ms is not None],
            "settle": [v.settle_ms for v in paid if v.settle_ms is not None],
        },
    }
