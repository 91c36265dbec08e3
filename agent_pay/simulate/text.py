"""A simulation report as text: what the market did, what it cost, and whether it adds up."""

from __future__ import annotations

from typing import Any

__all__ = ["render_simulation"]


def _money(values: dict[str, str]) -> str:
    return ", ".join(f"{v} {s}" for s, v in values.items()) or "0"


def render_simulation(report: dict[str, Any]) -> str:
    """The report of `summarize` as text."""
    config, det, perf = report["config"], report["deterministic"], report["performance"]
    totals, cost, assumptions = det["totals"], det["cost"], config["assumptions"]
    lines = [
        f"agent-pay simulate — {config['agents']:,} agents, {config['articles']:,} articles by "
        f"{config['authors']:,} authors, {config['days']} days, seed {config['seed']}, "
        f"scheme {config['scheme']} (batches of {config['batch']} reads per block)",
        "",
        f"visits {totals['visits']:,}: paid {totals['paid']:,}, re-read free "
        f"{totals['reread']:,}, declined after the preview {totals['declined']:,}, over the "
        f"agent's price cap {totals['over_cap']:,}, over budget {totals['over_budget']:,}, "
        f"no token held {totals['no_token']:,}, errors {totals['error']:,}",
        f"revenue (authors) {_money(det['revenue'])}; spend (agents) {_money(det['spend'])}",
        "paid by scheme: "
        + ", ".join(f"{k} {v:,}" for k, v in totals["paid_by_scheme"].items())
        + (f"; {totals['channels_opened']:,} channels opened" if totals["channels_opened"] else ""),
        f"on chain: {totals['settlement_transactions']:,} settlement transactions in "
        f"{totals['blocks']:,} blocks, {totals['chain_gas']:,} gas = "
        f"{cost['gas_per_paid_read']:,.0f} gas per paid read",
        f"cost per paid read: ${cost['usd_per_paid_read']:.6f} at "
        f"{assumptions['gas_price_gwei']:g} gwei and ETH ${assumptions['eth_usd']:,.0f} "
        f"(assumed), against a mean price of ${cost['mean_price_usd']:.4f} "
        f"(cost/price {cost['cost_over_price']})",
        f"agents who hit their budget: {totals['agents_who_hit_budget']:,}; spend per agent "
        f"(USD eq.) mean {det['agent_spend_usd']['mean']:.3f}, median "
        f"{det['agent_spend_usd']['median']:.3f}, max {det['agent_spend_usd']['max']:.3f}",
        "",
        "top authors:",
    ]
    for author in det["authors"][:5]:
        lines.append(
            f"  {author['name']}  {author['paid_reads']:>7,} reads  {_money(author['revenue'])}"
        )
    lines += ["", "per day:"]
    for day in det["days"]:
        lines.append(
            f"  day {day['day']:>3}: {day['visits']:>7,} visits, {day['paid_reads']:>7,} paid, "
            f"{day['transactions']:>7,} txs in {day['blocks']:>5,} blocks, {day['gas']:>13,} gas"
        )
    seconds = perf["seconds"]
    latency = perf["latency_ms"]["paid"]
    lines += [
        "",
        f"wall clock: {seconds.get('total', 0):.1f} s in all ({seconds.get('reads', 0):.1f} s "
        f"of reads: {perf['visits_per_second']:,.1f} visits/s, {perf['paid_reads_per_second']:,.1f}"
        f" paid reads/s); paid read latency p50 {latency['p50_ms']:.1f} ms, p99 "
        f"{latency['p99_ms']:.1f} ms ({perf['latency_note']})",
    ]
    failed = [name for name, ok in det["checks"].items() if not ok]
    lines += [
        f"checks: {len(det['checks']) - len(failed)}/{len(det['checks'])} passed"
        + ("" if not failed else " — FAILED: " + "; ".join(failed)),
        f"determinism digest: {report['digest']}",
    ]
    head = report.get("chain_head") or {}
    if head:
        lines.append(f"chain head: block {head['number']:,}, hash {head['hash']}")
    if perf["errors"]:
        lines.append("first errors: " + " | ".join(perf["errors"]))
    return "\n".join(lines)
