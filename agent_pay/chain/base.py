"""The one chain interface every backend implements, and the values it hands back.

Two backends implement `Chain`: the embedded py-evm chain (`EmbeddedChain`, the default) and any
Ethereum JSON-RPC node. Higher layers (settlement, the CLI, the test toolkit) see only this
protocol, so the same code runs on a laptop and against a real node.

The interface is synchronous and thread-safe: the server calls it from worker threads. It is
deliberately small — what settlement and deployment need, not all of JSON-RPC.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from eth_abi import decode as abi_decode

__all__ = [
    "Chain",
    "ChainError",
    "ContractRevertError",
    "Log",
    "Receipt",
    "TransactionRejectedError",
    "decode_revert_reason",
]

_ERROR_STRING_SELECTOR = bytes.fromhex("08c379a0")  # Error(string)


class ChainError(Exception):
    """Root of the chain layer's errors."""


class TransactionRejectedError(ChainError):
    """The node refused to accept a transaction (bad nonce, no gas money, bad signature)."""


class ContractRevertError(ChainError):
    """A call or transaction reverted; `reason` is the decoded revert string when there is one."""

    def __init__(self, reason: str | None, data: bytes = b"") -> None:
        super().__init__(reason or "execution reverted")
        self.reason = reason
        self.data = data


def decode_revert_reason(data: bytes) -> str | None:
    """Decode an `Error(string)` revert payload; None when the payload is anything else."""
    if data[:4] != _ERROR_STRING_SELECTOR:
        return None
    try:
        (reason,) = abi_decode(["string"], data[4:])
    except Exception:  # malformed payloads come from untrusted contracts: never raise here
        return None
    return str(reason)


@dataclass(frozen=True, slots=True)
class Log:
    """One event log as a node reports it."""

    address: str  # checksum address of the emitting contract
    topics: tuple[bytes, ...]
    data: bytes
    log_index: int = 0
    transaction_hash: bytes = b""  # the transaction that emitted it (b"" if not known)
    block_number: int = 0  # the block it was mined in


@dataclass(frozen=True, slots=True)
class Receipt:
    """The outcome of a mined transaction."""

    tx_hash: bytes
    block_number: int
    block_timestamp: int
    status: bool  # True: success; False: reverted (gas was still paid)
    gas_used: int
    sender: str
    to: str | None
    contract_address: str | None = None
    logs: tuple[Log, ...] = field(default_factory=tuple)
    revert_reason: str | None = None

    @property
    def tx_hash_hex(self) -> str:
        return "0x" + self.tx_hash.hex()


@runtime_checkable
class Chain(Protocol):
    """What agent-pay needs from an EVM chain. Addresses are checksum strings."""

    @property
    def chain_id(self) -> int: ...

    def block_number(self) -> int:
        """Number of the latest mined block."""
        ...

    def latest_timestamp(self) -> int:
        """Timestamp of the latest mined block (what `block.timestamp` saw last)."""
        ...

    def next_timestamp(self) -> int:
        """The timestamp the next block is expected to carry (validity windows are checked
        against it)."""
        ...

    def get_balance(self, address: str) -> int:
        """Native (gas) balance in wei."""
        ...

    def get_nonce(self, address: str) -> int:
        """Next nonce for `address`, counting transactions already accepted but not mined."""
        ...

    def get_code(self, address: str) -> bytes: ...

    def get_storage_at(self, address: str, slot: int) -> int:
        """The 32-byte word in storage `slot` of `address` at the latest block, as an unsigned
        integer (0 for a slot never written), as `eth_getStorageAt` reads it."""
        ...

    def call(self, to: str, data: bytes, sender: str | None = None) -> bytes:
        """Execute a read-only call against the latest block; raise ContractRevertError."""
        ...

    def estimate_gas(self, to: str | None, data: bytes, sender: str, value: int = 0) -> int: ...

    def fee_params(self) -> tuple[int, int]:
        """(max_fee_per_gas, max_priority_fee_per_gas) that will get a transaction mined."""
        ...

    def send_raw_transaction(self, raw: bytes) -> bytes:
        """Submit a signed transaction; return its hash. Raise TransactionRejectedError."""
        ...

    def get_receipt(self, tx_hash: bytes) -> Receipt | None:
        """The receipt if mined, else None."""
        ...

    def wait_for_receipt(self, tx_hash: bytes, timeout: float = 30.0) -> Receipt:
        """Block until the transaction is mined; raise TimeoutError after `timeout` seconds."""
        ...

    def get_logs(
        self,
        address: str,
        topics: Sequence[bytes | None] = (),
        from_block: int = 0,
        to_block: int | None = None,
    ) -> list[Log]:
        """Logs `address` emitted in blocks `from_block`..`to_block` (inclusive; None: the
        latest), oldest first, as `eth_getLogs` returns them.

        `topics` matches by position: `topics[i]` must equal the log's i-th topic, None matches
        anything, and a log with fewer topics than given does not match. Every returned `Log`
        carries its `transaction_hash` and `block_number`.
        """
        ...
