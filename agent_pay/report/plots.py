"""PNG plots of a simulation report, drawn with matplotlib's Agg backend (no display needed).

`simulation_plots(report)` returns each plot as PNG bytes, keyed by file stem; the caller writes
them to files, embeds them in HTML, or both. matplotlib is needed only here, and imported on
first use: the rest of agent-pay runs without it.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from typing import Any

__all__ = ["PLOTS", "simulation_plots"]

_COLORS = {"paid": "#2b6cb0", "unpaid": "#a0aec0", "accent": "#c05621", "ok": "#2f855a"}


_OUTCOME_WORDS = {
    "paid": "paid",
    "reread": "re-read (free)",
    "declined": "declined",
    "over_cap": "over the cap",
    "over_budget": "over budget",
    "no_token": "no token held",
    "error": "error",
}
"""The simulation's outcome keys, as a reader says them."""


def _whole(axis: Any) -> None:
    """Ticks at whole numbers only: counts of visits, agents, authors, days."""
    from matplotlib.ticker import MaxNLocator

    axis.set_major_locator(MaxNLocator(integer=True))


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig: Any) -> bytes:
    buffer = io.BytesIO()
    # Fixed metadata: the same report draws the same bytes (no software/date stamps).
    fig.savefig(buffer, format="png", dpi=110, metadata={"Software": None})
    _pyplot().close(fig)
    return buffer.getvalue()


def _revenue_by_author(report: dict[str, Any]) -> bytes:
    plt = _pyplot()
    authors = report["deterministic"]["authors"]
    revenue = [a["revenue_usd"] for a in authors]
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.bar(range(1, len(revenue) + 1), revenue, color=_COLORS["paid"], width=1.0)
    ax.set_xlabel("authors, by revenue (rank)")
    _whole(ax.xaxis)
    ax.set_ylabel("revenue (USD equivalent)")
    total = sum(revenue) or 1.0
    share, running = [], 0.0
    for value in revenue:
        running += value
        share.append(100 * running / total)
    twin = ax.twinx()
    twin.plot(range(1, len(share) + 1), share, color=_COLORS["accent"])
    twin.set_ylabel("cumulative share of revenue (%)", color=_COLORS["accent"])
    twin.set_ylim(0, 105)
    ax.set_title(f"Revenue of {len(revenue)} authors")
    fig.tight_layout()
    return _png(fig)


