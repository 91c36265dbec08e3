"""The agent's channels on disk: one small JSON file per channel, replaced atomically.

A channel's record holds what the agent cannot get back from anyone else — the salt it opened
the channel with and the signed deposit authorization until the channel is confirmed open —
and what it has signed on it: `top`, the highest cumulative amount it ever signed, is written
*before* the voucher is sent, so a restarted agent never signs a lower total for a range it
already signed. Where the payee's server stands (`highest`, `served`, the unpaid ranges) is
what the server last reported; a restarted agent refreshes it from the server
(`ChannelClientScheme.resume`).

Each write goes to a temporary file that replaces the record (`os.replace`), so a record is
always whole; with `fsync=True` it is also on disk before the voucher leaves.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

__all__ = ["ChannelRecord", "ClientChannelStore", "RecordStatus"]

RecordStatus = Literal["opening", "open", "exhausted", "stale", "closing", "closed", "failed"]
"""opening: deposit sent, not yet confirmed; open: usable (and being topped up while
`top_up_payload` is set); exhausted: the deposit is used up;
stale: the server refused our totals (resume from the server to use it again); closing: we
asked to close; closed: refunded (or never opened: failed)."""

_SUFFIX: Final = ".json"


@dataclass
class ChannelRecord:
    """One channel as the payer keeps it. Amounts in the token's atomic units."""

    channel_id: str  # 0x-hex
    network: str
    manager: str
    payee: str
    asset: str
    payer: str
    salt: str  # 0x-hex
    deposit: int
    status: RecordStatus = "opening"
    top: int = 0  # the highest cumulative amount signed
    highest: int = 0  # the server's highest accepted voucher, as last reported
    served: int = 0  # what the server served, as last reported
    claimed: int = 0
    unpaid: list[list[int]] = field(default_factory=list)  # (start, end] the server reported
    confirmed: int = 0  # the price of the reads the server confirmed to us
    reads: int = 0
    origin: str = ""  # the server (scheme://host:port) the channel was opened with
    open_payload: dict[str, Any] | None = None  # the deposit, until the channel is confirmed
    # A top-up signed and counted in `deposit`, sent with every voucher until the server's
    # statement shows it; `top_up_failed` once one was refused (the next channel is new).
    top_up_payload: dict[str, Any] | None = None
    top_up_amount: int = 0
    top_up_failed: bool = False
    refund: int | None = None  # what the close refunded, once known
    created_at: float = 0.0

    @property
    def key(self) -> tuple[str, str, str, str]:
        """(network, manager, payee, asset): which offers this channel can pay."""
        return (self.network, self.manager, self.payee, self.asset)

    @property
    def remaining(self) -> int:
        """What new vouchers can still add before the deposit is used up."""
        return self.deposit - self.top

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ChannelRecord:
        return cls(**data)


class ClientChannelStore:
    """Channel records under one directory (or only in memory when `directory` is None)."""

    def __init__(self, directory: Path | str | None, *, fsync: bool = False) -> None:
        self.directory = Path(directory) if directory is not None else None
        self.fsync = fsync
        self._lock = threading.Lock()
        self._records: dict[str, ChannelRecord] = {}
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)
            for path in sorted(self.directory.glob("0x*" + _SUFFIX)):
                record = ChannelRecord.from_json(json.loads(path.read_text(encoding="utf-8")))
                self._records[record.channel_id] = record

    @classmethod
    def in_memory(cls) -> ClientChannelStore:
        return cls(None)

    def __iter__(self) -> Iterator[ChannelRecord]:
        with self._lock:
            return iter(list(self._records.values()))

    def __len__(self) -> int:
        return len(self._records)

    def get(self, channel_id: str) -> ChannelRecord | None:
        return self._records.get(channel_id.lower())

    def save(self, record: ChannelRecord) -> None:
        """Write `record` (whole, atomically) and keep it."""
        record.channel_id = record.channel_id.lower()
        with self._lock:
            self._records[record.channel_id] = record
            if self.directory is None:
                return
            text = json.dumps(record.to_json(), separators=(",", ":"), sort_keys=True)
            self._write(self.directory / (record.channel_id + _SUFFIX), text)

    def _write(self, path: Path, text: str) -> None:
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=_SUFFIX)
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as out:
                out.write(text)
                if self.fsync:
                    out.flush()
                    os.fsync(out.fileno())
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
