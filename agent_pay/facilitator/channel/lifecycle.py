"""The channel handler's background parts, started and stopped in order: the store's writer,
the chain watch (`ChannelWatch`), the settler (`ChannelSettler`)."""

from __future__ import annotations

import logging

from agent_pay.facilitator.channel.accounts import TROUBLE
from agent_pay.facilitator.channel.persistence import ChannelPersistence
from agent_pay.facilitator.channel.settler import ChannelSettler
from agent_pay.facilitator.channel.watch import ChannelWatch

__all__ = ["ChannelBackground"]

log = logging.getLogger(__name__)


class ChannelBackground:
    """Starts `store`, `watch` and `settler`; stops them in the reverse order of need: no more
    chain events, one last claim round, then the store written."""

    def __init__(
        self, store: ChannelPersistence, watch: ChannelWatch, settler: ChannelSettler
    ) -> None:
        self.store = store
        self.watch = watch
        self.settler = settler
        self._started = False
        self._closed = False

    def start(self) -> None:
        """Start the store's writer, the chain watch and the settler. Idempotent."""
        if self._started:
            return
        self._started = True
        self.store.start()
        try:
            self.watch.poll()  # sets the log cursor; a failure here is retried by the thread
        except TROUBLE as exc:
            log.warning("channel watch: first poll failed (%s)", exc)
        self.watch.start()
        self.settler.start()

    def close(self) -> None:
        """Stop watching, claim everything still due (one last round), write the store.
        Idempotent; the parts cannot be started again."""
        if self._closed:
            return
        self._closed = True
        self.watch.close()
        self.settler.close(final_round=True)
        self.store.close()
