"""The `agent-pay` command: a thin shell over the library."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

__all__ = ["main"]


def _demo(args: argparse.Namespace) -> int:
    from agent_pay.demo import run_demo

    run_demo(max_reads=args.max_reads)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="agent-pay", description="Pay-per-read for AI agents over HTTP 402 (x402 v2)."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo = commands.add_parser(
        "demo", help="run chain, server and agents on 127.0.0.1 and tell the story"
    )
    demo.add_argument("--max-reads", type=int, default=3, help="articles each agent may buy")
    demo.set_defaults(run=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.run(args))


if __name__ == "__main__":
    sys.exit(main())
