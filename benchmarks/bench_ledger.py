"""What the payment ledger costs a paid read: sequential paid reads through the real app on the
embedded chain, with the ledger in memory, in a file (synchronous=NORMAL) and in a file
(synchronous=FULL, the default), and the ledger's own share of each read from Server-Timing.

    .venv/bin/python benchmarks/bench_ledger.py [--reads 300]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import agent_pay.server.app as app_module
from agent_pay.server.ledger import Ledger
from agent_pay.testing import Testbed

SLUGS = [
    "why-micropayments-failed",
    "reading-a-vyper-contract",
    "http-status-codes-nobody-uses",
    "pricing-content-for-machine-readers",
    "eip-3009-gasless-transfers",
]


def run(kind: str, reads: int) -> dict[str, float]:
    directory = Path(tempfile.mkdtemp())
    if kind == "memory":
        ledger = Ledger.in_memory()
    else:
        ledger = Ledger.open(directory, synchronous="full" if kind == "file-full" else "normal")
    bed = Testbed.create(ledger=ledger)
    agents = bed.agents(reads // len(SLUGS) + 1, funds={"USDX": "5"}, tokens=["USDX"])
    totals: list[float] = []
    ledger_ms: list[float] = []
    jobs = [(agent, slug) for agent in agents for slug in SLUGS][:reads]
    with bed.client() as client:
        client.get(f"/articles/{SLUGS[0]}")  # reconciliation, first-request costs
        for agent, slug in jobs:
            start = time.perf_counter()
            response = client.get(f"/articles/{slug}", auth=agent.auth)
            totals.append((time.perf_counter() - start) * 1000)
            assert response.status_code == 200, response.text
            for part in response.headers["server-timing"].split(","):
                name, _, duration = part.strip().partition(";dur=")
                if name == "ledger":
                    ledger_ms.append(float(duration))
    ledger.close()
    return {
        "read_ms_median": statistics.median(totals),
        "read_ms_mean": statistics.fmean(totals),
        "ledger_ms_median": statistics.median(ledger_ms),
        "ledger_ms_mean": statistics.fmean(ledger_ms),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reads", type=int, default=300)
    args = parser.parse_args()
    # Show the ledger's share in Server-Timing (the server leaves it out by default).
    app_module._STEPS = (*app_module._STEPS, "ledger")
    for kind in ("memory", "file-normal", "file-full"):
        result = run(kind, args.reads)
        print(
            f"{kind:12} paid read {result['read_ms_median']:.2f} ms median "
            f"({result['read_ms_mean']:.2f} mean); ledger writes "
            f"{result['ledger_ms_median']:.2f} ms median ({result['ledger_ms_mean']:.2f} mean)"
        )


if __name__ == "__main__":
    main()
