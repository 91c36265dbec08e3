"""Every channel account the payee holds: by channel, by payer, loaded from the store, and a
channel not seen yet read from the chain (`lookup`)."""

from __future__ import annotations

import threading
from typing import Any

from agent_pay.chain.base import ChainError
from agent_pay.chain.channel import ChannelManager, ChannelState, ChannelStatus
from agent_pay.errors import ChainUnavailableError
from agent_pay.facilitator.channel.book import ChannelAccount
from agent_pay.facilitator.channel.records import PaidRead
from agent_pay.facilitator.channel.store import ChannelStore

__all__ = ["TROUBLE", "ChannelAccounts"]

TROUBLE = (ChainError, OSError, TimeoutError)
"""What reading the chain may raise when the node is in trouble."""


class ChannelAccounts:
    """The accounts of `manager`'s channels that pay this payee, persisted in `store`.

    `by_channel` is shared, as is, with the watch and the settler (they refresh and claim the
    accounts in it); inserts go through `remember`, under a lock.
    """

    def __init__(self, manager: ChannelManager, store: ChannelStore) -> None:
        self.manager = manager
        self.store = store
        self.by_channel: dict[bytes, ChannelAccount] = {a.channel_id: a for a in store.load()}
        self._by_payer: dict[str, list[ChannelAccount]] = {}
        for account in self.by_channel.values():
            self._by_payer.setdefault(account.payer, []).append(account)
        self._lock = threading.Lock()  # guards inserts

    def get(self, channel: bytes) -> ChannelAccount | None:
        """The account of `channel`, if known here (no I/O)."""
        return self.by_channel.get(channel)

    def lookup(self, channel: bytes) -> ChannelAccount | None:
        """The account of `channel`, read from the chain if not known here; None if there is no
        such channel. ChainUnavailableError if the chain cannot be read."""
        account = self.by_channel.get(channel)
        if account is not None:
            return account
        try:
            state = self.manager.channel(channel)
        except TROUBLE as exc:
            raise ChainUnavailableError(f"cannot read the channel: {exc}") from exc
        if state.status is ChannelStatus.NONE:
            return None
        return self.remember(channel, state)

    def remember(self, channel: bytes, state: ChannelState) -> ChannelAccount:
        """The account of `channel`, made from `state` if new, refreshed with it if not."""
        with self._lock:
            account = self.by_channel.get(channel)
            if account is None:
                account = self.by_channel[channel] = ChannelAccount.from_chain(channel, state)
                self._by_payer.setdefault(account.payer, []).append(account)
        account.refresh(state)
        self.store.mark(account)
        return account

    def statement(self, channel: bytes) -> dict[str, Any] | None:
        """Where `channel` stands (the wire's `ChannelStatement`), or None if unknown here."""
        account = self.by_channel.get(channel)
        return account.statement() if account is not None else None

    def paid_read(self, payer: str, resource: str) -> PaidRead | None:
        """A read of `resource` (a URL path) that `payer` paid by voucher, if any: its
        entitlement to read it again. Survives a restart as the voucher that paid does."""
        # The accounts first: a read leaves them only once the store has it on disk.
        for account in self._by_payer.get(payer, ()):
            read = account.unwritten_read(resource)
            if read is not None:
                return read
        found = self.store.paid_read(payer, resource)
        if found is None:
            return None
        channel, cumulative, url, price, at = found
        terms = self.by_channel.get(channel)
        if terms is None:  # pragma: no cover - every stored read's channel is loaded
            return None
        return PaidRead(
            channel, cumulative, terms.payer, terms.payee, terms.token, resource, url, price, at
        )
