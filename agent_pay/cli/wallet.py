"""`agent-pay wallet new | address | balance`: an encrypted keystore and what it holds."""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path

from agent_pay.assets import format_amount
from agent_pay.chain.rpc import JsonRpcChain
from agent_pay.cli._common import add_chain_flags, connect, say, tokens_on
from agent_pay.errors import ConfigurationError
from agent_pay.protocol.base import normalize_address
from agent_pay.settings import Settings
from agent_pay.wallet import balances, create_keystore, signer_from_settings

__all__ = ["register"]


def _new_password(settings: Settings) -> str:
    if settings.keystore_password is not None:
        return settings.keystore_password.get_secret_value()
    if not sys.stdin.isatty():
        raise ConfigurationError("set AGENT_PAY_KEYSTORE_PASSWORD (no terminal to ask on)")
    first = getpass.getpass("new keystore password: ")
    if getpass.getpass("again: ") != first:
        raise ConfigurationError("the passwords differ")
    return first


def _ask(prompt: str) -> str:
    return getpass.getpass(prompt)


def new(args: argparse.Namespace, settings: Settings) -> int:
    signer = create_keystore(settings.keystore, _new_password(settings))
    say(f"created {settings.keystore} (encrypted; keep the password safe)")
    say(signer.address)
    return 0


def address(args: argparse.Namespace, settings: Settings) -> int:
    signer = signer_from_settings(settings, _ask if sys.stdin.isatty() else None)
    say(signer.address)
    return 0


def balance(args: argparse.Namespace, settings: Settings) -> int:
    with connect(settings) as chain:
        return _balance(args, settings, chain)


def _balance(args: argparse.Namespace, settings: Settings, chain: JsonRpcChain) -> int:
    if args.address:
        try:
            owner = normalize_address(args.address)
        except ValueError as exc:
            raise ConfigurationError(f"address: {exc}") from None
    else:
        owner = signer_from_settings(settings, _ask if sys.stdin.isatty() else None).address
    held = balances(chain, owner, tokens_on(chain, settings))
    say(f"{owner} on chain {chain.chain_id}:")
    say(f"  ETH   {format_amount(held.native, 18)}")
    tokens = tokens_on(chain, settings)
    for symbol, amount in held.tokens.items():
        say(f"  {symbol:<5} {format_amount(amount, tokens[symbol].asset.decimals)}")
    return 0


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser("wallet", help="an encrypted keystore: new, address, balance")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    for name, run, text in (
        ("new", new, "create a key in a new encrypted keystore"),
        ("address", address, "print the keystore's address"),
        ("balance", balance, "ETH and stablecoin balances"),
    ):
        action = actions.add_parser(name, help=text)
        action.add_argument("--keystore", type=Path, help="keystore file (.agent-pay/wallet.json)")
        if name == "balance":
            action.add_argument("address", nargs="?", help="any address (default: the wallet's)")
            add_chain_flags(action)
        action.set_defaults(run=run)
