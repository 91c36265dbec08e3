"""The embedded chain's logs, by emitting contract and in mining order, for `get_logs`."""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence

from eth_utils import to_checksum_address

from agent_pay.chain.base import Log

__all__ = ["LogIndex"]


class LogIndex:
    """Every log mined, by the address that emitted it. Written by one miner at a time; read
    by anyone (appends only at the end, so a slice is a consistent view)."""

    def __init__(self) -> None:
        self._by_address: dict[str, list[Log]] = {}

    def add(self, logs: Iterable[Log]) -> None:
        """Index `logs`, mined after every log already indexed."""
        for log in logs:
            self._by_address.setdefault(log.address, []).append(log)

    def find(
        self, address: str, topics: Sequence[bytes | None], from_block: int, to_block: int
    ) -> list[Log]:
        """The logs `address` emitted in blocks [from_block, to_block] whose leading topics
        are `topics` (None matches any)."""
        logs = self._by_address.get(to_checksum_address(address), [])
        start = bisect.bisect_left(logs, from_block, key=lambda log: log.block_number)
        found = []
        for log in logs[start:]:
            if log.block_number > to_block:
                break
            if len(log.topics) >= len(topics) and all(
                want is None or want == have for want, have in zip(topics, log.topics, strict=False)
            ):
                found.append(log)
        return found
