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
is adding one to `COMMANDS`. Registering imports nothing heavy: py-evm, web3, FastAPI, uvicorn
and matplotlib are imported inside the command that needs them, so `--help`, a usage error or
`wallet address` answer at once. Settings are read once here (flags > environment
`AGENT_PAY_*` > config file > defaults) and handed to the command; state lives under one
per-user home (`AGENT_PAY_HOME`, see `agent_pay.settings`).

Exit codes: 0 done; 1 it failed (node unreachable, wrong password, ...); 2 a usage error (a bad
flag or setting) or a payment refused (over the spending policy, no acceptable offer, or the
server refused it); 130 interrupted (Ctrl-C). Every expected failure is one line on stderr,
never a traceback.
"""

from __future__ import annotations

import os
import signal
import sys


def _interrupted_while_starting(_signum: int, _frame: object) -> None:
    # Ctrl-C while Python is still importing: no traceback from some module's top level.
    sys.stderr.write("\nagent-pay: interrupted\n")
    sys.stderr.flush()
    os._exit(130)


if signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # not when embedded
    signal.signal(signal.SIGINT, _interrupted_while_starting)  # until main() takes over

# The imports below come after the handler on purpose (E402 is off for this file).
import argparse
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn, cast

if TYPE_CHECKING:
    from _typeshed import SupportsWrite

from agent_pay.cli import chain as chain_commands
from agent_pay.cli import demo, mcp_command, node, read, serve, tools, wallet
from agent_pay.cli.channels import register as channels_register
from agent_pay.cli.receipts import register as receipts_register

__all__ = [
    "COMMANDS",
    "EXIT_ERROR",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_REFUSED",
    "EXIT_USAGE",
    "build_parser",
    "main",
]

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_REFUSED = 2
EXIT_INTERRUPTED = 130

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


class Parser(argparse.ArgumentParser):
    """argparse, with a usage error as one line (`agent-pay read: --timeout: ...`), exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: {message} (see {self.prog} --help)\n")

    def print_help(self, file: SupportsWrite[str] | None = None) -> None:
        try:
            super().print_help(file)
            sys.stdout.flush()
        except BrokenPipeError:  # `agent-pay --help | head`
            _quiet_stdout()


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="agent-pay",
        description="Pay-per-read for AI agents over HTTP 402 (x402 v2).",
        epilog="State (wallet, receipts, channels, the node's chain, the server's ledger) is "
        "kept in $AGENT_PAY_HOME, by default the per-user data directory "
        "(~/.local/share/agent-pay on Linux).",
    )
    parser.add_argument(
        "--config", type=Path, metavar="FILE", help="TOML settings (default ./agent-pay.toml)"
    )
    commands = cast(
        "argparse._SubParsersAction[argparse.ArgumentParser]",
        parser.add_subparsers(dest="command", required=True, metavar="COMMAND"),
    )
    for register in COMMANDS:
        register(commands)
    return parser


def _flags(args: argparse.Namespace, names: Sequence[str]) -> dict[str, object]:
    return {name: getattr(args, name) for name in names if hasattr(args, name)}


def _quiet_stdout() -> None:
    """The reader of our stdout went away (`| head`): send what is left nowhere, quietly."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


def _expected(exc: BaseException) -> str | None:
    """The one-line message for a failure the user can act on; None for a bug."""
    from agent_pay.errors import AgentPayError

    if isinstance(exc, AgentPayError):
        return exc.message
    # Only modules already imported can have raised their errors: look them up, never import.
    for module, name in (
        ("agent_pay.chain.base", "ChainError"),
        ("agent_pay.node.datadir", "DataDirError"),
        ("agent_pay.bench.schemes", "SchemeUnavailableError"),
    ):
        kind = getattr(sys.modules.get(module), name, None)
        if kind is not None and isinstance(exc, kind):
            return str(exc)
    if isinstance(exc, OSError):
        return str(exc)
    return None


def _is_usage_error(exc: BaseException) -> bool:
    from agent_pay.cli._common import UsageError

    return isinstance(exc, UsageError)


def main(argv: Sequence[str] | None = None) -> int:
    command = "agent-pay"
    if signal.getsignal(signal.SIGINT) is _interrupted_while_starting:
        signal.signal(signal.SIGINT, signal.default_int_handler)  # KeyboardInterrupt from here on
    try:
        try:
            args = build_parser().parse_args(argv)
        except SystemExit as exc:  # --help (0), or a usage error (2), already printed
            return int(exc.code or 0) if not isinstance(exc.code, str) else EXIT_USAGE
        command = f"agent-pay {args.command}"
        from agent_pay.errors import ConfigurationError
        from agent_pay.settings import Settings, load_settings

        try:
            settings = load_settings(
                _flags(args, list(Settings.model_fields)),
                environ=os.environ,
                config_file=args.config,
            )
        except ConfigurationError as exc:  # a bad setting is a usage error
            print(f"{command}: {exc.message}", file=sys.stderr)
            return EXIT_USAGE
        return int(args.run(args, settings))
    except KeyboardInterrupt:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C while we stop: no trace
        print(f"\n{command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `agent-pay read URL | head`: the reader has what it wanted
        _quiet_stdout()
        return EXIT_OK
    except Exception as exc:
        message = _expected(exc)
        if message is None:
            raise
        print(f"{command}: {message}", file=sys.stderr)
        return EXIT_USAGE if _is_usage_error(exc) else EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
