"""`agent-pay demo`: the whole story in one process."""

from __future__ import annotations

import argparse

from agent_pay.settings import Settings

__all__ = ["register"]


def run(args: argparse.Namespace, settings: Settings) -> int:
    from agent_pay.demo import run_demo

    run_demo(max_reads=args.max_reads)
    return 0


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "demo", help="run chain, server and agents on 127.0.0.1 and tell the story"
    )
    parser.add_argument("--max-reads", type=int, default=3, help="articles each agent may buy")
    parser.set_defaults(run=run)
