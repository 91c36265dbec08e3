"""The channel scheme's state on the shared PostgreSQL store, with leases.

Several instances share one payee's channels; the acceptance rule (`ChannelAccount.accept`)
must see every voucher of a channel in one place, yet must not cost a round trip per read. So
each channel has a *lease* (`channel_leases`: holder, epoch, expiry) and only its holder
accepts its vouchers, in memory, as one instance on SQLite does:

- **Taking.** The first voucher an instance sees for a channel it does not hold takes the
  lease (free, expired, or its own: `channel_sql.TAKE` bumps the epoch) and loads the
  channel's snapshot as the store has it: another instance may have advanced it. That is the
  only round trip on the way of a read, once per channel and instance.
- **Checkpointing.** As `ChannelStore`, accepting marks the account dirty; every
  `flush_interval` one transaction renews this instance's leases (those written, and those
  within half a lease of expiring) *at the epochs it took them*, and writes the snapshots and
  paid reads of the channels still held. A channel whose lease moved is fenced: its
  checkpoint is not written, and the account is dropped (`attach`'s `forget`).
- **Expiry.** A lease is renewed for `lease` seconds of the database's clock; the instance
  counts it on its own monotonic clock from *before* the renewal was sent, less `margin`
  (`ChannelAccount.lease_until`), and accepts nothing past it. A frozen instance (SIGSTOP, a
  long pause) thus stops accepting before anyone can take its lease; its next checkpoint is
  refused.
- **Hand-off.** A voucher reaching B for a channel A holds marks the lease wanted; A's next
  checkpoint stops accepting on it, writes its snapshot and releases the lease in one
  transaction; B, polling, takes it and loads that snapshot. If it does not within
  `handoff_wait`, B answers 503 `channel_busy` with Retry-After (`ChannelBusyError`).

What a lost checkpoint costs is what it costs on SQLite (see `ChannelStore`): the payee,
never the payer; a SIGKILL loses at most the last flush interval's vouchers, and whoever takes
the lease next loads the last snapshot written, so the forgotten slice is served again to
the payer's next voucher as an unpaid range. A checkpoint that cannot be written (the
database is down) is retried; the instance accepts on its leases until they run out. A read
whose content failed after its channel moved cannot be undone here (`VoucherAcceptor.release`
finds no account): its slice stays paid at the new holder, and the payer's retry of the same
voucher is served there as a replay.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Final

from agent_pay.chain.channel import ChannelState, ChannelStatus
from agent_pay.facilitator.channel.book import ChannelAccount
from agent_pay.facilitator.channel.persistence import StoredRead
from agent_pay.facilitator.channel.records import ChannelBusyError
from agent_pay.facilitator.channel.snapshot import checkpoint, restore
from agent_pay.facilitator.channel.writer import BackgroundWriter
from agent_pay.store.errors import StoreUnavailableError
from agent_pay.store.postgres import channel_sql as sql
from agent_pay.store.postgres.channel_writes import Checkpoint, write_checkpoint
from agent_pay.store.postgres.connection import Pool

__all__ = [
    "DEFAULT_CHANNEL_LEASE",
    "DEFAULT_CHECKPOINT_INTERVAL",
    "DEFAULT_HANDOFF_WAIT",
    "DEFAULT_LEASE_MARGIN",
    "PostgresChannelStore",
]

log = logging.getLogger(__name__)

DEFAULT_CHANNEL_LEASE: Final = 5.0
"""Seconds a channel's lease lasts unrenewed: how long a killed holder's channels wait."""
DEFAULT_LEASE_MARGIN: Final = 1.0
"""Seconds before its lease ends (on its own clock) that an instance stops accepting on it."""
DEFAULT_CHECKPOINT_INTERVAL: Final = 0.2
"""Seconds between two checkpoints: what a SIGKILLed holder can lose of its accepted vouchers
(the payee's loss, never the payer's), and how long a holder may take to see that another
instance wants a channel. Longer than SQLite's 50 ms because each checkpoint sends every dirty
channel's snapshot (with its recent vouchers, some 16 KB for a busy channel) over the network to
be written: at 50 ms a busy channel was written after every few reads, which cost PostgreSQL
0.09 ms of CPU per voucher read and the server 0.08 ms; at 200 ms, 0.03 ms and nothing
measurable (BENCHMARKS.md, "Several workers on one PostgreSQL store")."""
DEFAULT_HANDOFF_WAIT: Final = 1.0
"""Seconds a voucher waits for a live holder to hand its channel over, before a 503: several
checkpoint intervals, as the holder lets go at its next checkpoint."""
_POLL: Final = 0.02
_TERMS_CACHED: Final = 4096


class PostgresChannelStore:
    """The channel accounts of `contract` this instance (`me`) holds, on the shared store.

    Implements `ChannelLeases` (see the module docstring).
    """

    def __init__(
        self,
        pool: Pool,
        me: str,
        contract: str,
        *,
        flush_interval: float = DEFAULT_CHECKPOINT_INTERVAL,
        lease: float = DEFAULT_CHANNEL_LEASE,
        margin: float = DEFAULT_LEASE_MARGIN,
        handoff_wait: float = DEFAULT_HANDOFF_WAIT,
    ) -> None:
        if not 0 <= margin < lease / 2:
            raise ValueError("the lease margin must be under half the lease")
        self.flush_interval = flush_interval
        self.lease = lease
        self.margin = margin
        self.handoff_wait = handoff_wait
        self._pool = pool
        self._me = me
        self._contract = contract
        self._held: dict[bytes, tuple[ChannelAccount, int]] = {}  # channel -> account, epoch
        self._held_lock = threading.Lock()
        self._leaving: set[bytes] = set()  # being handed over by the checkpoint under way
        self._closing = False
        self._dirty: dict[bytes, ChannelAccount] = {}
        self._dirty_lock = threading.Lock()
        self._terms: dict[bytes, tuple[str, str, str]] = {}
        self._forget: Callable[[ChannelAccount], None] = lambda account: None
        self._writer = BackgroundWriter(
            self.flush,
            flush_interval,
            "agent-pay-channel-leases",
            retried=(StoreUnavailableError,),
            on_error=lambda exc: log.warning(
                "could not checkpoint channel state (will retry): %s", exc
            ),
        )
        self.writes = 0  # snapshots written
        self.fenced = 0  # checkpoints refused: the lease had moved
        self.handed_over = 0  # leases released on another instance's request

    def __repr__(self) -> str:
        return f"PostgresChannelStore({self._contract} on {self._pool.url}, as {self._me})"

    def _params(self, **more: Any) -> dict[str, Any]:
        return {"contract": self._contract, "me": self._me, "lease": self.lease, **more}

    def attach(self, forget: Callable[[ChannelAccount], None]) -> None:
        self._forget = forget

    # -- reading

    def load(self) -> list[ChannelAccount]:
        """Nothing: an instance holds a channel once it takes its lease (`acquire`)."""
        return []

    def holds(self, channel: bytes) -> bool:
        """Whether this instance holds `channel`'s lease, as far as it knows."""
        with self._held_lock:
            entry = self._held.get(channel)
        return entry is not None and entry[0].held

    def paid_read(self, payer: str, resource: str) -> StoredRead | None:
        rows = self._pool.fetch(sql.FIND_READ, self._params(payer=payer, resource=resource))
        if not rows:
            return None
        channel_hex, cumulative, url, price, at, payer, payee, token = rows[0]
        channel = bytes.fromhex(channel_hex[2:])
        if len(self._terms) >= _TERMS_CACHED:
            self._terms.clear()
        self._terms[channel] = (payer, payee, token)
        return channel, int(cumulative), url, int(price), float(at)

    def terms(self, channel: bytes) -> tuple[str, str, str] | None:
        found = self._terms.get(channel)
        if found is not None:
            return found
        rows = self._pool.fetch(sql.STATE, self._params(channel="0x" + channel.hex()))
        if not rows:
            return None
        state = json.loads(rows[0][0])
        return state["payer"], state["payee"], state["token"]

    def stored(self, channel: bytes) -> ChannelAccount | None:
        """See `ChannelLeases.stored`."""
        rows = self._pool.fetch(sql.STATE, self._params(channel="0x" + channel.hex()))
        return restore(json.loads(rows[0][0])) if rows else None

    def orphans(self, limit: int = 50) -> list[bytes]:
        """See `ChannelLeases.orphans`."""
        rows = self._pool.fetch(sql.ORPHANS, self._params(limit=limit))
        return [bytes.fromhex(row[0][2:]) for row in rows]

    # -- leases

    def acquire(
        self,
        channel: bytes,
        read_chain: Callable[[], ChannelState],
        held: ChannelAccount | None,
    ) -> ChannelAccount | None:
        """See `ChannelLeases.acquire`."""
        channel_hex = "0x" + channel.hex()
        with self._held_lock:
            leaving = self._closing or channel in self._leaving
        if leaving:
            raise ChannelBusyError(f"channel {channel_hex} is being handed over: retry")
        if held is not None and self._renew(channel, held):
            return held
        state = read_chain()  # first: an id no contract knows writes nothing here
        if state.status is ChannelStatus.NONE:
            return None
        started, epoch = self._take(channel_hex)
        rows = self._pool.fetch(sql.STATE, self._params(channel=channel_hex))
        account = restore(json.loads(rows[0][0])) if rows else None
        if account is None:
            account = ChannelAccount.from_chain(channel, state)
        account.refresh(state)  # events no holder watched while the channel was free
        account.lease_until = started + self.lease - self.margin
        with self._held_lock:
            self._held[channel] = (account, epoch)
        self.mark(account)
        return account

    def _take(self, channel_hex: str) -> tuple[float, int]:
        """Take the lease: (when on the monotonic clock, before asking; the epoch)."""
        deadline = time.monotonic() + self.handoff_wait
        asked = False
        params = self._params(channel=channel_hex)
        while True:
            started = time.monotonic()
            rows = self._pool.fetch(sql.TAKE, params)
            if rows:
                return started, int(rows[0][0])
            if not asked:
                self._pool.execute(sql.WANT, params)
                asked = True
            if time.monotonic() + _POLL > deadline:
                raise ChannelBusyError(
                    f"channel {channel_hex} is another instance's and was not handed over "
                    f"within {self.handoff_wait:g} s: retry"
                )
            time.sleep(_POLL)

    def _renew(self, channel: bytes, account: ChannelAccount) -> bool:
        """Renew the lease of `account` if it is still this instance's; else drop it."""
        with self._held_lock:
            entry = self._held.get(channel)
        if entry is None or entry[0] is not account:
            return False
        started = time.monotonic()
        params = self._params(channels=["0x" + channel.hex()], epochs=[entry[1]])
        if self._pool.fetch(sql.RENEW, params):
            with account.lock:
                account.lease_until = started + self.lease - self.margin
            return True
        self._drop([account])
        return False

    def _drop(self, accounts: list[ChannelAccount]) -> None:
        for account in accounts:
            with account.lock:
                account.lease_until = 0.0
            with self._held_lock:
                if self._held.get(account.channel_id, (None,))[0] is account:
                    del self._held[account.channel_id]
            self._forget(account)

    # -- writing

    def mark(self, account: ChannelAccount) -> None:
        """Note that `account` changed; it is written by the next flush. Cheap."""
        with self._dirty_lock:
            self._dirty[account.channel_id] = account

    def flush(self) -> int:
        """One checkpoint (see the module docstring); how many snapshots it wrote."""
        with self._held_lock:
            held = dict(self._held)
        if not held:  # nothing to write, renew or hand over
            return 0
        rows = self._pool.fetch(sql.WANTED, self._params())
        wanted = {bytes.fromhex(row[0][2:]) for row in rows}
        with self._dirty_lock:
            dirty, self._dirty = self._dirty, {}
        soon = time.monotonic() + self.lease / 2
        with self._held_lock:
            self._leaving = wanted & held.keys()
        for channel in self._leaving:  # no more vouchers here: its last state goes out
            account = held[channel][0]
            with account.lock:
                account.lease_until = 0.0
            dirty[channel] = account
        writing = {c: a for c, a in dirty.items() if c in held and held[c][0] is a}
        renewing = {c for c, (a, _) in held.items() if c in writing or a.lease_until < soon}
        if not renewing:
            return 0
        taken = [(account, *checkpoint(account)) for account in writing.values()]
        started = time.monotonic()
        try:
            return self._checkpoint(held, renewing, wanted, writing, taken, started)
        finally:
            with self._held_lock:
                self._leaving = set()

    def _checkpoint(
        self,
        held: dict[bytes, tuple[ChannelAccount, int]],
        renewing: set[bytes],
        wanted: set[bytes],
        writing: dict[bytes, ChannelAccount],
        taken: list[Checkpoint],
        started: float,
    ) -> int:
        try:
            with self._pool.connection() as connection, connection.transaction():
                kept = write_checkpoint(connection, self._params(), held, renewing, taken, wanted)
        except StoreUnavailableError:
            for account, _, _, changes in taken:
                account.unwritten(changes)
            with self._dirty_lock:
                for channel, account in writing.items():
                    self._dirty.setdefault(channel, account)
            raise
        return self._written(held, renewing, kept, wanted, taken, started)

    def _written(
        self,
        held: dict[bytes, tuple[ChannelAccount, int]],
        renewing: set[bytes],
        kept: set[bytes],
        wanted: set[bytes],
        taken: list[Checkpoint],
        started: float,
    ) -> int:
        """After the checkpoint committed: extend the leases kept, let go of the rest."""
        written = 0
        for account, _, _, changes in taken:
            if account.channel_id in kept:
                account.written(changes)
                written += 1
        until = started + self.lease - self.margin
        for channel in kept - wanted:
            account = held[channel][0]
            with account.lock:
                if account.lease_until != 0.0:
                    account.lease_until = until
        lost = renewing - kept
        if lost:
            self.fenced += len(lost)
            log.warning("%d channel lease(s) moved to another instance: dropped", len(lost))
        self.handed_over += len(kept & wanted)
        self._drop([held[c][0] for c in lost | (kept & wanted)])
        self.writes += written
        return written

    # -- the background writer

    def start(self) -> None:
        """Checkpoint every `flush_interval` seconds (idempotent)."""
        self._writer.start()

    def close(self) -> None:
        """Stop the writer, write what is dirty, release this instance's leases (another
        instance takes them at once). The pool is the caller's to close. With the database
        away, the last checkpoint is lost (at most a flush interval of vouchers, as after a
        SIGKILL) and the leases expire on their own: said, not raised, so the stop goes on."""
        self._writer.stop()
        with self._held_lock:
            self._closing = True  # no lease taken or renewed from now on
            held = [account for account, _ in self._held.values()]
        try:
            for account in held:  # stop accepting, and write each one's last state
                with account.lock:
                    account.lease_until = 0.0
                self.mark(account)
            self.flush()
            self._pool.execute(sql.RELEASE_ALL, self._params())
        except StoreUnavailableError as exc:
            log.warning(
                "could not write %d channel(s) nor release their leases (they expire in %g s): %s",
                len(held),
                self.lease,
                exc,
            )
        finally:
            self._drop(held)
