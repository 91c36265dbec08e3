"""`agent-pay channels list | close | withdraw`: the payer's side of its payment channels.

    agent-pay channels list                       every channel in the store, and on chain
    agent-pay channels close 0xCHANNEL            ask to close (the grace period starts)
    agent-pay channels withdraw 0xCHANNEL         after the grace period: the refund

Closing and withdrawing are the payer's own transactions, so **they need gas**: the paying key
must hold a little of the chain's native currency. (Opening is gasless — the server submits the
payer's signed deposit — but the channel contract has no payer-signed close a server could
relay.) The payee can still claim during the grace period; `withdraw` then refunds the deposit
less what was claimed. The payee's server can also close at once (it is the payee's call).

The library calls (`request_close`, `withdraw`, `describe`) take a chain and the payer's signer
(the key stays in it) and do not read settings; `register(subparsers)` wires them into the CLI
(`agent_pay.cli.COMMANDS`).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from agent_pay.errors import ConfigurationError
from agent_pay.settings import HOME_PATHS, Settings

if TYPE_CHECKING:
    from agent_pay.chain.base import Chain
    from agent_pay.chain.channel import ChannelState
    from agent_pay.chain.rpc import JsonRpcChain
    from agent_pay.cli._tokens import TokenNames
    from agent_pay.client.channel_store import ChannelRecord, ClientChannelStore
    from agent_pay.signing import LocalSigner
    from agent_pay.signing.signer import HashSigner

__all__ = [
    "DEFAULT_CHANNELS_DIR",
    "ChannelView",
    "describe",
    "register",
    "request_close",
    "withdraw",
]

DEFAULT_CHANNELS_DIR = f"$AGENT_PAY_HOME/{HOME_PATHS['channels_dir']}"
"""Where `read --channel-deposit` and these commands keep the payer's channels."""


@dataclass(frozen=True, slots=True)
class ChannelView:
    """A channel as the payer kept it, and as the chain has it (None: not readable)."""

    record: ChannelRecord
    state: ChannelState | None


def _record(store: ClientChannelStore, channel_id: str) -> ChannelRecord:
    record = store.get(channel_id)
    if record is None:
        raise ConfigurationError(f"no channel {channel_id} in {store.directory}")
    return record


def describe(chain: Chain, store: ClientChannelStore) -> list[ChannelView]:
    """Every channel in `store`, with its on-chain state where `chain` is its chain."""
    from agent_pay.chain.channel import ChannelManager

    views = []
    for record in store:
        state = None
        if record.network == f"eip155:{chain.chain_id}" and record.status != "failed":
            state = ChannelManager.at(chain, record.manager).channel(
                bytes.fromhex(record.channel_id[2:])
            )
        views.append(ChannelView(record, state))
    return views


def request_close(
    chain: Chain, payer: HashSigner, store: ClientChannelStore, channel_id: str
) -> int:
    """Ask to close the channel (a transaction signed by `payer`, who pays its gas); return
    the time from which `withdraw` can refund it."""
    from agent_pay.chain.channel import ChannelManager
    from agent_pay.chain.contract import Transactor

    record = _record(store, channel_id)
    manager = ChannelManager.at(chain, record.manager)
    manager.request_close(Transactor(chain, payer), bytes.fromhex(record.channel_id[2:]))
    state = manager.channel(bytes.fromhex(record.channel_id[2:]))
    record.status = "closing"
    store.save(record)
    return state.closes_at


def withdraw(chain: Chain, payer: HashSigner, store: ClientChannelStore, channel_id: str) -> int:
    """After the grace period: close the channel and take the refund (a transaction signed by
    `payer`); return the refund."""
    from agent_pay.chain.channel import ChannelClosed, ChannelManager
    from agent_pay.chain.contract import Transactor

    record = _record(store, channel_id)
    manager = ChannelManager.at(chain, record.manager)
    receipt = manager.withdraw(Transactor(chain, payer), bytes.fromhex(record.channel_id[2:]))
    refund = sum(e.refund for e in manager.events(receipt) if isinstance(e, ChannelClosed))
    state = manager.channel(bytes.fromhex(record.channel_id[2:]))
    record.status, record.refund, record.claimed = "closed", refund, state.claimed
    store.save(record)
    return refund


