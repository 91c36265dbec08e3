"""`agent-pay bench`: one reproducible run measuring free and paid reads on the same server.

The server (uvicorn, one worker, with the embedded chain and the in-process facilitator) runs in
its own process; the load comes from another process on 127.0.0.1 and is bounded by a request
count and a time cap per phase. Payments are signed before each timed phase — signing is the
agent's cost, reported apart as the client signing rate — and every paid read carries its own
authorization, from one of many agents.

Phases, in order: warm-up (not reported), free previews under load, paid reads under load per
scheme, unloaded latency (one connection) for free and paid reads, the stock x402 server on the
same chain, and the embedded chain's mining throughput measured directly. Every figure comes
from this run; the report's `checks` record the consistency checks (every paid read settled once,
the author received exactly the price for each).
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Sequence
from typing import Any

from agent_pay.assets import Asset, format_amount
from agent_pay.bench.config import DEFAULT_SLUG, BenchConfig
from agent_pay.bench.figures import load_average, memory_figures, ratios, targets
from agent_pay.bench.machine import describe_machine
from agent_pay.bench.mining import measure_mining, measure_step_costs
from agent_pay.bench.other_chain import paid_exact_on
from agent_pay.bench.phases import (
    Payers,
    Session,
    Span,
    first_reads,
    make_payers,
    paid_phase,
    phase_figures,
)
from agent_pay.bench.progress import Progress
from agent_pay.bench.schemes import SchemeKit, scheme_kit, unavailable_reason
from agent_pay.bench.server import BenchServer
from agent_pay.signing import LocalSigner

__all__ = ["DEFAULT_SLUG", "BenchConfig", "run_bench"]

SCHEMA_VERSION = 1


def _exact_payers(run: Session, asset: Asset) -> Payers:
    config = run.config
    reads = config.paid_requests + config.stock_requests + 2 * config.unloaded_requests
    return make_payers(run, scheme_kit("exact"), asset, run.signers, reads)


def _fund_payers(run: Session, kits: Sequence[SchemeKit], asset: Asset) -> dict[str, Payers]:
    """The payers of each scheme, funded: "exact" reads come from `config.agents` agents; a
    channel serves `config.reads_per_channel` reads, so there are fewer channel payers, each
    funded for its deposit."""
    config = run.config
    pools: dict[str, Payers] = {}
    price = 10**asset.decimals // 10  # the sample articles cost 0.1; fund with room to spare
    for kit in kits:
        if kit.name == "exact":
            pools["exact"] = payers = _exact_payers(run, asset)
        else:
            count = max(1, config.paid_requests // config.reads_per_channel)
            reads = config.paid_requests + config.unloaded_requests + count
            signers = [LocalSigner.random() for _ in range(count)]
            pools[kit.name] = payers = make_payers(run, kit, asset, signers, reads)
        funds = format_amount((_planned(run, payers) * 2 + 10) * price, asset.decimals)
        run.server.call("fund", [s.address for s, _ in payers.clients], {"USDX": funds})
    return pools


def _planned(run: Session, payers: Payers) -> int:
    """Reads one payer of `payers` will make in the whole run, at most."""
    config = run.config
    total = config.paid_requests + config.stock_requests + 2 * config.unloaded_requests + 1
    return -(-total // len(payers.clients)) + 1


def run_bench(config: BenchConfig, progress: Progress | None = None) -> dict[str, Any]:
    """Run every phase of `config`; return all figures as a JSON-ready dict."""
    progress = progress or Progress(label="bench")
    kits: list[SchemeKit] = []
    skipped: dict[str, str] = {}
    for name in config.schemes:
        reason = unavailable_reason(name)
        if reason is None:
            kits.append(scheme_kit(name))
        else:
            skipped[name] = reason
            progress.step(f"scheme {name}: not run — {reason}")
    if not kits:
        raise RuntimeError("no scheme can run: " + "; ".join(skipped.values()))
    started = time.perf_counter()
    report: dict[str, Any] = {
        "schema": SCHEMA_VERSION,
        "tool": "agent-pay bench",
        "started_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": describe_machine(("x402",)),
        "load_average_at_start": load_average(),
        "config": config.to_dict(),
    }
    progress.step("starting the server process (chain, tokens, facilitator, uvicorn)")
    primary = "process" if config.chain == "both" else config.chain
    with BenchServer([k.name for k in kits], primary) as server:
        run = Session(
            config, server, progress, [LocalSigner.random() for _ in range(config.agents)]
        )
        chain_at = f", chain pid {server.chain_pid}" if server.chain_pid else ""
        progress.step(f"server at {server.url}, pid {server.pid}{chain_at}")
        run.remember_memory("idle")
        asset: Asset = server.call("asset", "USDX")
        author: str = server.call("author", config.slug)
        pools = _fund_payers(run, kits, asset)
        progress.step(
            "funded " + ", ".join(f"{len(p.clients)} {name} payer(s)" for name, p in pools.items())
        )

        # Warm-up: the first requests pay for imports and cold caches; each payer's first read
        # (through its PaymentAuth, over HTTP) also opens its channel where there is one.
        run.load("warm-up (free)", [[{}]] * config.warmup_requests, config.concurrency)
        opened: dict[str, Span] = {}
        for name, payers in pools.items():
            opened[name] = first_reads(run, payers)
            progress.step(f"warm-up ({name}): {opened[name].reads} first paid reads, one each")
        run.remember_memory("after_warmup")

        phases: dict[str, Any] = {}
        free = run.load("free preview", [[{}]] * config.free_requests, config.concurrency)
        phases["free"] = phase_figures(free, config.free_requests, config.concurrency)
        run.checks["free: every request answered 402 with the preview"] = (
            free.statuses.get(402, 0) == config.free_requests
        )
        run.remember_memory("after_free")
        for name, payers in pools.items():
            phases[f"paid_{name}"] = paid_phase(
                run, f"paid {name}", payers, server.url, config.paid_requests,
                config.concurrency, author, earlier=opened[name] if name == "channel" else None,
            )  # fmt: skip
            run.remember_memory(f"after_paid_{name}")

        unloaded: dict[str, Any] = {}
        one = run.load("unloaded free", [[{}]] * config.unloaded_requests, 1)
        unloaded["free"] = phase_figures(one, config.unloaded_requests, 1)
        for name, payers in pools.items():
            unloaded[f"paid_{name}"] = paid_phase(
                run, f"unloaded paid {name}", payers, server.url, config.unloaded_requests, 1,
                author,
            )  # fmt: skip
        report["phases"] = phases
        report["unloaded"] = unloaded
        report["stock_x402"] = _stock(run, pools.get("exact"), author)
        run.remember_memory("end")
        peak = server.memory()
        report["memory"] = memory_figures(run.memory, peak)
    report["chain"] = primary
    if config.chain == "both" and "exact" in pools:
        other = paid_exact_on("embedded", config, progress)
        run.checks.update(other.pop("checks"))
        report["other_chain"] = other

    progress.step(
        f"mining throughput: {config.mining_batch} settlements in one block, "
        f"{config.mining_singles} one per block"
    )
    mining = measure_mining(config.mining_batch, config.mining_singles, progress=progress.step)
    report["mining"] = mining.to_dict()
    report["step_costs_ms"] = measure_step_costs(config.mining_batch)
    progress.step(
        f"mining: {mining.batch_tx_per_second:,.0f} tx/s in one block, "
        f"{mining.single_tx_per_second:,.0f} tx/s one per block"
    )
    report["schemes"] = {
        name: ({"status": "ran"} if name not in skipped else {"status": "not run", "reason": why})
        for name, why in [(n, skipped.get(n, "")) for n in config.schemes]
    }
    report["ratios"] = ratios(report)
    report["targets"] = targets(report)
    report["checks"] = dict(run.checks)
    report["load_average_at_end"] = load_average()
    report["seconds"] = round(time.perf_counter() - started, 1)
    progress.step(f"done in {report['seconds']:.1f} s")
    return report


def _stock(run: Session, payers: Payers | None, author: str) -> dict[str, Any]:
    """The stock x402 server + facilitator on the same chain, paid by the "exact" payers, or
    why it did not run."""
    config = run.config
    if not config.stock:
        return {"status": "not run", "reason": "disabled (--no-stock)"}
    if payers is None:  # it is compared with our "exact", and its payers are funded for it
        return {"status": "not run", "reason": "the exact scheme is not benchmarked"}
    try:
        import x402  # noqa: F401
    except ImportError:
        return {"status": "not run", "reason": "x402 is not installed (pip install x402)"}
    run.progress.step("starting the stock x402 server and facilitator on the same chain")
    base: str = run.server.call("start_stock", config.slug)
    loaded = paid_phase(
        run, "stock x402 paid", payers, base, config.stock_requests, config.concurrency, author
    )
    one = paid_phase(
        run, "stock x402 unloaded paid", payers, base, config.unloaded_requests, 1, author
    )
    return {
        "status": "ran",
        "how": (
            "x402 "
            + str(describe_machine(("x402",))["packages"].get("x402"))
            + ": stock FastAPI payment middleware + x402ResourceServer + x402Facilitator with "
            "ExactEvmFacilitatorScheme, in the server process, on the same embedded chain and "
            "token; chain access through x402's FacilitatorEvmSigner protocol implemented on our "
            "Chain (no JSON-RPC hop)"
        ),
        "paid": loaded,
        "unloaded_paid": one,
    }
