"""A self-contained HTML report of a simulation: one file, plots embedded, no external assets.

Everything a reader needs travels inside the file: CSS inline, each PNG as a `data:` URI, no
scripts, fonts or links to fetch. Every value from the report is HTML-escaped.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from agent_pay.report.plots import PLOTS

__all__ = ["simulation_html"]

_STYLE = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto;
       max-width: 1050px; color: #1a202c; padding: 0 1em; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { margin-top: 1.8em; font-size: 1.2em; }
.sub { color: #4a5568; } table { border-collapse: collapse; margin: 0.6em 0; }
td, th { border-bottom: 1px solid #e2e8f0; padding: 3px 10px; text-align: left; }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; }
.ok { color: #2f855a; } .bad { color: #c53030; font-weight: bold; }
figure { margin: 1em 0; } figcaption { color: #4a5568; font-size: 0.9em; }
img { max-width: 100%; border: 1px solid #e2e8f0; }
code { background: #f7fafc; padding: 1px 4px; }
.note { color: #4a5568; font-size: 0.9em; }
"""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _num(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return _e(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.6g}" if abs(value) < 1 else f"{value:,.2f}"
    return _e(value)


def _table(headers: Sequence[str], rows: Iterable[Sequence[Any]], numeric: set[int]) -> str:
    head = "".join(
        f'<th class="n">{_e(h)}</th>' if i in numeric else f"<th>{_e(h)}</th>"
        for i, h in enumerate(headers)
    )
    body = []
    for row in rows:
        cells = "".join(
            f'<td class="n">{_num(v)}</td>' if i in numeric else f"<td>{_e(v)}</td>"
            for i, v in enumerate(row)
        )
        body.append(f"<tr>{cells}</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _pairs(values: Mapping[str, Any]) -> str:
    return _table(["", "value"], values.items(), {1})


def _money(values: Mapping[str, str]) -> str:
    return ", ".join(f"{v} {s}" for s, v in values.items()) or "0"


def simulation_html(
    report: dict[str, Any], images: Mapping[str, bytes], *, command: str | None = None
) -> str:
    """The HTML report for `report` (from `summarize`) with `images` (from
    `simulation_plots`) embedded."""
    config, det, perf = report["config"], report["deterministic"], report["performance"]
    totals, cost, checks = det["totals"], det["cost"], det["checks"]
    assumptions = config["assumptions"]
    machine = report["machine"]
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        f"<title>agent-pay simulation, seed {_e(config['seed'])}</title>",
        f"<style>{_STYLE}</style></head><body>",
        "<h1>agent-pay market simulation</h1>",
        f"<p class='sub'>{_num(config['agents'])} agents, {_num(config['articles'])} articles by "
        f"{_num(config['authors'])} authors, {_num(config['days'])} days, seed "
        f"{_e(config['seed'])}, scheme <b>{_e(config['scheme'])}</b>. Every paid read went "
        "through the real protocol: HTTP 402, an EIP-712 signature, verification by the "
        "facilitator and a settlement transaction on the embedded py-evm chain.</p>",
    ]
    if command:
        parts.append(f"<p class='note'>Command: <code>{_e(command)}</code></p>")
    failed = [name for name, ok in checks.items() if not ok]
    verdict = (
        "<span class='ok'>all checks passed</span>"
        if not failed
        else "<span class='bad'>FAILED: " + _e("; ".join(failed)) + "</span>"
    )
    parts += [
        "<h2>Summary</h2>",
        _pairs(
            {
                "visits (free preview read)": totals["visits"],
                "paid reads": totals["paid"],
                "revenue (all authors)": _money(det["revenue"]),
                "spend (all agents)": _money(det["spend"]),
                "settlement transactions": totals["settlement_transactions"],
                "blocks": totals["blocks"],
                "gas on chain": totals["chain_gas"],
                "gas per paid read": cost["gas_per_paid_read"],
                "cost per paid read (USD, assumed prices)": cost["usd_per_paid_read"],
                "mean price of a read (USD equivalent)": cost["mean_price_usd"],
                "cost / price": cost["cost_over_price"],
                "agents who hit their budget": totals["agents_who_hit_budget"],
            }
        ),
        f"<p>Consistency: {verdict}.</p>",
        _table(
            ["check", "result"], [(k, "ok" if v else "FAILED") for k, v in checks.items()], set()
        ),
        "<p class='note'>Assumptions (not measurements): gas at "
        f"{_e(assumptions['gas_price_gwei'])} gwei, ETH at ${_e(assumptions['eth_usd'])}, "
        f"{_e(assumptions['cny_per_usd'])} CNYX per USD. Gas itself is measured.</p>",
        f"<p class='note'>Determinism digest (SHA-256 of every deterministic figure): "
        f"<code>{_e(report['digest'])}</code>. A run with the same seed and sizes gives the "
        "same digest; wall-clock figures below differ between runs.</p>",
    ]
    for name, (caption, _) in PLOTS.items():
        if name in images:
            data = base64.b64encode(images[name]).decode("ascii")
            parts.append(
                f"<figure><img alt='{_e(caption)}' src='data:image/png;base64,{data}'>"
                f"<figcaption>{_e(caption)}</figcaption></figure>"
            )
    parts += [
        "<h2>Authors (top 25 by revenue)</h2>",
        _table(
            ["author", "address", "articles", "paid reads", "revenue", "USD equivalent"],
            [
                (
                    a["name"],
                    a["address"],
                    a["articles"],
                    a["paid_reads"],
                    _money(a["revenue"]),
                    a["revenue_usd"],
                )
                for a in det["authors"][:25]
            ],
            {2, 3, 5},
        ),
        "<h2>Agents</h2>",
        _pairs({f"spend (USD equivalent): {k}": v for k, v in det["agent_spend_usd"].items()}),
        "<h2>Visits</h2>",
        _pairs({k: v for k, v in totals.items() if isinstance(v, int) and not isinstance(v, bool)}),
        "<h2>Days</h2>",
        _table(
            ["day", "visits", "paid reads", "revenue", "transactions", "gas", "blocks"],
            [
                (
                    d["day"],
                    d["visits"],
                    d["paid_reads"],
                    _money(d["revenue"]),
                    d["transactions"],
                    d["gas"],
                    d["blocks"],
                )
                for d in det["days"]
            ],
            {0, 1, 2, 4, 5, 6},
        ),
        "<h2>Performance (wall clock; not deterministic)</h2>",
        _pairs(
            {
                **{f"seconds: {k}": v for k, v in perf["seconds"].items()},
                "visits per second": perf["visits_per_second"],
                "paid reads per second": perf["paid_reads_per_second"],
                **{
                    f"{kind} latency {stat}": value
                    for kind, summary in perf["latency_ms"].items()
                    for stat, value in summary.items()
                    if stat != "count"
                },
                **{
                    f"server {step} {stat}": value
                    for step, summary in perf["server_timing_ms"].items()
                    for stat, value in summary.items()
                    if stat != "count"
                },
            }
        ),
        f"<p class='note'>{_e(perf['latency_note'])}.</p>",
        f"<p class='note'>Machine: {_e(machine['cpus'])} CPU(s), {_e(machine['cpu_model'])}, "
        f"{_e(machine['memory_gib'])} GiB, Python {_e(machine['python'])}, "
        f"{_e(machine['os'])}.</p>",
        "</body></html>",
    ]
    return "\n".join(parts)
