"""The node's data directory: its genesis and every mined block, so a restart restores the chain.

    <dir>/genesis.json     chain id, genesis timestamp, funded accounts: what builds block 0
    <dir>/blocks.jsonl     one line per mined block: number, timestamp, hash, raw transactions
    <dir>/LOCK             held while a node runs, so two nodes never write one directory

The chain is deterministic: the same genesis and the same transactions at the same timestamps
give the same blocks, hash for hash. Restoring is replaying `blocks.jsonl`, and every replayed
block is checked against its recorded hash. A block is appended (and flushed to the OS) before
its receipt is served, so a client never sees a payment the node could forget; a line torn by a
crash mid-write is dropped on the next start (its block was never confirmed to anyone).
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

__all__ = ["BlockRecord", "DataDir", "DataDirError", "Genesis"]

FORMAT_VERSION = 1


class DataDirError(Exception):
    """The data directory is unusable: locked by another node, corrupt, or from another format."""


@dataclass(frozen=True, slots=True)
class Genesis:
    """What block 0 is made of."""

    chain_id: int
    timestamp: int
    funded: tuple[str, ...]
    funds: int

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT_VERSION,
            "chainId": self.chain_id,
            "timestamp": self.timestamp,
            "funded": list(self.funded),
            "funds": str(self.funds),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Genesis:
        if data.get("format") != FORMAT_VERSION:
            raise DataDirError(f"genesis format {data.get('format')!r}, expected {FORMAT_VERSION}")
        return cls(
            chain_id=int(data["chainId"]),
            timestamp=int(data["timestamp"]),
            funded=tuple(str(a) for a in data["funded"]),
            funds=int(data["funds"]),
        )


@dataclass(frozen=True, slots=True)
class BlockRecord:
    """One mined block as written down: enough to mine it again."""

    number: int
    timestamp: int
    hash: bytes
    transactions: tuple[bytes, ...]  # signed raw transactions, in block order

    def to_line(self) -> str:
        record = {
            "n": self.number,
            "t": self.timestamp,
            "h": "0x" + self.hash.hex(),
            "txs": ["0x" + raw.hex() for raw in self.transactions],
        }
        return json.dumps(record, separators=(",", ":")) + "\n"

    @classmethod
    def from_line(cls, line: str) -> BlockRecord:
        data = json.loads(line)
        return cls(
            number=int(data["n"]),
            timestamp=int(data["t"]),
            hash=bytes.fromhex(data["h"][2:]),
            transactions=tuple(bytes.fromhex(raw[2:]) for raw in data["txs"]),
        )


class DataDir:
    """A node's data directory. Use as a context manager: it holds the directory's lock.

    Args:
        path: the directory; created if missing.
        fsync: also force each block to disk (survives power loss, not just a crash); slower.
    """

    def __init__(self, path: Path, *, fsync: bool = False) -> None:
        self.path = Path(path)
        self._fsync = fsync
        self._lock: IO[str] | None = None
        self._log: IO[str] | None = None

    def __enter__(self) -> DataDir:
        self.path.mkdir(parents=True, exist_ok=True)
        lock = (self.path / "LOCK").open("a")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            raise DataDirError(f"{self.path} is in use by another agent-pay node") from None
        self._lock = lock
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        if self._log is not None:
            self._log.flush()
            os.fsync(self._log.fileno())
            self._log.close()
            self._log = None
        if self._lock is not None:
            fcntl.flock(self._lock, fcntl.LOCK_UN)
            self._lock.close()
            self._lock = None

    @property
    def _genesis_file(self) -> Path:
        return self.path / "genesis.json"

    @property
    def _blocks_file(self) -> Path:
        return self.path / "blocks.jsonl"

    def is_new(self) -> bool:
        """True if no chain was ever started here."""
        return not self._genesis_file.exists()

    def write_genesis(self, genesis: Genesis) -> None:
        if not self.is_new():
            raise DataDirError(f"{self.path} already holds a chain")
        temporary = self._genesis_file.with_suffix(".tmp")
        temporary.write_text(json.dumps(genesis.to_json(), indent=2) + "\n", encoding="utf-8")
        temporary.replace(self._genesis_file)  # atomic: a genesis is there whole or not at all

    def read_genesis(self) -> Genesis:
        try:
            return Genesis.from_json(json.loads(self._genesis_file.read_text(encoding="utf-8")))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise DataDirError(f"cannot read {self._genesis_file}: {exc}") from exc

    def read_blocks(self) -> Iterator[BlockRecord]:
        """Every recorded block in order. A torn last line (a crash mid-write) is cut off."""
        if not self._blocks_file.exists():
            return
        good_bytes = 0
        with self._blocks_file.open("rb") as log:
            for number, raw in enumerate(log, start=1):
                if not raw.endswith(b"\n"):
                    break  # torn: written partially when the node died
                try:
                    record = BlockRecord.from_line(raw.decode("utf-8"))
                except (ValueError, KeyError, TypeError) as exc:
                    raise DataDirError(f"{self._blocks_file} line {number} is corrupt") from exc
                good_bytes += len(raw)
                yield record
        if good_bytes < self._blocks_file.stat().st_size:
            with self._blocks_file.open("r+b") as log:
                log.truncate(good_bytes)

    def append(self, record: BlockRecord) -> None:
        """Write one block down (flushed to the OS; to disk as well with `fsync`)."""
        if self._log is None:
            self._log = self._blocks_file.open("a", encoding="utf-8")
        self._log.write(record.to_line())
        self._log.flush()
        if self._fsync:
            os.fsync(self._log.fileno())
