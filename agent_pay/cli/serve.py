"""`agent-pay serve` (the content server) and `agent-pay facilitator` (the facilitator service),
both against any node: their flags. What they run is in `agent_pay.cli.servers`, loaded when
one of them starts."""

from __future__ import annotations

import argparse
from pathlib import Path

from agent_pay.cli._common import add_chain_flags, port_arg, positive_int
from agent_pay.cli.receipts import add_fault_flags
from agent_pay.settings import Settings

__all__ = ["register"]


def serve(args: argparse.Namespace, settings: Settings) -> int:
    from agent_pay.cli import servers

    return servers.serve(args, settings)


def facilitator(args: argparse.Namespace, settings: Settings) -> int:
    from agent_pay.cli import servers

    return servers.facilitator(args, settings)


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "serve", help="run the content server against a node (HTTP 402 for paid articles)"
    )
    add_chain_flags(parser)
    parser.add_argument("--host", help="interface to listen on (127.0.0.1)")
    parser.add_argument("--port", type=port_arg, help="port (8402)")
    parser.add_argument("--articles", type=Path, help="directory of articles (the samples)")
    parser.add_argument(
        "--facilitator-url",
        metavar="URL",
        help="settle through this x402 facilitator instead of with our own key",
    )
    parser.add_argument(
        "--max-timeout-seconds",
        type=positive_int,
        help="how long a signed payment stays valid (120)",
    )
    parser.add_argument(
        "--server-dir",
        type=Path,
        help="ledger, receipt key, channels ($AGENT_PAY_HOME/server)",
    )
    parser.add_argument(
        "--store",
        metavar="URL",
        help="where payments are kept: postgresql://user@host/db, shared by every worker and "
        "instance (default: SQLite in --server-dir; AGENT_PAY_STORE)",
    )
    parser.add_argument(
        "--workers",
        type=positive_int,
        help="server processes on the one port (1; more need a PostgreSQL --store)",
    )
    # Set by --workers on the processes it starts.
    parser.add_argument("--as-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(
        "--schemes",
        metavar="SCHEME,...",
        help="what to offer: exact, channel (default: both if the chain has a channel "
        "contract, else exact; AGENT_PAY_SCHEMES)",
    )
    parser.add_argument(
        "--channel-manager",
        metavar="ADDRESS",
        help="the channel contract (default: the dev-chain address; AGENT_PAY_CHANNEL_MANAGER)",
    )
    add_fault_flags(parser)
    parser.set_defaults(run=serve)

    parser = commands.add_parser(
        "facilitator", help="run an x402 facilitator (verify and settle) against a node"
    )
    add_chain_flags(parser)
    parser.add_argument("--host", dest="facilitator_host", help="interface (127.0.0.1)")
    parser.add_argument("--port", dest="facilitator_port", type=port_arg, help="port (8403)")
    parser.set_defaults(run=facilitator)
