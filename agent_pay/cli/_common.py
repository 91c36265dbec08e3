"""What the commands share: flags that map onto `Settings`, the chain and keys they resolve
to, waiting for Ctrl-C, and printing."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any, TextIO

from agent_pay.argtypes import non_negative_int, port_arg, positive_float, positive_int
from agent_pay.chain.dev_roles import FACILITATOR_INDEX, FACILITATOR_SERVICE_INDEX
from agent_pay.errors import ConfigurationError
from agent_pay.settings import Settings

if TYPE_CHECKING:
    from agent_pay.chain.channel import ChannelManager
    from agent_pay.chain.rpc import JsonRpcChain
    from agent_pay.chain.stablecoin import Stablecoin
    from agent_pay.signing import LocalSigner

__all__ = [
    "FACILITATOR_INDEX",
    "FACILITATOR_SERVICE_INDEX",
    "Command",
    "UsageError",
    "add_chain_flags",
    "add_grace_period_flag",
    "address_arg",
    "amount_arg",
    "channel_manager_on",
    "connect",
    "describe_seconds",
    "facilitator_account",
    "non_negative_int",
    "owner_account",
    "port_arg",
    "positive_float",
    "positive_int",
    "say",
    "tokens_on",
    "wait_for_shutdown",
]

Command = Callable[[argparse.Namespace, Settings], int]
"""What a subcommand runs: the parsed flags and the settings; returns the exit code."""


class UsageError(ConfigurationError):
    """The command line asks for something that cannot be: exit 2, like argparse's errors."""


def amount_arg(text: str) -> str:
    """An amount in a token's units: a non-negative decimal, kept as text for the token to
    parse with its own decimals."""
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"expected an amount such as 0.25, got {text!r}") from None
    if not value.is_finite() or value < 0:
        raise argparse.ArgumentTypeError(f"must be a non-negative amount, got {text!r}")
    return text


def address_arg(text: str) -> str:
    """A 0x-hex address of 20 bytes, checksummed if it is mixed-case."""
    from agent_pay.protocol.base import normalize_address

    try:
        return normalize_address(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not an address ({exc}): {text!r}") from None


def say(text: str = "", out: TextIO | None = None) -> None:
    print(text, file=out or sys.stdout, flush=True)


def add_chain_flags(parser: argparse.ArgumentParser, *, tokens: bool = True) -> None:
    parser.add_argument(
        "--chain",
        dest="chain_url",
        metavar="URL",
        help="JSON-RPC URL of the node (default http://127.0.0.1:8545; AGENT_PAY_CHAIN_URL)",
    )
    if tokens:
        parser.add_argument(
            "--tokens",
            metavar="SYMBOL=ADDRESS,...",
            help="where the stablecoins are (default: the dev-chain addresses; AGENT_PAY_TOKENS)",
        )


def add_grace_period_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--channel-grace-period",
        type=positive_int,
        metavar="SECONDS",
        help="a new channel contract's close grace period (86400; AGENT_PAY_CHANNEL_GRACE_PERIOD)",
    )


def connect(settings: Settings) -> JsonRpcChain:
    """The node at `chain_url`; fails early and clearly if it does not answer."""
    from agent_pay.chain.rpc import JsonRpcChain, NodeUnavailableError

    chain = JsonRpcChain(settings.chain_url, timeout=settings.rpc_timeout)
    try:
        _ = chain.chain_id  # one round trip now rather than a confusing error later
    except NodeUnavailableError as exc:
        chain.close()
        cause = exc.__cause__ or exc
        hint = (
            "start one with `agent-pay node` in another terminal"
            if settings.chain_url == Settings.model_fields["chain_url"].default
            else "is it running? (--chain URL or AGENT_PAY_CHAIN_URL names another)"
        )
        raise ConfigurationError(
            f"no node answers at {settings.chain_url} ({cause}): {hint}"
        ) from None
    return chain


def tokens_on(chain: JsonRpcChain, settings: Settings) -> dict[str, Stablecoin]:
    from agent_pay.node.deployment import find_stablecoins

    return find_stablecoins(chain, settings.tokens)


def channel_manager_on(chain: JsonRpcChain, settings: Settings) -> ChannelManager | None:
    """The channel contract `channel_manager` names, or on a dev chain the one at the default
    address; None if there is none (only when no address was given)."""
    from agent_pay.node.deployment import find_channel_manager

    return find_channel_manager(chain, settings.channel_manager)


def describe_seconds(seconds: int) -> str:
    """A duration for people: "1 day", "10 minutes", "90 s"."""
    for unit, size in (("day", 86_400), ("hour", 3600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            count = seconds // size
            return f"{count} {unit}" + ("s" if count != 1 else "")
    return f"{seconds} s"


def _account(key: str, what: str) -> LocalSigner:
    from agent_pay.signing import LocalSigner

    try:
        return LocalSigner.from_key(key)
    except ConfigurationError:
        raise ConfigurationError(f"{what} is not a valid private key") from None


def facilitator_account(
    settings: Settings, chain: JsonRpcChain, *, dev_index: int = FACILITATOR_INDEX
) -> tuple[LocalSigner, str]:
    """The key that pays settlement gas (a signer holding it), and how to describe it. On a
    dev chain without a key set, throwaway dev account `dev_index`: `serve` and `facilitator`
    default to different ones, so that the two never clash over one account's nonces."""
    from agent_pay.chain.devkeys import dev_signer
    from agent_pay.node.deployment import is_dev_chain

    if settings.facilitator_key is not None:
        key = settings.facilitator_key.get_secret_value()
        return _account(key, "AGENT_PAY_FACILITATOR_KEY"), "AGENT_PAY_FACILITATOR_KEY"
    if is_dev_chain(chain):
        return dev_signer(dev_index), f"throwaway dev account #{dev_index}"
    raise ConfigurationError(
        f"chain {chain.chain_id} is not a dev chain: set AGENT_PAY_FACILITATOR_KEY "
        f"(the key that pays settlement gas), or use --facilitator-url"
    )


def owner_account(settings: Settings, chain: JsonRpcChain) -> tuple[LocalSigner, str]:
    """The tokens' owner (deploys, mints: a signer holding its key), and how to describe it."""
    from agent_pay.chain.devkeys import dev_signer
    from agent_pay.node.deployment import DEPLOYER_INDEX, is_dev_chain

    if settings.owner_key is not None:
        key = settings.owner_key.get_secret_value()
        return _account(key, "AGENT_PAY_OWNER_KEY"), "AGENT_PAY_OWNER_KEY"
    if is_dev_chain(chain):
        return dev_signer(DEPLOYER_INDEX), f"throwaway dev account #{DEPLOYER_INDEX}"
    raise ConfigurationError(
        f"chain {chain.chain_id} is not a dev chain: set AGENT_PAY_OWNER_KEY (the token owner)"
    )


def wait_for_shutdown() -> int:
    """Block until Ctrl-C or SIGTERM; return the signal number."""
    received: list[int] = []
    stop = threading.Event()

    def handler(signum: int, _frame: Any) -> None:
        received.append(signum)
        stop.set()

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        while not stop.wait(0.5):
            pass
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
    return received[0]
