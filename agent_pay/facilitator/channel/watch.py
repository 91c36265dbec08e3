"""The payee's cached view of its channels on chain, refreshed in the background.

Checking a voucher must not read the chain, yet a channel's deposit and status do change on
chain: a top-up raises the deposit, the payer's `request_close` starts the grace period, a
withdrawal or the payee's close ends it. Each of these emits an event naming the channel, so
`ChannelWatch` polls the channel contract's logs every `interval` seconds and re-reads only the
channels they name (plus, every `full_interval` seconds, every channel still open, in case a
node dropped logs). A channel whose payer asked to close is reported at once (`on_closing`),
so that the settler claims it within the grace period.

Reads racing a close: between the payer's `request_close` and the next poll, at most
`interval` seconds, the server may still accept vouchers. Those are claimable (the contract
takes claims until the payer withdraws, after the grace period), so nothing is lost as long as
the grace period comfortably exceeds `interval` plus a claim's confirmation time.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from typing import Final

from eth_utils import keccak

from agent_pay.chain.base import ChainError
from agent_pay.chain.channel import ChannelManager, ChannelStatus
from agent_pay.facilitator.channel.book import ChannelAccount

__all__ = ["DEFAULT_REFRESH_INTERVAL", "ChannelWatch"]

log = logging.getLogger(__name__)

DEFAULT_REFRESH_INTERVAL: Final = 1.0
_FULL_INTERVAL: Final = 30.0
_TROUBLE = (ChainError, OSError, TimeoutError)
_CLOSE_REQUESTED: Final = keccak(text="CloseRequested(bytes32,uint256)")


class ChannelWatch:
    """Polls the channel contract's events and refreshes the accounts they concern.

    Args:
        manager: the channel contract.
        accounts: the live map of channel id -> account (read, never changed, here).
        on_change: called with each account whose terms changed.
        on_closing: called with each account whose payer asked to close.
    """

    def __init__(
        self,
        manager: ChannelManager,
        accounts: Mapping[bytes, ChannelAccount],
        *,
        on_change: Callable[[ChannelAccount], None],
        on_closing: Callable[[ChannelAccount], None],
        interval: float = DEFAULT_REFRESH_INTERVAL,
        full_interval: float = _FULL_INTERVAL,
    ) -> None:
        self.manager = manager
        self.accounts = accounts
        self.on_change = on_change
        self.on_closing = on_closing
        self.interval = interval
        self.full_interval = full_interval
        self._cursor: int | None = None  # last block whose logs were read
        self._since_full = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # one poll at a time

    def poll(self, *, full: bool = False) -> int:
        """Read the logs since the last poll and refresh the channels they name (every open
        channel when `full`); return how many accounts changed. Raises ChainError on trouble."""
        with self._lock:
            chain = self.manager.chain
            head = chain.block_number()
            start = head if self._cursor is None else self._cursor + 1
            named: set[bytes] = set()
            closing: set[bytes] = set()
            if start <= head:
                for entry in chain.get_logs(self.manager.address, from_block=start, to_block=head):
                    if len(entry.topics) < 2:
                        continue
                    named.add(entry.topics[1])
                    if entry.topics[0] == _CLOSE_REQUESTED:
                        closing.add(entry.topics[1])
            self._cursor = head
            if full:
                named.update(
                    cid for cid, a in list(self.accounts.items()) if a.status < ChannelStatus.CLOSED
                )
            changed = 0
            for channel_id in named:
                account = self.accounts.get(channel_id)
                if account is None:
                    continue
                if self._refresh(account):
                    changed += 1
                if channel_id in closing or account.status is ChannelStatus.CLOSING:
                    self.on_closing(account)
            return changed

    def _refresh(self, account: ChannelAccount) -> bool:
        state = self.manager.channel(account.channel_id)
        if state.status is ChannelStatus.NONE:
            return False
        if not account.refresh(state):
            return False
        self.on_change(account)
        return True

    # -- background

    def start(self) -> None:
        """Poll every `interval` seconds in a daemon thread (idempotent)."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._run, name="agent-pay-channel-watch", daemon=True
        )
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._since_full += self.interval
            full = self._since_full >= self.full_interval
            try:
                self.poll(full=full)
            except _TROUBLE as exc:
                log.warning("channel watch: cannot read the chain (%s); retrying", exc)
                continue
            except Exception:
                log.exception("channel watch failed; retrying")
                continue
            if full:
                self._since_full = 0.0

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
