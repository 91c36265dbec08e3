"""The paid "exact" phase again, on a second server whose embedded chain sits elsewhere.

`agent-pay bench --chain both` (the default) runs the whole benchmark with the chain in a
process of its own (`ProcessChain`), then starts a second server with the chain in the server's
process (`EmbeddedChain`, as before) and measures the same paid phases on it — loaded, then
unloaded — so one run compares the two placements under the same load on the machine.
"""

from __future__ import annotations

from typing import Any

from agent_pay.assets import format_amount
from agent_pay.bench.config import BenchConfig
from agent_pay.bench.phases import Session, first_reads, make_payers, paid_phase
from agent_pay.bench.progress import Progress
from agent_pay.bench.schemes import scheme_kit
from agent_pay.bench.server import BenchServer
from agent_pay.signing import LocalSigner

__all__ = ["paid_exact_on"]


def paid_exact_on(chain: str, config: BenchConfig, progress: Progress) -> dict[str, Any]:
    """Figures of the paid exact phase, loaded and unloaded, on a server whose chain is
    `chain` ("embedded" or "process")."""
    progress.step(f"second server, chain {chain}: the paid exact phases again")
    with BenchServer(["exact"], chain) as server:
        agents = [LocalSigner.random() for _ in range(config.agents)]
        run = Session(config, server, progress, agents)
        asset = server.call("asset", "USDX")
        author: str = server.call("author", config.slug)
        reads = config.paid_requests + config.unloaded_requests + 1
        payers = make_payers(run, scheme_kit("exact"), asset, run.signers, reads)
        price = 10**asset.decimals // 10  # the sample articles cost 0.1
        per_payer = -(-reads // len(payers.clients)) + 1
        funds = format_amount((per_payer * 2 + 10) * price, asset.decimals)
        server.call("fund", [s.address for s, _ in payers.clients], {"USDX": funds})
        first_reads(run, payers)  # warm-up: imports, caches, one read per agent
        loaded = paid_phase(
            run, f"paid exact (chain {chain})", payers, server.url, config.paid_requests,
            config.concurrency, author,
        )  # fmt: skip
        unloaded = paid_phase(
            run, f"unloaded paid exact (chain {chain})", payers, server.url,
            config.unloaded_requests, 1, author,
        )  # fmt: skip
    return {"chain": chain, "paid": loaded, "unloaded_paid": unloaded, "checks": run.checks}
