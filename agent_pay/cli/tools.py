"""`agent-pay bench` and `agent-pay simulate`: measurement tools, registered from their packages.

Both take everything from their own flags; the shared settings are not theirs to read.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from agent_pay.bench import cli as bench_cli
from agent_pay.settings import Settings
from agent_pay.simulate import cli as simulate_cli

__all__ = ["register"]


def _ignoring_settings(
    run: Callable[[argparse.Namespace], int],
) -> Callable[[argparse.Namespace, Settings], int]:
    def command(args: argparse.Namespace, _settings: Settings) -> int:
        return run(args)

    return command


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    bench_cli.register(commands).set_defaults(run=_ignoring_settings(bench_cli.run))
    simulate_cli.register(commands).set_defaults(run=_ignoring_settings(simulate_cli.run))
