"""`agent-pay simulate`: run a market, print what it found, write JSON, PNG plots and HTML.

The main `agent-pay` parser adds this command with `register(subparsers)`; `python -m
agent_pay.simulate` runs it on its own.
"""

from __future__ import annotations

import argparse
import gc
import json
import shlex
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from agent_pay.argtypes import non_negative_float, positive_float, positive_int

# The simulation's own modules (py-evm, the server, matplotlib) load when it runs.

__all__ = ["main", "register", "write_outputs"]

DESCRIPTION = """\
Simulate a market: agents with budgets and interests read a catalogue of authors' articles for
some days, paying per read. Runs the real protocol in this process (HTTP 402, EIP-712
signatures, verification, settlement transactions on the embedded py-evm chain) and reports each
author's revenue, the agents' spend, on-chain transactions and gas, cost per read and latency,
with PNG plots and a self-contained HTML report. Deterministic for a seed.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--agents", type=positive_int, default=1_000, help="agents (%(default)s)")
    # dest is not "articles": the agent-pay command maps flags named like its settings (where
    # `articles` is the catalogue directory) onto them.
    parser.add_argument(
        "--articles",
        dest="article_count",
        type=positive_int,
        default=1_000,
        help="articles (%(default)s)",
    )
    parser.add_argument("--authors", type=positive_int, help="authors (default: articles / 10)")
    parser.add_argument("--days", type=positive_int, default=10, help="days (%(default)s)")
    parser.add_argument("--seed", type=int, default=1, help="the market's seed (%(default)s)")
    parser.add_argument(
        "--reads-per-day",
        type=positive_float,
        default=10.0,
        help="mean visits per agent per day (%(default)s)",
    )
    parser.add_argument("--scheme", choices=["exact", "channel"], default="exact")
    parser.add_argument(
        "--batch",
        type=positive_int,
        default=128,
        help="reads run together and settled in one block (%(default)s)",
    )
    parser.add_argument(
        "--channel-deposit-reads",
        type=positive_int,
        default=10,
        help="channel scheme: deposit this many reads' worth (%(default)s)",
    )
    parser.add_argument(
        "--channel-after-reads",
        type=positive_int,
        default=3,
        help="channel scheme: open one once this many reads from an author are expected; "
        "until then pay exact (%(default)s)",
    )
    parser.add_argument(
        "--gas-price-gwei", type=non_negative_float, default=1.0, help="assumed (%(default)s)"
    )
    parser.add_argument(
        "--eth-usd", type=non_negative_float, default=3_000.0, help="assumed (%(default)s)"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("simulation"),
        help="directory for report.json, report.html and the PNG plots (%(default)s)",
    )
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the JSON here")
    parser.add_argument("--no-plots", action="store_true", help="skip PNG plots and HTML")
    parser.add_argument("--no-progress", action="store_true", help="no progress on stderr")


def write_outputs(
    report: dict[str, Any], out: Path, *, plots: bool = True, command: str | None = None
) -> list[Path]:
    """Write report.json (and, with `plots`, the PNGs and report.html) into `out`."""
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "report.json"]
    written[0].write_text(json.dumps(_public(report), indent=2) + "\n", encoding="utf-8")
    if plots:
        from agent_pay.report.html import simulation_html
        from agent_pay.report.plots import simulation_plots

        try:
            images = simulation_plots(report)
        except ImportError:
            print(
                "agent-pay simulate: matplotlib is not installed, so no PNG plots "
                "(pip install matplotlib); the HTML report has the tables only",
                file=sys.stderr,
            )
            images = {}
        for name, data in images.items():
            path = out / f"{name}.png"
            path.write_bytes(data)
            written.append(path)
        page = out / "report.html"
        page.write_text(simulation_html(report, images, command=command), encoding="utf-8")
        written.append(page)
    return written


def _public(value: Any) -> Any:
    """The report without its raw samples (keys starting with "_"), for JSON."""
    if isinstance(value, dict):
        return {k: _public(v) for k, v in value.items() if not str(k).startswith("_")}
    if isinstance(value, list):
        return [_public(v) for v in value]
    return value


def _command(args: argparse.Namespace) -> str:
    """The command line that reproduces this run's figures."""
    words = [
        "agent-pay", "simulate", "--agents", str(args.agents),
        "--articles", str(args.article_count), "--days", str(args.days), "--seed", str(args.seed),
        "--reads-per-day", f"{args.reads_per_day:g}", "--scheme", args.scheme,
        "--batch", str(args.batch), "--gas-price-gwei", f"{args.gas_price_gwei:g}",
        "--eth-usd", f"{args.eth_usd:g}",
    ]  # fmt: skip
    if args.authors is not None:
        words[4:4] = ["--authors", str(args.authors)]
    if args.scheme == "channel":
        words += ["--channel-deposit-reads", str(args.channel_deposit_reads)]
        words += ["--channel-after-reads", str(args.channel_after_reads)]
    return " ".join(shlex.quote(w) for w in words)


