"""How the shared store scales: `python -m agent_pay.bench.shared_store`.

In one run, on one `agent-pay node` and one durable PostgreSQL started here, three servers —
`agent-pay serve` on SQLite (1 worker), on PostgreSQL with 1 worker, and with `--workers 2` —
take the same load in turn, for `--rounds` rounds (the median round counts):

- free previews (402 + the first third, no store read);
- paid re-reads: one payer's `AGENT-PAY-ENTITLEMENT` proof for an article it bought (a
  signature check and an entitlement lookup in the store on every read);
- channel reads (with `--schemes exact,channel`, the default): one payer per connection, its
  channel opened by one paid read, then its vouchers, signed before the clock starts and sent
  in order (`agent_pay.bench.voucher_lanes`).

The load comes from `wrk` where it is installed (`agent_pay.bench.wrk`: C, a fraction of our
own load generator's CPU per request), else from `agent_pay.bench.loadgen`. It prints requests
per second, the ratio to SQLite's, and CPU milliseconds per read of the server processes and of
PostgreSQL's, and the load generator's share of a core, as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from agent_pay.bench.loadgen import read_cpu_seconds, run_load
from agent_pay.bench.voucher_lanes import ChannelPayers, open_channels
from agent_pay.bench.wrk import run_wrk, run_wrk_lanes, wrk_available
from agent_pay.chain.contract import Transactor
from agent_pay.chain.devkeys import dev_signer
from agent_pay.chain.rpc import JsonRpcChain
from agent_pay.client.schemes import ExactClientScheme
from agent_pay.node.anvil import free_port, stop_process, wait_for_rpc
from agent_pay.node.deployment import find_stablecoins
from agent_pay.protocol import PaymentRequired
from agent_pay.protocol.codec import (
    PAYMENT_REQUIRED_HEADER,
    PAYMENT_SIGNATURE_HEADER,
    decode_header,
    encode_header,
)
from agent_pay.protocol.extensions import (
    ENTITLEMENT_EXTENSION,
    ENTITLEMENT_HEADER,
    EntitlementChallenge,
    EntitlementProof,
)
from agent_pay.signing import LocalSigner
from agent_pay.signing.receipt import sign_read_proof
from agent_pay.store.local_postgres import local_postgres

__all__ = ["main"]

SLUG = "why-micropayments-failed"
CONFIGS = ("sqlite_1_worker", "postgres_1_worker", "postgres_2_workers")


def _cli(args: Sequence[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(  # noqa: S603 - our own CLI
        [sys.executable, "-m", "agent_pay.cli", *args],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _wait_http(url: str, process: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited ({process.returncode})")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


def _tree(pid: int) -> list[int]:
    """`pid` and its descendants (Linux procfs)."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        try:
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except OSError:
            continue
        todo.extend(int(c) for c in children)
    return found


def _postgres_pids(url: str) -> list[int]:
    """The processes of the PostgreSQL server at `url` (started here: its port is on its
    command line), its backends included."""
    port = f"port={urlsplit(url).port}"
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if "postgres" in command and port in command:
                return _tree(int(entry.name))
    return []


