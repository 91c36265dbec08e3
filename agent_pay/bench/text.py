"""The benchmark's figures as a human reads them: raw numbers first, then ratios and limits."""

from __future__ import annotations

from typing import Any

__all__ = ["render_bench"]


def _n(value: float | int | None, digits: int = 1) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, int) or digits == 0:
        return f"{value:,.0f}"
    return f"{value:,.{digits}f}"


def _row(name: str, phase: dict[str, Any]) -> str:
    latency = phase["latency_ms"]
    statuses = " ".join(f"{code}x{count}" for code, count in phase["statuses"].items()) or "-"
    extra = ""
    if phase.get("errors"):
        extra += f" errors {phase['errors']}"
    if phase.get("unsent"):
        extra += f" unsent {phase['unsent']}"
    return (
        f"  {name:<28}{_n(phase['reads_per_second']):>10}{_n(latency['p50_ms'], 2):>10}"
        f"{_n(latency['p99_ms'], 2):>10}{_n(phase.get('server_cpu_us_per_read')):>10}"
        f"{_n(phase.get('chain_cpu_us_per_read')):>10}{_n(phase['completed'], 0):>10}"
        f"   {statuses}{extra}"
    )


def _header() -> str:
    return (
        f"  {'':<28}{'reads/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'CPU us':>10}{'chain us':>10}"
        f"{'reads':>10}"
        "   statuses"
    )