# -- the command -----------------------------------------------------------------------------


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `channels list|close|withdraw` (needs `--chain` and the paying key, as `read`)."""
    from agent_pay.cli._common import add_chain_flags

    parser = subparsers.add_parser("channels", help="the payer's payment channels")
    actions = parser.add_subparsers(dest="channels_action", required=True, metavar="ACTION")
    for name, run, help_text in (
        ("list", _list, "every channel in the store, and its state on chain"),
        ("close", _close, "ask to close a channel (a transaction: the key needs gas)"),
        ("withdraw", _withdraw, "after the grace period, take the refund (needs gas)"),
    ):
        action = actions.add_parser(name, help=help_text)
        add_chain_flags(action, tokens=False)
        action.add_argument(
            "--channels-dir",
            type=Path,
            help=f"where the channels are kept (default {DEFAULT_CHANNELS_DIR}; "
            "AGENT_PAY_CHANNELS_DIR)",
        )
        if name == "list":
            action.add_argument(
                "--all", action="store_true", help="also deposits the server refused"
            )
        else:
            action.add_argument("channel_id", metavar="CHANNEL_ID", type=_channel_id_arg)
            action.add_argument("--keystore", type=Path, help="the paying wallet")
        action.set_defaults(run=run)


def _channel_id_arg(text: str) -> str:
    digits = text.lower().removeprefix("0x")
    if len(digits) != 64 or any(c not in "0123456789abcdef" for c in digits):
        raise argparse.ArgumentTypeError(
            f"a channel id is 0x and 64 hex digits (see agent-pay channels list), got {text!r}"
        )
    return "0x" + digits


def _chain(settings: Settings) -> JsonRpcChain:
    from agent_pay.cli._common import connect  # the CLI's own helpers, only when run

    return connect(settings)


def _signer(settings: Settings) -> LocalSigner:
    from agent_pay.wallet import signer_from_settings

    return signer_from_settings(settings, _ask)


def _ask(prompt: str) -> str:
    import getpass

    if not sys.stdin.isatty():
        raise ConfigurationError("the keystore is locked: set AGENT_PAY_KEYSTORE_PASSWORD")
    return getpass.getpass(prompt)


def _store(settings: Settings) -> ClientChannelStore:
    from agent_pay.client.channel_store import ClientChannelStore

    return ClientChannelStore(settings.channels_dir)


def _when(timestamp: int) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _in(seconds: int) -> str:
    from agent_pay.cli._common import describe_seconds

    if seconds <= 0:
        return "now"
    if seconds >= 3600:
        return f"in about {round(seconds / 3600)} h"
    return f"in {describe_seconds(seconds)}" if seconds < 60 else f"in about {seconds // 60} min"


def _names(settings: Settings) -> TokenNames:
    from agent_pay.cli._tokens import TokenNames

    return TokenNames(settings.chain_url)


def _list(args: argparse.Namespace, settings: Settings) -> int:
    from agent_pay.chain.channel import ChannelStatus

    store = _store(settings)
    with _chain(settings) as chain, _names(settings) as names:
        views = describe(chain, store)
        refused = [v for v in views if v.record.status == "failed"]
        if not args.all:
            views = [v for v in views if v.record.status != "failed"]
        if not views:
            print(f"no channels in {settings.channels_dir}", file=sys.stdout)
        for view in views:
            record, state = view.record, view.state

            def amount(atomic: int, record: ChannelRecord = record) -> str:
                return names.format(atomic, record.network, record.asset)

            print(f"{record.channel_id}  [{record.status}]", file=sys.stdout)
            print(f"  payee     {record.payee}", file=sys.stdout)
            print(
                f"  deposit   {amount(record.deposit)}; signed for {amount(record.top)}, "
                f"served {amount(record.served)}",
                file=sys.stdout,
            )
            if state is not None:
                on_chain = (
                    f"{ChannelStatus(state.status).name.lower()}, deposit "
                    f"{amount(state.deposit)}, claimed {amount(state.claimed)}"
                )
                if state.closes_at:
                    on_chain += f"; withdraw from {_when(state.closes_at)}"
                print(f"  on chain  {on_chain}", file=sys.stdout)
        if refused and not args.all:
            print(
                f"({len(refused)} deposit(s) the server refused are not shown: they never "
                f"opened and moved nothing; --all lists them)",
                file=sys.stdout,
            )
    return 0


def _needs_gas(chain: Chain, address: str) -> None:
    """Refuse early, with the remedy, when the payer cannot pay a transaction's gas."""
    if chain.get_balance(address) < 10**14:  # under 0.0001 ETH: not even one transaction
        raise ConfigurationError(
            f"{address} needs gas: closing and withdrawing are the payer's own transactions "
            f"and it holds no ETH; fund it with a little (on a dev chain: "
            f"agent-pay fund {address} 0.01 --token ETH)"
        )


