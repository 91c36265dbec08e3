"""`agent-pay mcp`: let a model read and pay, through an MCP host, within the user's policy.

Over stdio by default (what desktop hosts launch), or over streamable HTTP with `--http`
(`http://127.0.0.1:8404/mcp`). The key and the policy are `read`'s (`--keystore` or
AGENT_PAY_PRIVATE_KEY, `--max-price`, `--budget`, `--token`, `--chain`), and so are the stores:
what was spent and bought is kept in `receipts_dir`, so the budget survives a restart and is
shared with `read`. Nothing a tool is told can change the policy.

On stdio, stdout belongs to the protocol: every message of ours goes to stderr.
"""

from __future__ import annotations

import argparse
import logging
import sys

import anyio

from agent_pay.assets import AssetRegistry
from agent_pay.cli._common import add_chain_flags, connect, say
from agent_pay.cli.read import payer, require_limits
from agent_pay.errors import ConfigurationError
from agent_pay.settings import Settings

__all__ = ["register"]

DEFAULT_PORT = 8404


def run(args: argparse.Namespace, settings: Settings) -> int:
    require_limits(settings)
    try:
        from agent_pay.mcp.agent import PayingAgent
        from agent_pay.mcp.server import build_server
    except ImportError as missing:  # the `mcp` extra
        raise ConfigurationError(
            f"agent-pay mcp needs the MCP SDK ({missing.name}): pip install 'agent-pay[mcp]'"
        ) from None
    with connect(settings) as chain:
        who = payer(settings, chain, args.token)
    assets = AssetRegistry(token.asset for token in who.tokens.values())
    agent = PayingAgent(who.signer, who.spending, who.receipts, assets, timeout=args.timeout)
    server = build_server(agent)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise

    async def serve() -> None:
        try:
            if args.http:
                say(
                    f"agent-pay mcp: paying as {who.signer.address}, MCP on "
                    f"http://{args.mcp_host}:{args.mcp_port}/mcp",
                    sys.stderr,
                )
                await server.run_streamable_http_async(host=args.mcp_host, port=args.mcp_port)
            else:
                await server.run_stdio_async()
        finally:
            await agent.aclose()

    anyio.run(serve)
    return 0


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "mcp", help="an MCP server (stdio, or --http) that reads and pays within a policy"
    )
    parser.add_argument(
        "--max-price", help="most to pay for one article, in token units (AGENT_PAY_MAX_PRICE)"
    )
    parser.add_argument(
        "--budget", help="most to pay in all, per token, across runs (AGENT_PAY_BUDGET)"
    )
    parser.add_argument(
        "--token",
        action="append",
        metavar="SYMBOL",
        help="pay only in this token (repeatable; default: any known one)",
    )
    parser.add_argument("--keystore", help="the wallet to pay from (.agent-pay/wallet.json)")
    parser.add_argument(
        "--receipts-dir",
        help="what was bought and spent, kept across runs (.agent-pay/receipts)",
    )
    parser.add_argument(
        "--http", action="store_true", help="serve streamable HTTP instead of stdio"
    )
    parser.add_argument(
        "--host", dest="mcp_host", default="127.0.0.1", help="--http address (127.0.0.1)"
    )
    parser.add_argument(
        "--port",
        dest="mcp_port",
        type=int,
        default=DEFAULT_PORT,
        help=f"--http port ({DEFAULT_PORT})",
    )
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per request (60)")
    add_chain_flags(parser)
    parser.set_defaults(run=run)