@contextmanager
def _collecting_less() -> Iterator[None]:
    """A simulation allocates millions of short-lived objects (requests, EVM frames, trie
    nodes) over a heap that only grows (the chain, the ledger of visits); CPython's default
    thresholds then re-scan that heap over and over. Larger thresholds take about a tenth off a
    run's CPU (BENCHMARKS.md); what was loaded before the run is frozen out of collection."""
    before = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)
    try:
        yield
    finally:
        gc.set_threshold(*before)
        gc.unfreeze()


def _cannot_write(out: Path, json_file: Path | None) -> str | None:
    """Why the outputs could not be written, found before a run of minutes rather than after."""
    import os
    import tempfile

    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as exc:
        return f"--out: cannot write to {out}: {exc.strerror or exc}"
    if json_file is not None:
        parent = json_file.parent
        if json_file.is_dir() or not parent.is_dir() or not os.access(parent, os.W_OK):
            return f"--json: cannot write {json_file}"
    return None


def run(args: argparse.Namespace) -> int:
    from agent_pay.bench.progress import Progress
    from agent_pay.bench.schemes import SchemeUnavailableError, unavailable_reason
    from agent_pay.simulate.engine import SimulationConfig, simulate
    from agent_pay.simulate.market import MarketSpec
    from agent_pay.simulate.results import CostAssumptions, summarize
    from agent_pay.simulate.text import render_simulation

    problem = _cannot_write(args.out, args.json)
    if problem is not None:
        print(f"agent-pay simulate: {problem}", file=sys.stderr)
        return 2
    reason = unavailable_reason(args.scheme)
    if reason is not None:
        print(f"agent-pay simulate: {reason}", file=sys.stderr)
        return 2
    try:
        spec = MarketSpec(
            agents=args.agents,
            articles=args.article_count,
            days=args.days,
            seed=args.seed,
            reads_per_day=args.reads_per_day,
            authors=args.authors,
        )
        config = SimulationConfig(
            scheme=args.scheme,
            batch=args.batch,
            channel_deposit_reads=args.channel_deposit_reads,
            channel_after_reads=args.channel_after_reads,
        )
    except ValueError as exc:
        print(f"agent-pay simulate: {exc}", file=sys.stderr)
        return 2
    progress = Progress(enabled=not args.no_progress, label="simulate")

    def say(text: str, lasting: bool) -> None:
        (progress.step if lasting else progress.update)(text)

    with _collecting_less():
        try:
            result = simulate(spec, config, progress=say)
        except SchemeUnavailableError as exc:
            print(f"agent-pay simulate: {exc}", file=sys.stderr)
            return 2
        progress.step("reading the results back from the chain")
        report = summarize(result, CostAssumptions(args.gas_price_gwei, args.eth_usd))
    command = _command(args)
    written = write_outputs(report, args.out, plots=not args.no_plots, command=command)
    if args.json is not None:
        args.json.write_text(json.dumps(_public(report), indent=2) + "\n", encoding="utf-8")
        written.append(args.json)
    print(render_simulation(report))
    print("\nwritten: " + ", ".join(str(p) for p in written))
    return 0 if all(report["deterministic"]["checks"].values()) else 1


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add `simulate` to the `agent-pay` command's subparsers."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "simulate",
        help="run a market of agents and authors through the protocol; plots and HTML report",
        description=DESCRIPTION,
    )
    add_arguments(parser)
    parser.set_defaults(run=run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="agent-pay simulate", description=DESCRIPTION)
    add_arguments(parser)
    return run(parser.parse_args(argv))
