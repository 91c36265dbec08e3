"""`agent-pay deploy` and `agent-pay fund`: the stablecoins and the channel contract on a node."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from agent_pay.cli._common import (
    UsageError,
    add_chain_flags,
    add_grace_period_flag,
    address_arg,
    amount_arg,
    connect,
    describe_seconds,
    owner_account,
    say,
    tokens_on,
)
from agent_pay.errors import ConfigurationError
from agent_pay.settings import Settings

if TYPE_CHECKING:
    from agent_pay.chain.rpc import JsonRpcChain

__all__ = ["register"]

NATIVE = "ETH"


def deploy(args: argparse.Namespace, settings: Settings) -> int:
    with connect(settings) as chain:
        return _deploy(args, settings, chain)


def _deploy(args: argparse.Namespace, settings: Settings, chain: JsonRpcChain) -> int:
    from agent_pay.chain.contract import Transactor
    from agent_pay.node.deployment import (
        DEV_CHANNEL_MANAGER_ADDRESS,
        DEV_TOKEN_ADDRESSES,
        deploy_channel_manager,
        deploy_default_stablecoins,
        find_channel_manager,
        find_stablecoins,
        is_dev_chain,
    )

    account, who = owner_account(settings, chain)
    owner = Transactor(chain, account)
    uses_dev_owner = is_dev_chain(chain) and owner.address == _dev_owner_address()
    if uses_dev_owner and all(chain.get_code(a) for a in DEV_TOKEN_ADDRESSES.values()):
        tokens = find_stablecoins(chain)
        say(f"stablecoins already deployed on chain {chain.chain_id} ({chain.url}):")
    else:
        tokens = deploy_default_stablecoins(chain, owner)
        say(f"deployed on chain {chain.chain_id} ({chain.url}), owner {owner.address} ({who}):")
    for symbol, token in tokens.items():
        say(f"  {symbol} {token.address} ({token.asset.eip712_name}, {token.asset.decimals} dp)")
    # After the tokens: on a fresh dev chain it lands at the default address.
    manager = find_channel_manager(chain, settings.channel_manager)
    found = manager is not None
    if manager is None:
        manager = deploy_channel_manager(chain, owner, settings.channel_grace_period)
    grace = describe_seconds(manager.grace_period)
    say(
        f"  channels {manager.address} (grace period {grace})"
        + (", already deployed" if found else "")
    )
    if {s: t.address for s, t in tokens.items()} != dict(DEV_TOKEN_ADDRESSES):
        listing = ",".join(f"{s}={t.address}" for s, t in tokens.items())
        say(f"not at the default addresses: pass --tokens {listing} (or AGENT_PAY_TOKENS)")
    if manager.address != DEV_CHANNEL_MANAGER_ADDRESS and settings.channel_manager is None:
        say(
            f"channels not at the default address: pass --channel-manager {manager.address} "
            f"(or AGENT_PAY_CHANNEL_MANAGER)"
        )
    return 0


def fund(args: argparse.Namespace, settings: Settings) -> int:
    with connect(settings) as chain:
        return _fund(args, settings, chain)


def _fund(args: argparse.Namespace, settings: Settings, chain: JsonRpcChain) -> int:
    from agent_pay.assets import format_amount
    from agent_pay.chain.contract import Transactor

    address = args.address
    account, who = owner_account(settings, chain)
    owner = Transactor(chain, account)
    if args.token == NATIVE:
        amount = _wei(args.amount)
        receipt = owner.transact(address, b"", gas=21_000, value=amount)
        if not receipt.status:
            raise ConfigurationError(f"the transfer from {owner.address} ({who}) failed")
        say(f"sent {args.amount} ETH to {address} from {who}")
        say(f"{address} now holds {format_amount(chain.get_balance(address), 18)} ETH")
        return 0
    tokens = tokens_on(chain, settings)
    if args.token not in tokens:
        raise UsageError(f"unknown token {args.token!r}; known: {', '.join(tokens)}, ETH")
    token = tokens[args.token]
    try:
        atomic = token.asset.parse(args.amount)
    except ValueError as exc:
        raise UsageError(f"amount: {exc}") from None
    token.mint(owner, address, atomic)
    say(f"minted {token.asset.format(atomic)} to {address} (as {who})")
    say(f"{address} now holds {token.asset.format(token.balance_of(address))}")
    return 0


def _dev_owner_address() -> str:
    from agent_pay.chain.devkeys import dev_account
    from agent_pay.node.deployment import DEPLOYER_INDEX

    return str(dev_account(DEPLOYER_INDEX).address)


def _wei(amount: str) -> int:
    from agent_pay.assets import parse_amount

    try:
        return parse_amount(amount, 18)
    except ValueError as exc:
        raise UsageError(f"amount: {exc}") from None


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "deploy", help="deploy the stablecoins (USDX, CNYX) and the channel contract on a node"
    )
    add_chain_flags(parser, tokens=False)
    add_grace_period_flag(parser)
    parser.add_argument(
        "--channel-manager",
        metavar="ADDRESS",
        help="a channel contract deployed before, to check rather than deploy another "
        "(AGENT_PAY_CHANNEL_MANAGER)",
    )
    parser.set_defaults(run=deploy)

    parser = commands.add_parser(
        "fund", help="mint a stablecoin (or send ETH) to an address, as the token owner"
    )
    parser.add_argument("address", type=address_arg, help="who receives it")
    parser.add_argument("amount", type=amount_arg, help="in the token's units, e.g. 5 or 0.25")
    parser.add_argument(
        "--token", required=True, metavar="SYMBOL", help="USDX, CNYX, ... or ETH (gas money)"
    )
    add_chain_flags(parser)
    parser.set_defaults(run=fund)