def _cpu(pids: Sequence[int]) -> float:
    return sum(read_cpu_seconds(pid) or 0.0 for pid in pids)


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@contextmanager
def _server(
    name: str, extra: Sequence[str], node_url: str, env: dict[str, str], workdir: Path
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    port = free_port()
    args = ["serve", "--chain", node_url, "--port", str(port)]
    args += ["--server-dir", str(workdir / name), *extra]
    process = _cli(args, env, workdir / f"{name}.log")
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_http(f"{base}/articles", process)
        yield base, process
    finally:
        stop_process(process, timeout=30)


def _buy(base: str, signer: LocalSigner) -> None:
    """Buy `SLUG` at `base` as `signer`, by "exact"."""
    response = httpx.get(f"{base}/articles/{SLUG}")
    required = decode_header(response.headers[PAYMENT_REQUIRED_HEADER], PaymentRequired)
    offer = next(o for o in required.accepts if o.scheme == "exact")
    header = encode_header(ExactClientScheme(signer).sign(offer, required))
    paid = httpx.get(f"{base}/articles/{SLUG}", headers={PAYMENT_SIGNATURE_HEADER: header})
    if paid.status_code != 200:
        raise RuntimeError(f"the purchase failed: {paid.text}")


def _proof(base: str, signer: LocalSigner) -> dict[str, str]:
    """The re-read header that proves `signer` bought `SLUG`, on a fresh challenge: a challenge
    expires (minutes), so each round asks for its own."""
    again = httpx.get(f"{base}/articles/{SLUG}")
    extensions = decode_header(again.headers[PAYMENT_REQUIRED_HEADER], PaymentRequired).extensions
    assert extensions is not None
    challenge = EntitlementChallenge.from_wire(extensions[ENTITLEMENT_EXTENSION]["info"])
    resource_path = f"/articles/{SLUG}"
    nonce = bytes.fromhex(challenge.challenge[2:])
    signature = sign_read_proof(
        signer, resource_path, nonce, challenge.expires_at, challenge.signer
    )
    proof = EntitlementProof(
        payer=signer.address,
        resource=resource_path,
        challenge=challenge.challenge,
        expires_at=challenge.expires_at,
        signature="0x" + signature.hex(),
    )
    return {ENTITLEMENT_HEADER: encode_header(proof)}


def _measure(
    base: str,
    server: subprocess.Popen[bytes],
    load: dict[str, str] | list[list[dict[str, str]]],
    store: str,
    args: argparse.Namespace,
) -> dict[str, Any]:
    """One measurement: `load` is the headers of every request (wrk where chosen), or lanes of
    requests each sent in order (vouchers: our load generator, which keeps a lane's order)."""
    url = f"{base}/articles/{SLUG}"
    pids, pg = _tree(server.pid), _postgres_pids(store)
    before = (_cpu(pids), _cpu(pg), _children_cpu())
    exhausted = 0
    if isinstance(load, list) and args.loadgen == "wrk":
        wrk = run_wrk_lanes(url, load, seconds=args.seconds)
        exhausted = wrk.exhausted  # lanes that ran out of vouchers: raise --voucher-rate
        loadgen_cpu = wrk.cpu_seconds
        after = (_cpu(pids), _cpu(pg), _children_cpu())
        completed, rate, seconds = wrk.completed, wrk.rate, wrk.seconds
        statuses, latency = wrk.statuses, wrk.latency
    elif isinstance(load, list):
        result = run_load(url, load, args.concurrency, max_seconds=args.seconds)
        after = (_cpu(pids), _cpu(pg), _children_cpu())
        loadgen_cpu = after[2] - before[2]
        completed, rate, seconds = result.completed, result.rate, result.seconds
        statuses, latency = result.statuses, result.latency
    elif args.loadgen == "wrk":
        wrk = run_wrk(url, load, concurrency=args.concurrency, seconds=args.seconds)
        loadgen_cpu = wrk.cpu_seconds
        after = (_cpu(pids), _cpu(pg), _children_cpu())
        completed, rate, seconds = wrk.completed, wrk.rate, wrk.seconds
        statuses, latency = wrk.statuses, wrk.latency
    else:
        lanes = [[load]] * args.requests
        result = run_load(url, lanes, args.concurrency, max_seconds=args.seconds)
        after = (_cpu(pids), _cpu(pg), _children_cpu())
        loadgen_cpu = after[2] - before[2]
        completed, rate, seconds = result.completed, result.rate, result.seconds
        statuses, latency = result.statuses, result.latency
    reads = max(1, completed)
    return {
        "rate": round(rate, 1),
        "statuses": {str(k): v for k, v in statuses.items()},
        "p50_ms": round(latency.p50_ms, 2),
        "p99_ms": round(latency.p99_ms, 2),
        "server_cpu_ms_per_read": round(1000 * (after[0] - before[0]) / reads, 3),
        "postgres_cpu_ms_per_read": round(1000 * (after[1] - before[1]) / reads, 3),
        "loadgen_cpu_share": round(loadgen_cpu / max(seconds, 1e-9), 2),
        **({"lanes_exhausted": exhausted} if exhausted else {}),
    }


def _load(
    kind: str, proof: dict[str, str], opened: ChannelPayers | None, per_lane: int
) -> dict[str, str] | list[list[dict[str, str]]]:
    """What one measurement of `kind` sends."""
    if kind == "free_previews":
        return {}
    if kind == "paid_rereads":
        return proof
    assert opened is not None
    return opened.lanes(per_lane)  # signed before the clock starts


def _interrupted(_signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt


def _median(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median rate, and every round's rate beside it."""
    ordered = sorted(runs, key=lambda r: r["rate"])
    return {**ordered[len(ordered) // 2], "rates": [r["rate"] for r in runs]}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m agent_pay.bench.shared_store")
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=Path("bench-shared-store"))
    parser.add_argument(
        "--schemes",
        default="exact,channel",
        help="what the servers offer: exact,channel (also measures voucher reads) or exact",
    )
    parser.add_argument(
        "--configs",
        type=lambda text: [name for name in text.split(",") if name],
        default=list(CONFIGS),
        help=f"which servers to start and load, of {','.join(CONFIGS)}",
    )
    parser.add_argument(
        "--voucher-rate",
        type=int,
        default=16000,
        help="vouchers signed per second of a measurement (more than the servers can take)",
    )
    parser.add_argument(
        "--loadgen",
        choices=("auto", "wrk", "python"),
        default="auto",
        help="wrk (C, if installed: apt-get install wrk) or our Python one; auto: wrk if found",
    )
    args = parser.parse_args(argv)
    if unknown := set(args.configs) - set(CONFIGS):
        parser.error(f"--configs: unknown {', '.join(sorted(unknown))}")
    if args.loadgen == "auto":
        args.loadgen = "wrk" if wrk_available() else "python"
    signal.signal(signal.SIGTERM, _interrupted)  # stop what was started here, as on Ctrl-C
    args.workdir.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENT_PAY_")}
    env["AGENT_PAY_HOME"] = str(args.workdir / "home")
    env["AGENT_PAY_RECEIPT_KEY"] = "0x" + os.urandom(32).hex()  # shared by every instance
    figures: dict[str, Any] = {"loadavg_start": os.getloadavg(), "loadgen": args.loadgen}
    node_port = free_port()
    node_url = f"http://127.0.0.1:{node_port}"
    node = _cli(["node", "--port", str(node_port)], env, args.workdir / "node.log")
    try:
        wait_for_rpc(node_url, timeout=60, process=node)
        with (
            local_postgres(durable=True) as store,
            JsonRpcChain(node_url) as chain,
            ExitStack() as servers,
        ):
            usdx = find_stablecoins(chain)["USDX"]
            schemes = ["--schemes", args.schemes]
            every = {
                "sqlite_1_worker": schemes,
                "postgres_1_worker": [*schemes, "--store", store],
                "postgres_2_workers": [*schemes, "--store", store, "--workers", "2"],
            }
            configs = {name: every[name] for name in args.configs}
            channels = "channel" in args.schemes.split(",")
            # Each connection sends one payer's vouchers; enough for `--voucher-rate` a second.
            per_lane = max(20, -(-args.voucher_rate * int(args.seconds) // args.concurrency))
            minter = Transactor(chain, dev_signer(0))
            running = {}
            for name, extra in configs.items():
                signer = LocalSigner.random()
                payers = [LocalSigner.random() for _ in range(args.concurrency if channels else 0)]
                reads_each = per_lane * args.rounds + 2
                usdx.mint_many(
                    minter,
                    [(signer.address, 10**6)] + [(p.address, reads_each * 10**6) for p in payers],
                )
                base, server = servers.enter_context(
                    _server(name, extra, node_url, env, args.workdir)
                )
                path = f"/articles/{SLUG}"
                opened = (
                    open_channels(base, path, payers, usdx.asset, reads_each=reads_each)
                    if channels
                    else None
                )
                _buy(base, signer)
                running[name] = (base, server, signer, opened)
            kinds = ["free_previews", "paid_rereads"] + (["channel_reads"] if channels else [])
            rounds: dict[str, dict[str, list[dict[str, Any]]]] = {
                name: {kind: [] for kind in kinds} for name in configs
            }
            # Rounds in turn, each server idle while another is measured: the machine's other
            # load falls on every configuration alike.
            for _ in range(args.rounds):
                for name, (base, server, signer, opened) in running.items():
                    proof = _proof(base, signer)
                    for kind in kinds:
                        figure = _measure(
                            base, server, _load(kind, proof, opened, per_lane), store, args
                        )
                        rounds[name][kind].append(figure)
                        print(json.dumps({name: {kind: figure}}), file=sys.stderr)
            for name, by_kind in rounds.items():
                figures[name] = {kind: _median(runs) for kind, runs in by_kind.items()}
    finally:
        stop_process(node, timeout=10)
    for kind in figures.get("sqlite_1_worker", {}):
        sqlite = figures["sqlite_1_worker"][kind]["rate"] or 1.0
        figures[f"{kind}_ratio_to_sqlite"] = {
            name: round(figures[name][kind]["rate"] / sqlite, 2)
            for name in args.configs
            if name != "sqlite_1_worker"
        }
    figures["loadavg_end"] = os.getloadavg()
    print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
