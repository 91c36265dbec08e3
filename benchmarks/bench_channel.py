"""Channel-paid reads against free previews, on one server (uvicorn, one worker), in one run.

The server (embedded chain, in-process facilitator, "exact" and "channel" offered) runs in this
process on uvicorn in a thread; the load comes from the load generator's own process. Each agent
opens its channel with one real paid read first (a deposit transaction); then every paid read
carries one voucher (signed before the timed phase: signing is the agent's cost) and no
transaction. Phases: free previews under load, channel-paid reads under load (one lane per
channel, vouchers in order), then each unloaded (one connection) for p50/p99.

    .venv/bin/python benchmarks/bench_channel.py [--agents 16] [--reads 1000]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import time

from agent_pay.assembly.channels import ChannelOptions
from agent_pay.bench.loadgen import LoadResult, run_load
from agent_pay.client.channels import ChannelPolicy
from agent_pay.protocol import PaymentPayload, PaymentRequired
from agent_pay.protocol.codec import PAYMENT_SIGNATURE_HEADER, decode_header, encode_header
from agent_pay.serving import serve_app
from agent_pay.signing.voucher import Voucher, sign_voucher, voucher_domain
from agent_pay.testing import Testbed

SLUG = "why-micropayments-failed"


def _cpu() -> float:
    """CPU seconds this process (the server and its threads) has used."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _load(
    url: str, lanes: list[list[dict[str, str]]], concurrency: int
) -> tuple[LoadResult, float]:
    before = _cpu()
    result = run_load(url, lanes, concurrency)
    cpu = _cpu() - before
    return result, cpu / max(1, result.completed) * 1e6


def _summary(result: LoadResult, cpu_us: float) -> dict[str, object]:
    latency = result.latency
    return {
        "rate": round(result.rate, 1),
        "server_cpu_us_per_read": round(cpu_us, 1),
        "completed": result.completed,
        "statuses": result.statuses,
        "errors": result.errors,
        "p50_ms": round(latency.p50_ms, 3),
        "p99_ms": round(latency.p99_ms, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=16, help="channels (one per agent)")
    parser.add_argument("--reads", type=int, default=1000, help="paid reads per channel")
    parser.add_argument("--free", type=int, default=20_000, help="free previews")
    parser.add_argument("--unloaded", type=int, default=500, help="reads for p50/p99, unloaded")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument(
        "--rounds", type=int, default=4, help="alternate free and paid phases this many times"
    )
    args = parser.parse_args()

    started = time.perf_counter()
    bed = Testbed.create(
        schemes=("exact", "channel"),
        channel_options=ChannelOptions(settle_every_seconds=3600, settle_every_vouchers=10**9),
    )
    assert bed.channels is not None
    reads = args.reads + args.unloaded // args.agents + 1
    deposit = f"{0.1 * (reads + 2):.1f}"
    agents = bed.agents(
        args.agents,
        funds={"USDX": str(float(deposit) + 1)},
        tokens=["USDX"],
        budget="1000000",
        channel_policy=ChannelPolicy(min_expected_reads=1, deposit_reads=reads + 2),
    )
    path = f"/articles/{SLUG}"
    offer = None
    with bed.client() as anonymous:
        challenge = decode_header(anonymous.get(path).headers["PAYMENT-REQUIRED"], PaymentRequired)
    offer = next(o for o in challenge.accepts if o.scheme == "channel" and o.extra["name"])
    for agent in agents:  # the opening read: one deposit transaction each
        with bed.client(agent) as http:
            assert http.get(path).json()["complete"]
    domain = voucher_domain(bed.chain.chain_id, bed.channels.manager.address)
    lanes: list[list[dict[str, str]]] = []
    for agent in agents:
        assert agent.channels is not None
        record = agent.channels.channels()[0]
        channel = bytes.fromhex(record.channel_id[2:])
        lane = []
        for i in range(1, reads):
            cumulative = offer.amount * (i + 1)
            signature = sign_voucher(agent.signer, domain, Voucher(channel, cumulative))
            payment = PaymentPayload(
                x402_version=2,
                resource=challenge.resource,
                accepted=offer,
                payload={
                    "channelId": record.channel_id,
                    "cumulativeAmount": str(cumulative),
                    "signature": "0x" + signature.hex(),
                },
            )
            lane.append({PAYMENT_SIGNATURE_HEADER: encode_header(payment)})
        lanes.append(lane)
    print(f"setup {time.perf_counter() - started:.1f} s", flush=True)
    block_before = bed.chain.block_number()
    report: dict[str, object] = {}
    with serve_app(bed.app) as base:
        url = base + path
        run_load(url, [[{}]] * 2000, args.concurrency)  # warm-up
        # Free and paid phases alternate, so that a neighbour's load on the machine hits both
        # alike; the ratio reported is the median of the rounds'.
        rounds: list[tuple[tuple[LoadResult, float], tuple[LoadResult, float]]] = []
        step = args.reads // args.rounds
        for r in range(args.rounds):
            free_r = _load(url, [[{}]] * (args.free // args.rounds), args.concurrency)
            loaded = [lane[r * step : (r + 1) * step] for lane in lanes]
            paid_r = _load(url, loaded, min(args.concurrency, len(loaded)))
            rounds.append((free_r, paid_r))
        rest = [h for lane in lanes for h in lane[args.rounds * step :]]
        free_1 = _load(url, [[{}]] * args.unloaded, 1)
        paid_1 = _load(url, [rest[: args.unloaded]], 1)
    report["rounds"] = [
        {
            "free": _summary(*f),
            "paid_channel": _summary(*p),
            "ratio": round(p[0].rate / f[0].rate, 3),
        }
        for f, p in rounds
    ]
    report["free_unloaded"] = _summary(*free_1)
    report["paid_channel_unloaded"] = _summary(*paid_1)
    ratios = sorted(p[0].rate / f[0].rate for f, p in rounds)
    report["paid_over_free_median"] = round(statistics.median(ratios), 3)
    report["paid_over_free_cpu_median"] = round(
        statistics.median(f[1] / p[1] for f, p in rounds), 3
    )
    report["blocks_during_paid_reads"] = bed.chain.block_number() - block_before
    statements = [
        bed.channels.statement(bytes.fromhex(a.channels.channels()[0].channel_id[2:]))
        for a in agents
        if a.channels is not None
    ]
    report["served_reads"] = sum(int(s["served"]) for s in statements if s) // offer.amount
    settle = bed.channels.settler.settle()
    report["claim"] = {"transactions": len(settle.transactions), "gas": settle.gas_used}
    bed.close()
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
