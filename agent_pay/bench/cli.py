"""`agent-pay bench`: the command line over `run_bench`.

The main `agent-pay` parser adds this command with `register(subparsers)`; `python -m
agent_pay.bench` runs it on its own.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agent_pay.argtypes import positive_float, positive_int
from agent_pay.bench.config import DEFAULT_SLUG, BenchConfig

# The benchmark's own modules (py-evm, the server, the load generator) load when it runs.

__all__ = ["main", "register"]

DESCRIPTION = """\
Measure, in one run on this machine: free-preview reads/s, paid reads/s per scheme, p50/p99
latency (under load and unloaded), gas per paid read, settlement transactions/s on the embedded
chain, server memory, and the stock x402 server and facilitator on the same chain. The server
runs in its own process (one uvicorn worker); the load comes from another process on 127.0.0.1.
"""


def _seconds(text: str) -> float:
    return positive_float(text, "seconds")


def _check_slug(slug: str) -> str | None:
    """Why `slug` cannot be benchmarked (the benchmark serves the sample articles), or None."""
    from agent_pay.stack import sample_articles_dir

    articles = sorted(p.stem for p in sample_articles_dir().glob("*.md"))
    if slug in articles:
        return None
    return f"--slug: no article {slug!r}; the samples are {', '.join(articles)}"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--scheme",
        choices=["exact", "channel", "both"],
        default="both",
        help="payment scheme(s) to measure; 'both' runs what is available (default)",
    )
    parser.add_argument(
        "--chain",
        choices=["both", "process", "embedded"],
        default="both",
        help="the server's embedded chain in a process of its own, or in the server's; 'both' "
        "(default): in its own, then the paid exact phases again on a second server with it "
        "in the server's",
    )
    parser.add_argument("--quick", action="store_true", help="small counts: about 20 s")
    parser.add_argument("--json", type=Path, metavar="FILE", help="write every figure to FILE")
    parser.add_argument("--free-requests", type=positive_int, help="free-preview reads under load")
    parser.add_argument(
        "--paid-requests", type=positive_int, help="paid reads under load, per scheme"
    )
    parser.add_argument("--unloaded-requests", type=positive_int, help="reads on one connection")
    parser.add_argument("--concurrency", type=positive_int, help="connections under load (16)")
    parser.add_argument("--agents", type=positive_int, help="distinct paying agents (100)")
    parser.add_argument("--phase-seconds", type=_seconds, help="time cap per phase (60)")
    parser.add_argument("--mining-batch", type=positive_int, help="settlements mined in one block")
    parser.add_argument("--stock-requests", type=positive_int, help="paid reads on stock x402")
    parser.add_argument("--no-stock", action="store_true", help="skip the stock x402 comparison")
    parser.add_argument("--slug", default=DEFAULT_SLUG, help="article to read (%(default)s)")
    parser.add_argument("--no-progress", action="store_true", help="no progress on stderr")


def config_from_args(args: argparse.Namespace) -> BenchConfig:
    from agent_pay.bench.schemes import SchemeUnavailableError, expand_schemes, unavailable_reason

    schemes = expand_schemes(args.scheme)
    if args.scheme != "both":
        reason = unavailable_reason(schemes[0])
        if reason is not None:
            raise SchemeUnavailableError(reason)
    overrides: dict[str, Any] = {"schemes": tuple(schemes), "slug": args.slug}
    overrides["chain"] = args.chain
    for name in (
        "free_requests",
        "paid_requests",
        "unloaded_requests",
        "concurrency",
        "agents",
        "phase_seconds",
        "mining_batch",
        "stock_requests",
    ):
        value = getattr(args, name)
        if value is not None:
            overrides[name] = value
    if args.no_stock:
        overrides["stock"] = False
    if args.quick:
        return BenchConfig.quick_run(**overrides)
    return BenchConfig(**overrides)


def run(args: argparse.Namespace) -> int:
    from agent_pay.bench.progress import Progress
    from agent_pay.bench.run import run_bench
    from agent_pay.bench.schemes import SchemeUnavailableError
    from agent_pay.bench.text import render_bench

    problem = _check_slug(args.slug)
    if problem is None and args.json is not None and not _writable(args.json):
        problem = f"--json: cannot write {args.json}"
    if problem is not None:
        print(f"agent-pay bench: {problem}", file=sys.stderr)
        return 2
    try:
        config = config_from_args(args)
    except SchemeUnavailableError as exc:
        print(f"agent-pay bench: {exc}", file=sys.stderr)
        return 2
    report = run_bench(config, Progress(enabled=not args.no_progress, label="bench"))
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(render_bench(report))
    if args.json is not None:
        print(f"\nall figures written to {args.json}")
    return 0 if all(report["checks"].values()) else 1


def _writable(path: Path) -> bool:
    """Whether `path` can be written, checked before a run of minutes rather than after."""
    import os

    parent = path.parent if str(path.parent) else Path()
    if path.is_dir():
        return False
    return parent.is_dir() and os.access(parent, os.W_OK)


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add `bench` to the `agent-pay` command's subparsers."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "bench",
        help="measure free and paid reads/s, latency, gas and memory on this machine",
        description=DESCRIPTION,
    )
    add_arguments(parser)
    parser.set_defaults(run=run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="agent-pay bench", description=DESCRIPTION)
    add_arguments(parser)
    return run(parser.parse_args(argv))