def _agent_spend(report: dict[str, Any]) -> bytes:
    plt = _pyplot()
    spend = [a["spent_usd"] for a in report["deterministic"]["agents"]]
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.hist(spend, bins=min(50, max(5, len(spend) // 10)), color=_COLORS["paid"])
    mean = sum(spend) / len(spend) if spend else 0.0
    ax.axvline(mean, color=_COLORS["accent"], linestyle="--", label=f"mean {mean:.2f}")
    ax.set_xlabel("spent by one agent (USD equivalent)")
    ax.set_ylabel("agents")
    _whole(ax.yaxis)
    ax.set_title(f"What {len(spend)} agents spent")
    ax.legend()
    fig.tight_layout()
    return _png(fig)


def _daily(report: dict[str, Any]) -> bytes:
    plt = _pyplot()
    days = report["deterministic"]["days"]
    x = [d["day"] for d in days]
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.bar(x, [d["paid_reads"] for d in days], color=_COLORS["paid"], label="paid reads")
    ax.bar(
        x,
        [d["visits"] - d["paid_reads"] for d in days],
        bottom=[d["paid_reads"] for d in days],
        color=_COLORS["unpaid"],
        label="other visits",
    )
    ax.set_xlabel("day")
    ax.set_xticks(x)
    ax.set_ylabel("visits")
    _whole(ax.yaxis)
    twin = ax.twinx()
    twin.plot(x, [d["gas"] / 1e6 for d in days], color=_COLORS["accent"], marker="o")
    twin.set_ylabel("gas used on chain (millions)", color=_COLORS["accent"])
    ax.legend(loc="lower left")
    ax.set_title("Reads and on-chain gas per day")
    fig.tight_layout()
    return _png(fig)


def _latency(report: dict[str, Any]) -> bytes:
    plt = _pyplot()
    samples = report["performance"].get("_latencies", {})
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, keys, title in (
        (axes[0], ("paid", "unpaid"), "Visit latency, client side"),
        (axes[1], ("verify", "settle"), "Server-Timing of paid reads"),
    ):
        values = [v for k in keys for v in samples.get(k, []) if v > 0]
        if not values:
            ax.text(0.5, 0.5, "no samples", ha="center", va="center")
            continue
        low, high = math.log10(min(values)), math.log10(max(values)) + 1e-9
        bins = [10 ** (low + (high - low) * i / 40) for i in range(41)]
        for key, color in zip(keys, (_COLORS["paid"], _COLORS["accent"]), strict=True):
            data = [v for v in samples.get(key, []) if v > 0]
            if data:
                ax.hist(data, bins=bins, alpha=0.7, color=color, label=f"{key} ({len(data):,})")
        ax.set_xscale("log")
        ax.set_xlabel("milliseconds (wall clock)")
        ax.set_ylabel("count")
        _whole(ax.yaxis)
        ax.set_title(title)
        ax.legend()
    fig.suptitle(report["performance"]["latency_note"], fontsize=8)
    fig.tight_layout()
    return _png(fig)


def _cost(report: dict[str, Any]) -> bytes:
    plt = _pyplot()
    cost = report["deterministic"]["cost"]
    assumptions = report["config"]["assumptions"]
    gas = cost["gas_per_paid_read"]
    prices = [0.01, 0.1, 1.0, 10.0]
    if assumptions["gas_price_gwei"] not in prices:
        prices = sorted([*prices, assumptions["gas_price_gwei"]])
    usd = [gas * g * 1e-9 * assumptions["eth_usd"] for g in prices]
    fig, ax = plt.subplots(figsize=(8, 4))
    labels = [f"{g:g} gwei" for g in prices]
    colors = [
        _COLORS["accent"] if g == assumptions["gas_price_gwei"] else _COLORS["unpaid"]
        for g in prices
    ]
    ax.bar(labels, usd, color=colors)
    ax.axhline(cost["mean_price_usd"], color=_COLORS["paid"], linestyle="--", label="mean price")
    ax.set_yscale("log")
    ax.set_ylabel("USD per paid read")
    ax.set_title(
        f"On-chain cost per read ({gas:,.0f} gas, {report['config']['scheme']}) at "
        f"ETH = ${assumptions['eth_usd']:,.0f} (assumed)"
    )
    ax.legend()
    fig.tight_layout()
    return _png(fig)


def _outcomes(report: dict[str, Any]) -> bytes:
    plt = _pyplot()
    totals = report["deterministic"]["totals"]
    names = ["paid", "reread", "declined", "over_cap", "over_budget", "no_token", "error"]
    names = [n for n in names if n in totals]
    fig, ax = plt.subplots(figsize=(8, 3.5))
    ax.bar(
        [_OUTCOME_WORDS.get(n, n) for n in names], [totals[n] for n in names], color=_COLORS["paid"]
    )
    for i, name in enumerate(names):
        ax.text(i, totals[name], f"{totals[name]:,}", ha="center", va="bottom", fontsize=8)
    ax.set_ylabel("visits")
    _whole(ax.yaxis)
    ax.set_title(f"What became of {totals['visits']:,} visits")
    fig.tight_layout()
    return _png(fig)


PLOTS: dict[str, tuple[str, Callable[[dict[str, Any]], bytes]]] = {
    "outcomes": ("Visits and what became of them", _outcomes),
    "revenue_by_author": ("Revenue per author", _revenue_by_author),
    "agent_spend": ("Spend per agent", _agent_spend),
    "daily": ("Reads and gas per day", _daily),
    "cost_per_read": ("On-chain cost per read", _cost),
    "latency": ("Latency", _latency),
}
"""Every plot: file stem -> (caption, drawing function)."""


def simulation_plots(report: dict[str, Any]) -> dict[str, bytes]:
    """Every plot of a `summarize` report, as PNG bytes keyed by file stem."""
    return {name: draw(report) for name, (_, draw) in PLOTS.items()}
