"""`agent-pay node`: the embedded chain as a JSON-RPC node on 127.0.0.1, kept on disk."""

from __future__ import annotations

import argparse
import ipaddress
from pathlib import Path

from agent_pay.cli._common import (
    FACILITATOR_INDEX,
    FACILITATOR_SERVICE_INDEX,
    add_grace_period_flag,
    describe_seconds,
    port_arg,
    positive_int,
    say,
    wait_for_shutdown,
)
from agent_pay.settings import Settings

__all__ = ["register"]


def run(args: argparse.Namespace, settings: Settings) -> int:
    from agent_pay.chain.dev_roles import DEPLOYER_INDEX
    from agent_pay.chain.devkeys import dev_accounts
    from agent_pay.node.methods import DEFAULT_GAS_CAP
    from agent_pay.node.node import DEV_FUNDS, Node

    data_dir: Path | None = None if args.ephemeral else settings.data_dir
    with (
        Node.open(
            data_dir,
            chain_id=settings.chain_id,
            fsync=args.fsync,
            channel_grace_period=settings.channel_grace_period,
            gas_cap=DEFAULT_GAS_CAP if args.rpc_gas_cap is None else args.rpc_gas_cap,
        ) as node,
        node.serve(settings.node_host, settings.node_port) as url,
    ):
        start = node.start
        say(f"agent-pay node: py-evm (Prague), chain id {node.chain.chain_id}, on {url}")
        if not _is_loopback(settings.node_host):
            say(f"warning     listening on {settings.node_host}: others can reach this dev chain")
        if data_dir is None:
            say("data        in memory only (--ephemeral): everything is gone when it stops")
        elif start.created:
            say(f"data        {data_dir} (new chain; the contracts were deployed)")
        else:
            say(
                f"data        {data_dir} (restored {start.restored_blocks} blocks "
                f"in {start.restore_seconds:.1f} s)"
            )
        for symbol, token in node.tokens.items():
            asset = token.asset
            say(
                f"stablecoin  {symbol} at {token.address} "
                f"({asset.eip712_name}, {asset.decimals} decimals)"
            )
        manager = node.channel_manager
        if manager is not None:
            grace = describe_seconds(manager.grace_period)
            say(f"channels    at {manager.address} (grace period {grace})")
        else:
            say(
                "channels    none at the default address (a chain made by an older agent-pay): "
                "agent-pay deploy adds one"
            )
        say(
            f"roles       dev account #{DEPLOYER_INDEX} owns the tokens (mints: agent-pay fund); "
            f"serve pays settlement gas from dev account #{FACILITATOR_INDEX}, "
            f"agent-pay facilitator from #{FACILITATOR_SERVICE_INDEX}"
        )
        say()
        say(f"Dev accounts, {DEV_FUNDS // 10**18:,} ETH each at genesis.")
        say("THROWAWAY KEYS: public (the 'test test ... junk' mnemonic every dev tool ships).")
        say("Anyone can spend what they hold: never use them on a real chain.")
        for index, account in enumerate(dev_accounts()):
            say(f"  ({index}) {account.address}  key 0x{bytes(account.key).hex()}")
        say()
        say("Ctrl-C to stop" + ("; the chain is kept for the next start." if data_dir else "."))
        wait_for_shutdown()
    say("agent-pay node: stopped")
    return 0


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "node", help="run a local chain over Ethereum JSON-RPC, kept in a data directory"
    )
    parser.add_argument(
        "--data-dir", type=Path, help="where the chain is kept ($AGENT_PAY_HOME/node)"
    )
    parser.add_argument(
        "--ephemeral", action="store_true", help="keep nothing on disk (ignore --data-dir)"
    )
    parser.add_argument("--host", dest="node_host", help="interface to listen on (127.0.0.1)")
    parser.add_argument("--port", dest="node_port", type=port_arg, help="JSON-RPC port (8545)")
    parser.add_argument("--chain-id", type=positive_int, help="chain id of a new chain (31337)")
    parser.add_argument(
        "--fsync", action="store_true", help="force each block to disk (survives power loss)"
    )
    parser.add_argument(
        "--rpc-gas-cap",
        type=positive_int,
        metavar="GAS",
        help="most gas eth_call and eth_estimateGas run with (50,000,000)",
    )
    add_grace_period_flag(parser)
    parser.set_defaults(run=run)
