"""`agent-pay channels list | close | withdraw`: the payer's side of its payment channels.

    agent-pay channels list                       every channel in the store, and on chain
    agent-pay channels close 0xCHANNEL            ask to close (the grace period starts)
    agent-pay channels withdraw 0xCHANNEL         after the grace period: the refund

Closing and withdrawing are the payer's own transactions, so **they need gas**: the paying key
must hold a little of the chain's native currency. (Opening is gasless — the server submits the
payer's signed deposit — but the channel contract has no payer-signed close a server could
relay.) The payee can still claim during the grace period; `withdraw` then refunds the deposit
less what was claimed. The payee's server can also close at once (it is the payee's call).

The library calls (`request_close`, `withdraw`, `describe`) take a chain and an account and do
not read settings; `register(subparsers)` wires them into the CLI (`agent_pay.cli.COMMANDS`).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

from eth_account import Account
from eth_account.signers.local import LocalAccount

from agent_pay.chain.base import Chain
from agent_pay.chain.channel import ChannelClosed, ChannelManager, ChannelState, ChannelStatus
from agent_pay.chain.contract import Transactor
from agent_pay.chain.rpc import JsonRpcChain
from agent_pay.client.channel_store import ChannelRecord, ClientChannelStore
from agent_pay.errors import ConfigurationError
from agent_pay.settings import Settings
from agent_pay.signing import LocalSigner

__all__ = [
    "DEFAULT_CHANNELS_DIR",
    "ChannelView",
    "describe",
    "payer_account",
    "register",
    "request_close",
    "withdraw",
]

DEFAULT_CHANNELS_DIR: Path = Settings.model_fields["channels_dir"].default
"""Where `read --channel-deposit` and these commands keep the payer's channels."""


@dataclass(frozen=True, slots=True)
class ChannelView:
    """A channel as the payer kept it, and as the chain has it (None: not readable)."""

    record: ChannelRecord
    state: ChannelState | None


def payer_account(signer: LocalSigner) -> LocalAccount:
    """The account behind `signer`, to send the payer's own transactions."""
    account: LocalAccount = Account.from_key(signer.unsafe_export_private_key())
    return account


def _record(store: ClientChannelStore, channel_id: str) -> ChannelRecord:
    record = store.get(channel_id)
    if record is None:
        raise ConfigurationError(f"no channel {channel_id} in {store.directory}")
    return record


def describe(chain: Chain, store: ClientChannelStore) -> list[ChannelView]:
    """Every channel in `store`, with its on-chain state where `chain` is its chain."""
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
    chain: Chain, payer: LocalAccount, store: ClientChannelStore, channel_id: str
) -> int:
    """Ask to close the channel (a transaction from `payer`, who pays its gas); return the
    time from which `withdraw` can refund it."""
    record = _record(store, channel_id)
    manager = ChannelManager.at(chain, record.manager)
    manager.request_close(Transactor(chain, payer), bytes.fromhex(record.channel_id[2:]))
    state = manager.channel(bytes.fromhex(record.channel_id[2:]))
    record.status = "closing"
    store.save(record)
    return state.closes_at


def withdraw(chain: Chain, payer: LocalAccount, store: ClientChannelStore, channel_id: str) -> int:
    """After the grace period: close the channel and take the refund (a transaction from
    `payer`); return the refund."""
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
    parser = subparsers.add_parser("channels", help="the payer's payment channels")
    actions = parser.add_subparsers(dest="channels_action", required=True, metavar="ACTION")
    for name, run, help_text in (
        ("list", _list, "every channel in the store, and its state on chain"),
        ("close", _close, "ask to close a channel (a transaction: the key needs gas)"),
        ("withdraw", _withdraw, "after the grace period, take the refund (needs gas)"),
    ):
        action = actions.add_parser(name, help=help_text)
        action.add_argument(
            "--chain", dest="chain_url", metavar="URL", help="JSON-RPC URL of the node"
        )
        action.add_argument(
            "--channels-dir",
            type=Path,
            help=f"where the channels are kept (default {DEFAULT_CHANNELS_DIR}; "
            "AGENT_PAY_CHANNELS_DIR)",
        )
        if name != "list":
            action.add_argument("channel_id", metavar="CHANNEL_ID", help="0x-hex channel id")
        action.set_defaults(run=run)


def _chain(settings: Settings) -> JsonRpcChain:
    from agent_pay.cli._common import connect  # the CLI's own helpers, only when run

    return connect(settings)


def _signer(settings: Settings) -> LocalSigner:
    from agent_pay.wallet import signer_from_settings

    return signer_from_settings(settings, None)


def _list(args: argparse.Namespace, settings: Settings) -> int:
    store = ClientChannelStore(settings.channels_dir)
    with _chain(settings) as chain:
        views = describe(chain, store)
    for view in views:
        record, state = view.record, view.state
        on_chain = "-"
        if state is not None:
            on_chain = (
                f"{ChannelStatus(state.status).name.lower()} deposit={state.deposit} "
                f"claimed={state.claimed}"
                + (f" closes_at={state.closes_at}" if state.closes_at else "")
            )
        print(
            f"{record.channel_id} payee={record.payee} asset={record.asset} "
            f"deposit={record.deposit} signed={record.top} served={record.served} "
            f"[{record.status}] chain: {on_chain}",
            file=sys.stdout,
        )
    return 0


def _close(args: argparse.Namespace, settings: Settings) -> int:
    store = ClientChannelStore(settings.channels_dir)
    payer = payer_account(_signer(settings))
    with _chain(settings) as chain:
        closes_at = request_close(chain, payer, store, args.channel_id)
    print(f"close requested: withdraw from {closes_at} (unix time) on", file=sys.stdout)
    return 0


def _withdraw(args: argparse.Namespace, settings: Settings) -> int:
    store = ClientChannelStore(settings.channels_dir)
    payer = payer_account(_signer(settings))
    with _chain(settings) as chain:
        refund = withdraw(chain, payer, store, args.channel_id)
    print(f"withdrawn: refund {refund} (atomic units)", file=sys.stdout)
    return 0
