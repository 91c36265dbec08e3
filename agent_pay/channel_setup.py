"""Standing up the "channel" scheme next to "exact": the contract, the handler, the offers.

`Stack.embedded(schemes=("exact", "channel"))` calls `build_channel_scheme` and
`channel_offers`; anything else that assembles a server by hand (the benchmark, a node
deployment) can do the same:

    handler = build_channel_scheme(chain, tokens, owner, facilitator_transactor)
    facilitator = LocalFacilitator([exact_handler, handler])
    app = create_app(..., schemes=[ExactOffers(assets), channel_offers(assets, handler)])
    app.include_router(channel_router(handler))
    handler.start()        # watch, settle, persist in the background
    ...
    handler.close()        # a last claim round, state written
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from agent_pay.assets import AssetRegistry
from agent_pay.chain.base import Chain
from agent_pay.chain.channel import ChannelManager
from agent_pay.chain.contract import Transactor
from agent_pay.chain.stablecoin import Stablecoin
from agent_pay.facilitator.channel import DEFAULT_REPLAY_WINDOW, ChannelEvmScheme
from agent_pay.facilitator.channel_settler import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_EVERY_SECONDS,
    DEFAULT_EVERY_VOUCHERS,
)
from agent_pay.facilitator.channel_store import DEFAULT_FLUSH_INTERVAL, ChannelStore
from agent_pay.facilitator.channel_view import DEFAULT_REFRESH_INTERVAL
from agent_pay.server.channel_offers import DEFAULT_MIN_DEPOSIT_READS, ChannelOffers
from agent_pay.server.offers import DEFAULT_MAX_TIMEOUT_SECONDS

__all__ = ["DEFAULT_GRACE_PERIOD", "ChannelOptions", "build_channel_scheme", "channel_offers"]

DEFAULT_GRACE_PERIOD = 3600
"""Seconds a payer waits between asking to close and withdrawing: the payee's time to claim."""


@dataclass(frozen=True)
class ChannelOptions:
    """How the channel scheme runs. `manager`: attach to this channel contract instead of
    deploying one (with `grace_period`); `data_dir`: where channel state persists (in memory
    when None)."""

    manager: str | None = None
    grace_period: int = DEFAULT_GRACE_PERIOD
    data_dir: Path | None = None
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
    deployer: Transactor,
    transactor: Transactor,
    options: ChannelOptions | None = None,
) -> ChannelEvmScheme:
    """The channel handler on `chain`: deploys the channel contract from `deployer` (unless
    `options.manager` names one); `transactor` pays for opens and claims. Not started."""
    options = options or ChannelOptions()
    if options.manager is not None:
        manager = ChannelManager.at(chain, options.manager)
    else:
        manager = ChannelManager.deploy(deployer, options.grace_period)
    store = (
        ChannelStore.open(options.data_dir, flush_interval=options.flush_interval)
        if options.data_dir is not None
        else ChannelStore.in_memory()
    )
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
    assets: AssetRegistry, handler: ChannelEvmScheme, options: ChannelOptions | None = None
) -> ChannelOffers:
    """The server's channel offers on `handler`'s contract."""
    options = options or ChannelOptions()
    return ChannelOffers(
        assets,
        handler,
        min_deposit_reads=options.min_deposit_reads,
        max_timeout_seconds=options.max_timeout_seconds,
    )