def _close(args: argparse.Namespace, settings: Settings) -> int:
    import time

    from agent_pay.chain.channel import ChannelManager, ChannelStatus

    store = _store(settings)
    record = _record(store, args.channel_id)
    payer = _signer(settings)
    with _chain(settings) as chain:
        state = ChannelManager.at(chain, record.manager).channel(
            bytes.fromhex(record.channel_id[2:])
        )
        if state.status == ChannelStatus.CLOSING:
            print(
                f"already closing: withdraw from {_when(state.closes_at)} "
                f"({_in(state.closes_at - int(time.time()))}): "
                f"agent-pay channels withdraw {record.channel_id}",
                file=sys.stdout,
            )
            return 0
        if state.status != ChannelStatus.OPEN:
            raise ConfigurationError(
                f"channel {record.channel_id} is {ChannelStatus(state.status).name.lower()} "
                f"on chain: nothing to close"
            )
        _needs_gas(chain, payer.address)
        closes_at = request_close(chain, payer, store, args.channel_id)
    print(
        f"close requested: withdraw the refund from {_when(closes_at)} "
        f"({_in(closes_at - int(time.time()))}; the payee may claim until then) with "
        f"agent-pay channels withdraw {record.channel_id}",
        file=sys.stdout,
    )
    return 0


def _withdraw(args: argparse.Namespace, settings: Settings) -> int:
    from agent_pay.chain.channel import ChannelManager, ChannelStatus

    store = _store(settings)
    record = _record(store, args.channel_id)
    payer = _signer(settings)
    with _chain(settings) as chain, _names(settings) as names:
        state = ChannelManager.at(chain, record.manager).channel(
            bytes.fromhex(record.channel_id[2:])
        )
        if state.status == ChannelStatus.OPEN:
            raise ConfigurationError(
                f"channel {record.channel_id} is open: ask to close it first "
                f"(agent-pay channels close {record.channel_id}), then withdraw after the "
                f"grace period"
            )
        if state.status == ChannelStatus.CLOSING:
            now = chain.latest_timestamp()
            if now < state.closes_at:
                raise ConfigurationError(
                    f"too early: the refund can be withdrawn from {_when(state.closes_at)} "
                    f"({_in(state.closes_at - now)})"
                )
        else:
            raise ConfigurationError(
                f"channel {record.channel_id} is {ChannelStatus(state.status).name.lower()} "
                f"on chain: nothing to withdraw"
            )
        _needs_gas(chain, payer.address)
        refund = withdraw(chain, payer, store, args.channel_id)
        print(
            f"withdrawn: refund {names.format(refund, record.network, record.asset)} "
            f"to {payer.address}",
            file=sys.stdout,
        )
    return 0
