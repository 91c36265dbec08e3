"""The `agent-pay` command: a thin shell over the library.

    agent-pay demo                       everything in one process, told as a story
    agent-pay node                       a local chain over JSON-RPC, kept in a data directory
    agent-pay deploy | fund              the contracts on any node; mint on a local one
    agent-pay serve | facilitator        the content server, the facilitator service
    agent-pay read URL                   pay for and print an article
    agent-pay mcp [--http]               the same, as tools for a model in an MCP host
    agent-pay wallet new|address|balance an encrypted keystore and what it holds
    agent-pay receipts | verify-receipt  what an agent bought; check a receipt offline
    agent-pay channels list|close|withdraw  an agent's payment channels
    agent-pay bench | simulate           measure this machine; run a market of agents

Each command lives in its own module with a `register(subparsers)` function; adding a command
is adding one to `COMMANDS`. Settings are read once here (flags > environment `AGENT_PAY_*` >
config file > defaults) and handed to the command.

Exit codes: 0 done; 2 a payment was refused (over the spending policy, no acceptable offer, or
the server refused it); 1 anything else (bad settings, node unreachable, ...), with a one-line
message and no traceback for expected failures.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from agent_pay.chain.base import ChainError
from agent_pay.channel_cli import register as channels_register
from agent_pay.cli import chain as chain_commands
from agent_pay.cli import demo, mcp_command, node, read, serve, tools, wallet
from agent_pay.errors import AgentPayError
from agent_pay.node.datadir import DataDirError
from agent_pay.receipts_cli import register as receipts_register
from agent_pay.settings import Settings, load_settings

__all__ = ["COMMANDS", "EXIT_ERROR", "EXIT_OK", "EXIT_REFUSED", "build_parser", "main"]

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_REFUSED = 2

COMMANDS: list[Callable[[argparse._SubParsersAction[argparse.ArgumentParser]], None]] = [
    demo.register,
    node.register,
    chain_commands.register,
    serve.register,
    read.register,
    mcp_command.register,
    wallet.register,
    receipts_register,
    channels_register,
    tools.register,
]
"""Each adds its subcommand(s); a subcommand sets `run` (see `_common.Command`)."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="agent-pay", description="Pay-per-read for AI agents over HTTP 402 (x402 v2)."
    )
    parser.add_argument(
        "--config", type=Path, metavar="FILE", help="TOML settings (default ./agent-pay.toml)"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for register in COMMANDS:
        register(commands)
    return parser


def _flags(args: argparse.Namespace) -> dict[str, object]:
    return {name: getattr(args, name) for name in Settings.model_fields if hasattr(args, name)}


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help (0), or a usage error: 1, as 2 means "refused" here
        return EXIT_ERROR if exc.code == 2 else int(exc.code or 0)
    try:
        settings = load_settings(_flags(args), environ=os.environ, config_file=args.config)
        return int(args.run(args, settings))
    except BrokenPipeError:  # `agent-pay read URL | head`: the reader stopped listening
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_ERROR
    except (AgentPayError, ChainError, DataDirError, OSError) as exc:
        message = exc.message if isinstance(exc, AgentPayError) else str(exc)
        print(f"agent-pay {args.command}: {message}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