def _ratio(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def render_bench(report: dict[str, Any]) -> str:
    """The report of `run_bench` as text."""
    machine, config = report["machine"], report["config"]
    lines = [
        f"agent-pay bench — {machine['cpus']} CPU(s) ({machine['cpu_model']}), "
        f"{machine['memory_gib']} GiB, Python {machine['python']}"
        + (" [quick]" if config["quick"] else ""),
        "server: uvicorn, one worker, embedded py-evm chain "
        + (
            "in its own process (CPU us: the server's; chain us: the chain's)"
            if report.get("chain", "embedded") == "process"
            else "in the server's process"
        )
        + " + in-process facilitator, own process; load: separate process on 127.0.0.1, "
        f"{config['concurrency']} keep-alive connections, "
        f"at most {config['phase_seconds']:.0f} s per phase",
        f"load average at start {report.get('load_average_at_start')}, at end "
        f"{report.get('load_average_at_end')} (other work on the machine skews every figure)",
        "",
        f"under load ({config['concurrency']} connections):",
        _header(),
    ]
    phases = report["phases"]
    lines.append(_row("free preview (402)", phases["free"]))
    for key, phase in phases.items():
        if key.startswith("paid_"):
            lines.append(_row(f"paid, {key[5:]}", phase))
    stock = report["stock_x402"]
    if stock["status"] == "ran":
        lines.append(_row("paid, stock x402 exact", stock["paid"]))
    other = report.get("other_chain")
    if other is not None:
        lines.append(_row(f"paid, exact, chain {other['chain']}", other["paid"]))
    lines += ["", "unloaded (one connection, one request at a time):", _header()]
    unloaded = report["unloaded"]
    lines.append(_row("free preview (402)", unloaded["free"]))
    for key, phase in unloaded.items():
        if key.startswith("paid_"):
            lines.append(_row(f"paid, {key[5:]}", phase))
    if stock["status"] == "ran":
        lines.append(_row("paid, stock x402 exact", stock["unloaded_paid"]))
    if other is not None:
        lines.append(_row(f"paid, exact, chain {other['chain']}", other["unloaded_paid"]))

    ratios = report["ratios"]
    lines += [
        "",
        "ratios:",
        f"  paid exact / free preview (reads/s)      {_ratio(ratios['paid_exact_over_free'], 4)}",
        f"  paid channel / free preview (reads/s)    {_ratio(ratios['paid_channel_over_free'])}",
        "  free preview / paid channel (server CPU per read)   "
        f"{_ratio(ratios['free_over_paid_channel_cpu'])}",
        f"  channel / exact (paid reads/s)           {_ratio(ratios['channel_over_exact'])}",
        f"  ours exact / stock x402 exact (reads/s)  {_ratio(ratios['exact_over_stock_x402'])}",
        "  exact, chain in its own process / in the server's (reads/s)  "
        f"{_ratio(ratios.get('exact_process_over_embedded_chain'))}",
        "  paid / free p50 latency, unloaded        exact "
        f"{_ratio(ratios['unloaded_p50_paid_exact_over_free'], 1)}, channel "
        f"{_ratio(ratios['unloaded_p50_paid_channel_over_free'], 1)}",
    ]

    lines += ["", "settlement on the embedded chain:"]
    for key, phase in [
        *phases.items(),
        *([("paid_stock_x402", stock["paid"])] if stock["status"] == "ran" else []),
    ]:
        if not key.startswith("paid_"):
            continue
        gas = phase["settlement_gas"]
        if key == "paid_channel":
            lines.append(
                f"  channel    {phase['paid_reads']:,} reads on {phase['payers']} channel(s), "
                f"{phase['reads_per_channel']:,} reads per channel: "
                f"{phase['chain_transactions']} transactions (opening deposits and claims) "
                f"using {phase['chain_gas']:,} gas = {_n(phase['gas_per_read'], 0)} gas per paid "
                f"read; claims {phase['claim_gas']:,} gas"
            )
            continue
        lines.append(
            f"  {key[5:]:<10} {phase['settlements_succeeded']:,} settlements in "
            f"{phase['blocks_with_settlements']:,} blocks ({phase['settlements_per_block']} per "
            f"block), {_n(phase['settlements_per_second'])} settlements/s achieved; gas per paid "
            f"read {_n(phase['gas_per_read'], 0)} (settlement tx min {gas['min']:,}, max "
            f"{gas['max']:,})"
        )
    mining = report["mining"]
    lines.append(
        f"  mining alone: {_n(mining['batch_tx_per_second'])} settlements/s in one block of "
        f"{mining['batch_size']} (group commit), {_n(mining['one_per_block_tx_per_second'])}/s "
        f"one per block; facilitator signs+submits {_n(mining['submit_per_second'], 0)}/s"
    )
    steps = report.get("step_costs_ms", {})
    if steps:
        lines.append(
            "  one at a time, ms per call: "
            + ", ".join(f"{name.replace('_', ' ')} {value:.3f}" for name, value in steps.items())
        )
    signing = [
        f"{key[5:]} {_n(phase['signing_per_second'], 0)}/s"
        for key, phase in phases.items()
        if key.startswith("paid_")
    ]
    lines.append(f"  client signing (one core, before the timed phase): {', '.join(signing)}")

    memory = report["memory"]
    rss = ", ".join(f"{k.replace('_', ' ')} {v} MiB" for k, v in memory["rss_mib"].items())
    lines += ["", f"server memory (RSS): {rss}; peak {memory['peak_mib']} MiB"]
    if stock["status"] == "ran":
        lines.append(
            "  (the 'end' reading includes the stock x402 app, served by the same process)"
        )

    lines += ["", "stock x402 comparison: " + stock["status"]]
    lines.append("  " + (stock.get("how") or stock.get("reason", "")))
    for name, scheme in report["schemes"].items():
        if scheme["status"] != "ran":
            lines.append(f"scheme {name}: not run — {scheme['reason']}")

    lines += ["", "targets (channel issue; group commit for exact):"]
    for target in report["targets"]:
        met = target["met"]
        verdict = "met" if met else ("NOT met" if met is False else "-")
        value = target["value"]
        shown = (
            "; ".join(f"{k} p50 {v['p50_ms']} ms p99 {v['p99_ms']} ms" for k, v in value.items())
            if isinstance(value, dict)
            else _ratio(value, 4)
        )
        note = f" ({target['note']})" if target["note"] else ""
        lines.append(f"  {target['target']}: {shown} [{verdict}]{note}")

    failed = [name for name, ok in report["checks"].items() if not ok]
    lines += [
        "",
        f"checks: {len(report['checks']) - len(failed)}/{len(report['checks'])} passed"
        + ("" if not failed else " — FAILED: " + "; ".join(failed)),
        f"run took {report['seconds']} s",
    ]
    return "\n".join(lines)
