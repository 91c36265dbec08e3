"""The "channel" scheme's parts: its options, its handler on a channel contract, the server's
side of it (offers and `GET /channels/{id}`) on the channel seam. `agent_pay.assembly.root.
assemble` puts them together with the rest when a server offers "channel": in process, the
seam is `LocalChannelFacilitator` over the handler it starts (watching, settling and
persisting in the background until `Assembly.close()`); behind a remote facilitator it is
`HttpChannelFacilitator` (its terms read from the facilitator's `/supported`), and the handler
runs in the facilitator's process."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from fastapi import APIRouter

from agent_pay.assets import AssetRegistry
from agent_pay.chain.base import Chain
from agent_pay.chain.channel import DEFAULT_GRACE_PERIOD, ChannelManager
from agent_pay.chain.contract import Transactor
from agent_pay.chain.stablecoin import Stablecoin
from agent_pay.facilitator.base import ChannelFacilitator
from agent_pay.facilitator.channel.persistence import ChannelPersistence
from agent_pay.facilitator.channel.scheme import DEFAULT_REPLAY_WINDOW, ChannelEvmScheme
from agent_pay.facilitator.channel.settler import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_EVERY_SECONDS,
    DEFAULT_EVERY_VOUCHERS,
)
from agent_pay.facilitator.channel.store import DEFAULT_FLUSH_INTERVAL, ChannelStore
from agent_pay.facilitator.channel.watch import DEFAULT_REFRESH_INTERVAL
from agent_pay.server.channel_offers import (
    DEFAULT_MIN_DEPOSIT_READS,
    ChannelOffers,
    channel_router,
)
from agent_pay.server.offers import DEFAULT_MAX_TIMEOUT_SECONDS

__all__ = [
    "DEFAULT_GRACE_PERIOD",
    "ChannelOptions",
    "build_channel_scheme",
    "channel_offers",
    "channel_server",
]


@dataclass(frozen=True)
class ChannelOptions:
    """How the channel scheme runs. `manager`: attach to this channel contract instead of
    deploying one (with `grace_period`); `data_dir`: where the payee's channel state persists
    (`<data_dir>/channels.sqlite`; in memory when None); `shared_store`: instead, the store
    several instances share, made for the channel contract's address (with leases:
    `agent_pay.store.postgres.channels`)."""

    manager: str | None = None
    grace_period: int = DEFAULT_GRACE_PERIOD
    data_dir: Path | None = None
    shared_store: Callable[[str], ChannelPersistence] | None = None
    flush_interval: float = DEFAULT_FLUSH_INTERVAL
    refresh_interval: float = DEFAULT_REFRESH_INTERVAL
    settle_every_vouchers: int = DEFAULT_EVERY_VOUCHERS
    settle_every_seconds: float = DEFAULT_EVERY_SECONDS
    settle_batch_size: int = DEFAULT_BATCH_SIZE
    replay_window: float = DEFAULT_REPLAY_WINDOW
    min_deposit_reads: int = DEFAULT_MIN_DEPOSIT_READS
    max_timeout_seconds: int = DEFAULT_MAX_TIMEOUT_SECONDS


def build_channel_scheme(
    chain: Chain,
    tokens: Iterable[Stablecoin],
    deployer: Transactor | None,
    transactor: Transactor,
    options: ChannelOptions | None = None,
    *,
    manager: ChannelManager | None = None,
) -> ChannelEvmScheme:
    """The channel handler on `chain`, on `manager` if given, else on the contract
    `options.manager` names, else on one it deploys from `deployer` (with
    `options.grace_period`); `transactor` pays for opens and claims. Not started."""
    options = options or ChannelOptions()
    if manager is None and options.manager is not None:
        manager = ChannelManager.at(chain, options.manager)
    elif manager is None:
        if deployer is None:
            raise ValueError(
                'the "channel" scheme needs a channel contract, or an owner to deploy one'
            )
        manager = ChannelManager.deploy(deployer, options.grace_period)
    store: ChannelPersistence
    if options.shared_store is not None:
        store = options.shared_store(manager.address)
    elif options.data_dir is not None:
        store = ChannelStore.open(options.data_dir, flush_interval=options.flush_interval)
    else:
        store = ChannelStore.in_memory()
    return ChannelEvmScheme(
        manager,
        tokens,
        transactor,
        store=store,
        refresh_interval=options.refresh_interval,
        settle_every_vouchers=options.settle_every_vouchers,
        settle_every_seconds=options.settle_every_seconds,
        settle_batch_size=options.settle_batch_size,
        replay_window=options.replay_window,
    )


def channel_offers(
    assets: AssetRegistry, channels: ChannelFacilitator, options: ChannelOptions | None = None
) -> ChannelOffers:
    """The server's channel offers on the contract of the facilitator's `channels` (the
    seam: in process or remote)."""
    options = options or ChannelOptions()
    return ChannelOffers(
        assets,
        channels,
        min_deposit_reads=options.min_deposit_reads,
        max_timeout_seconds=options.max_timeout_seconds,
    )


def channel_server(
    assets: AssetRegistry, channels: ChannelFacilitator, options: ChannelOptions | None = None
) -> tuple[ChannelOffers, APIRouter]:
    """The content server's side of the channel scheme on the seam `channels` (in process or
    remote): its offers (an `OfferBuilder` for `create_server`) and `GET /channels/{id}` (a
    router to include in the app)."""
    return channel_offers(assets, channels, options), channel_router(channels)
