"""What the channel handler asks of the store its accounts persist in, as the two interfaces
its backends implement.

`ChannelPersistence` is the write-behind store of one process's accounts: `ChannelStore`
(SQLite, one process per file) implements it, and so does the shared PostgreSQL store
(`agent_pay.store.postgres.channels.PostgresChannelStore`), which is also `ChannelLeases`:
there several instances share the channels, and each accepts vouchers only on the channels
whose lease it holds. The channel package knows these interfaces only: no database driver.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

from agent_pay.chain.channel import ChannelState
from agent_pay.facilitator.channel.book import ChannelAccount

__all__ = ["ChannelLeases", "ChannelPersistence", "StoredRead"]

StoredRead = tuple[bytes, int, str, int, float]
"""A paid read as a store finds it: (channel, cumulative, url, price, at)."""


class ChannelPersistence(Protocol):
    """Channel accounts, written behind the hot path (see `ChannelStore`)."""

    def load(self) -> list[ChannelAccount]:
        """The accounts this process holds from the start (every one, on a store of its own)."""
        ...

    def paid_read(self, payer: str, resource: str) -> StoredRead | None:
        """The earliest written read of `resource` (a URL path) paid by `payer`, if any."""
        ...

    def terms(self, channel: bytes) -> tuple[str, str, str] | None:
        """(payer, payee, token) of a stored channel this process does not hold, if known."""
        ...

    def mark(self, account: ChannelAccount) -> None:
        """Note that `account` changed: the next flush writes it. Cheap."""
        ...

    def flush(self) -> int: ...

    def start(self) -> None: ...

    def close(self) -> None: ...


@runtime_checkable
class ChannelLeases(ChannelPersistence, Protocol):
    """A store shared by several instances: a channel's vouchers are accepted by the one
    instance that holds its lease (`ChannelAccount.lease_until`)."""

    handoff_wait: float
    """Seconds `acquire` waits for another live instance to hand a channel over."""

    def acquire(
        self,
        channel: bytes,
        read_chain: Callable[[], ChannelState],
        held: ChannelAccount | None,
    ) -> ChannelAccount | None:
        """Take the lease of `channel` and return its account as the store has it (another
        instance may have advanced it), refreshed from the chain (`read_chain`); or `held`,
        this instance's account of it, renewed, when its lease is still this instance's.
        None if there is no such channel. Raises ChannelBusyError when another instance
        holds it and did not hand it over within `handoff_wait`, ChainUnavailableError when
        the chain cannot be read, StoreUnavailableError when the store cannot."""
        ...

    def stored(self, channel: bytes) -> ChannelAccount | None:
        """`channel`'s account as last written (by whichever instance held it), not held: to
        read, not to accept on."""
        ...

    def orphans(self) -> list[bytes]:
        """Channels no live instance holds that have a voucher above what was claimed (their
        holder was killed before it claimed them), oldest first, a batch at most."""
        ...

    def attach(self, forget: Callable[[ChannelAccount], None]) -> None:
        """Call `forget(account)` whenever this instance loses an account's lease (handed
        over on request, or taken after it expired): its vouchers are another's now."""
        ...
