"""`agent-pay demo`: the whole story in one process."""

from __future__ import annotations

import argparse

from agent_pay.cli._common import non_negative_int
from agent_pay.errors import ConfigurationError
from agent_pay.settings import Settings

__all__ = ["register"]


def run(args: argparse.Namespace, settings: Settings) -> int:
    if args.mcp:
        try:
            from agent_pay.mcp.demo import run_mcp_demo
        except ImportError as missing:  # the `mcp` extra
            raise ConfigurationError(
                f"demo --mcp needs the MCP SDK ({missing.name}): pip install 'agent-pay[mcp]'"
            ) from None
        run_mcp_demo()
        return 0
    from agent_pay.demo import run_demo

    run_demo(max_reads=args.max_reads, verbose=args.verbose)
    return 0


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "demo", help="run chain, server and agents on 127.0.0.1 and tell the story"
    )
    parser.add_argument(
        "--max-reads",
        type=non_negative_int,
        default=3,
        help="articles each agent may buy (3)",
    )
    parser.add_argument(
        "--verbose",
        "-v",
        action="store_true",
        help="also show the x402 headers (PAYMENT-REQUIRED, -SIGNATURE, -RESPONSE), decoded",
    )
    parser.add_argument(
        "--mcp",
        action="store_true",
        help="a scripted model drives `agent-pay mcp` over stdio with the official MCP client",
    )
    parser.set_defaults(run=run)
