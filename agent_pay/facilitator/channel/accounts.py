"""Every channel account the payee holds: by channel, by payer, loaded from the store, and a
channel not seen yet read from the chain (`lookup`).

On a store shared by several instances (`ChannelLeases`), this instance holds only the channels
whose lease it took: `get` (the fast path) knows only those, and `lookup` (a worker thread,
off the fast path) takes a channel's lease when it must, loading the channel as the store has
it. At most `MAX_TAKING` leases are being taken at once: a flood of distinct channel ids, each
forcing a round trip to the store, waits its turn or is answered 503 `channel_busy`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, Final

from agent_pay.chain.base import ChainError
from agent_pay.chain.channel import ChannelManager, ChannelState, ChannelStatus
from agent_pay.errors import ChainUnavailableError
from agent_pay.facilitator.channel.book import ChannelAccount
from agent_pay.facilitator.channel.persistence import ChannelLeases, ChannelPersistence
from agent_pay.facilitator.channel.records import ChannelBusyError, PaidRead
from agent_pay.store.errors import StoreUnavailableError

__all__ = ["MAX_TAKING", "TROUBLE", "ChannelAccounts"]

log = logging.getLogger(__name__)

TROUBLE = (ChainError, OSError, TimeoutError)
"""What reading the chain may raise when the node is in trouble."""
MAX_TAKING: Final = 8
"""Channel leases taken at once (each is a round trip or two to the shared store)."""
_STRIPES: Final = 64  # locks that serialize taking one channel, by its id's first byte


class ChannelAccounts:
    """The accounts of `manager`'s channels that pay this payee, persisted in `store`.

    `by_channel` is shared, as is, with the watch and the settler (they refresh and claim the
    accounts in it); inserts and removals go through `remember` / `_hold` / `_forget`, under
    a lock.
    """

    def __init__(self, manager: ChannelManager, store: ChannelPersistence) -> None:
        self.manager = manager
        self.store = store
        self.by_channel: dict[bytes, ChannelAccount] = {a.channel_id: a for a in store.load()}
        self._by_payer: dict[str, list[ChannelAccount]] = {}
        for account in self.by_channel.values():
            self._by_payer.setdefault(account.payer, []).append(account)
        self._lock = threading.Lock()  # guards inserts
        self._leases = store if isinstance(store, ChannelLeases) else None
        if self._leases is not None:
            self._leases.attach(self._forget)
        self._taking = threading.BoundedSemaphore(MAX_TAKING)
        self._stripes = [threading.Lock() for _ in range(_STRIPES)]

    def get(self, channel: bytes) -> ChannelAccount | None:
        """The account of `channel`, if this instance holds it (no I/O)."""
        account = self.by_channel.get(channel)
        return account if account is not None and account.held else None

    def lookup(
        self, channel: bytes, vet: Callable[[ChannelState], None] | None = None
    ) -> ChannelAccount | None:
        """The account of `channel`, read from the chain if not known here (on a shared store:
        its lease taken, if this instance does not hold it); None if there is no such channel.
        ChainUnavailableError if the chain cannot be read (ChannelBusyError: the channel is
        another instance's for now).

        `vet`, on a shared store, is called with the channel as the chain has it before its
        lease is taken from another instance, and raises to refuse the voucher that asks
        (one its payer did not sign, say): a stranger's voucher must not move a channel."""
        account = self.by_channel.get(channel)
        if account is not None and account.held:
            return account
        if self._leases is not None:
            return self._take(self._leases, channel, lambda: self._vetted(channel, vet))
        state = self._read_chain(channel)
        if state.status is ChannelStatus.NONE:
            return None
        return self.remember(channel, state)

    def _vetted(self, channel: bytes, vet: Callable[[ChannelState], None] | None) -> ChannelState:
        state = self._read_chain(channel)
        if vet is not None and state.status is not ChannelStatus.NONE:
            vet(state)
        return state

    def _read_chain(self, channel: bytes) -> ChannelState:
        try:
            return self.manager.channel(channel)
        except TROUBLE as exc:
            raise ChainUnavailableError(f"cannot read the channel: {exc}") from exc

    def _take(
        self, leases: ChannelLeases, channel: bytes, read_chain: Callable[[], ChannelState]
    ) -> ChannelAccount | None:
        if not self._taking.acquire(timeout=leases.handoff_wait):
            raise ChannelBusyError("too many channels are being taken over at once: retry")
        try:
            with self._stripes[channel[0] % _STRIPES]:
                held = self.by_channel.get(channel)
                if held is not None and held.held:  # a concurrent request took it meanwhile
                    return held
                account = leases.acquire(channel, read_chain, held)
                if account is not None:
                    self._hold(account)
                return account
        finally:
            self._taking.release()

    def adopt_orphans(self) -> int:
        """On a shared store: take the channels no live instance holds that still have a
        voucher to claim (`ChannelLeases.orphans`), for the settler; how many. With the store
        away, none: the round still claims the channels held here (a claim needs the chain
        only), and the next round looks again."""
        if self._leases is None:
            return 0
        try:
            orphans = self._leases.orphans()
        except StoreUnavailableError as exc:
            log.warning("could not look for channels to adopt: %s", exc)
            return 0
        adopted = 0
        for channel in orphans:
            try:
                adopted += self.lookup(channel) is not None
            except (ChainUnavailableError, StoreUnavailableError) as exc:  # the next round
                log.warning("could not adopt channel 0x%s: %s", channel.hex(), exc)
        return adopted

    def remember(self, channel: bytes, state: ChannelState) -> ChannelAccount:
        """The account of `channel`, made from `state` if new, refreshed with it if not (on a
        shared store: its lease taken first, if this instance does not hold it)."""
        if self._leases is not None:
            held = self.by_channel.get(channel)
            taken = held if held is not None and held.held else None
            if taken is None:
                taken = self._take(self._leases, channel, lambda: state)
            if taken is None:  # pragma: no cover - `state` is a channel's the chain holds
                raise ChainUnavailableError(f"no channel 0x{channel.hex()} on chain")
            taken.refresh(state)
            self.store.mark(taken)
            return taken
        with self._lock:
            account = self.by_channel.get(channel)
            if account is None:
                account = self.by_channel[channel] = ChannelAccount.from_chain(channel, state)
                self._by_payer.setdefault(account.payer, []).append(account)
        account.refresh(state)
        self.store.mark(account)
        return account

    def _hold(self, account: ChannelAccount) -> None:
        """Hold `account` (its lease just taken), in place of any older account of it."""
        with self._lock:
            old = self.by_channel.get(account.channel_id)
            if old is account:
                return
            self.by_channel[account.channel_id] = account
            readers = self._by_payer.setdefault(account.payer, [])
            readers[:] = [a for a in readers if a is not old]
            readers.append(account)

    def _forget(self, account: ChannelAccount) -> None:
        """`account`'s lease is another instance's now: no more of its vouchers here."""
        with self._lock:
            if self.by_channel.get(account.channel_id) is account:
                del self.by_channel[account.channel_id]
            readers = self._by_payer.get(account.payer, [])
            readers[:] = [a for a in readers if a is not account]
            if not readers:
                self._by_payer.pop(account.payer, None)

    def statement(self, channel: bytes) -> dict[str, Any] | None:
        """Where `channel` stands (the wire's `ChannelStatement`), or None if unknown here. On
        a shared store, a channel another instance holds is told as last written (at most a
        checkpoint interval behind)."""
        account = self.by_channel.get(channel)
        if (account is None or not account.held) and self._leases is not None:
            account = self._leases.stored(channel) or account
        return account.statement() if account is not None else None

    def paid_read(self, payer: str, resource: str) -> PaidRead | None:
        """A read of `resource` (a URL path) that `payer` paid by voucher, if any: its
        entitlement to read it again. Survives a restart as the voucher that paid does."""
        # The accounts first: a read leaves them only once the store has it on disk.
        for account in list(self._by_payer.get(payer, ())):
            read = account.unwritten_read(resource)
            if read is not None:
                return read
        found = self.store.paid_read(payer, resource)
        if found is None:
            return None
        channel, cumulative, url, price, at = found
        held = self.by_channel.get(channel)
        terms = (held.payer, held.payee, held.token) if held else self.store.terms(channel)
        if terms is None:  # pragma: no cover - every stored read's channel is known
            return None
        return PaidRead(channel, cumulative, *terms, resource, url, price, at)
