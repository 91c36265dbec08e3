"""`agent-pay wallet new | address | balance`: an encrypted keystore and what it holds."""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from agent_pay.cli._common import add_chain_flags, address_arg, connect, say, tokens_on
from agent_pay.errors import ConfigurationError
from agent_pay.settings import Settings

if TYPE_CHECKING:
    from agent_pay.chain.rpc import JsonRpcChain

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


def new(args: argparse.Namespace, settings: Settings) -> int:
    if settings.keystore.exists():
        raise ConfigurationError(
            f"{settings.keystore} exists already: not overwriting a key "
            f"(its address: agent-pay wallet address; another file: --keystore PATH)"
        )
    from agent_pay.wallet import create_keystore

    signer = create_keystore(settings.keystore, _new_password(settings))
    say(f"created {settings.keystore} (encrypted; keep the password safe)")
    say(signer.address)
    return 0


def keystore_address(path: Path) -> str:
    """The address a keystore names (public in the file: no password needed)."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigurationError(
            f"no keystore at {path}: create one with `agent-pay wallet new`, pass --keystore, "
            f"or set AGENT_PAY_PRIVATE_KEY"
        ) from None
    except (OSError, ValueError) as exc:
        raise ConfigurationError(f"{path} is not a keystore: {exc}") from None
    raw = document.get("address") if isinstance(document, dict) else None
    if not isinstance(raw, str):
        raise ConfigurationError(f"{path} names no address (not a Web3 secret storage file?)")
    try:
        return _checksummed(raw)
    except ValueError:
        raise ConfigurationError(f"{path} names no valid address: {raw!r}") from None


def _checksummed(raw: str) -> str:
    """EIP-55, with keccak from safe-pysha3 (eth_utils costs a tenth of a second to import)."""
    import sha3  # type: ignore[import-untyped]

    hexed = raw.lower().removeprefix("0x")
    if len(hexed) != 40 or any(c not in "0123456789abcdef" for c in hexed):
        raise ValueError(raw)
    digest = sha3.keccak_256(hexed.encode("ascii")).hexdigest()
    return "0x" + "".join(
        c.upper() if int(d, 16) >= 8 else c for c, d in zip(hexed, digest[:40], strict=True)
    )


def _wallet_address(settings: Settings) -> str:
    if settings.private_key is not None:  # the key itself: derive it
        from agent_pay.wallet import signer_from_settings

        return signer_from_settings(settings).address
    return keystore_address(settings.keystore)


def address(args: argparse.Namespace, settings: Settings) -> int:
    say(_wallet_address(settings))
    return 0


def balance(args: argparse.Namespace, settings: Settings) -> int:
    with connect(settings) as chain:
        return _balance(args, settings, chain)


def _balance(args: argparse.Namespace, settings: Settings, chain: JsonRpcChain) -> int:
    from agent_pay.assets import format_amount
    from agent_pay.wallet import balances

    owner = args.address or _wallet_address(settings)
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
        action.add_argument(
            "--keystore", type=Path, help="keystore file ($AGENT_PAY_HOME/wallet.json)"
        )
        if name == "balance":
            action.add_argument(
                "address", nargs="?", type=address_arg, help="any address (default: the wallet's)"
            )
            add_chain_flags(action)
        action.set_defaults(run=run)
