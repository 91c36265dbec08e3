"""What the embedded chain makes of a block py-evm mined: our receipts and logs, the block as
reported to `on_block`, and the pool's small rules (what fits in a block, the calldata floor,
revert reasons)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from eth.abc import SignedTransactionAPI
from eth_utils import to_checksum_address

from agent_pay.chain.base import ContractRevertError, Log, Receipt, decode_revert_reason

__all__ = ["MinedBlock", "block_receipts", "calldata_floor", "fitting", "revert_error"]


@dataclass(frozen=True, slots=True)
class MinedBlock:
    """A block just mined, as `EmbeddedChain(on_block=...)` reports it.

    `block` and `evm_receipts` are py-evm objects (header, transactions; cumulative gas, bloom);
    `receipts` are ours, in the same order as the block's transactions.
    """

    block: Any
    evm_receipts: tuple[Any, ...]
    receipts: tuple[Receipt, ...]

    @property
    def number(self) -> int:
        return int(self.block.header.block_number)

    @property
    def timestamp(self) -> int:
        return int(self.block.header.timestamp)

    @property
    def hash(self) -> bytes:
        return bytes(self.block.header.hash)

    def raw_transactions(self) -> list[bytes]:
        """The block's transactions as signed raw bytes (what `replay_block` takes)."""
        return [bytes(tx.encode()) for tx in self.block.transactions]


def block_receipts(
    header: Any,
    batch: Sequence[SignedTransactionAPI],
    receipts: Sequence[Any],
    computations: Sequence[Any],
) -> list[Receipt]:
    """Our receipts (with their logs, numbered across the block) for a block py-evm just mined."""
    log_index = 0
    cumulative_gas = 0  # py-evm receipts carry cumulative gas; ours carry each tx's own
    ours: list[Receipt] = []
    for tx, evm_receipt, computation in zip(batch, receipts, computations, strict=True):
        gas_used = int(evm_receipt.gas_used) - cumulative_gas
        cumulative_gas = int(evm_receipt.gas_used)
        logs = []
        for entry in evm_receipt.logs:
            logs.append(
                Log(
                    address=to_checksum_address(entry.address),
                    topics=tuple(t.to_bytes(32, "big") for t in entry.topics),
                    data=bytes(entry.data),
                    log_index=log_index,
                    transaction_hash=bytes(tx.hash),
                    block_number=int(header.block_number),
                )
            )
            log_index += 1
        created = None
        if not tx.to:  # a CREATE: the new contract is the message's storage address
            created = to_checksum_address(computation.msg.storage_address)
        error = computation.error if computation.is_error else None
        receipt = Receipt(
            tx_hash=bytes(tx.hash),
            block_number=int(header.block_number),
            block_timestamp=int(header.timestamp),
            status=not computation.is_error,
            gas_used=gas_used,
            sender=to_checksum_address(tx.sender),
            to=to_checksum_address(tx.to) if tx.to else None,
            contract_address=created if not computation.is_error else None,
            logs=tuple(logs),
            revert_reason=revert_error(error).reason if error is not None else None,
        )
        ours.append(receipt)
    return ours


def fitting(pending: list[SignedTransactionAPI], gas_limit: int) -> list[SignedTransactionAPI]:
    """The longest prefix of `pending` whose gas limits fit in one block."""
    total = 0
    for index, tx in enumerate(pending):
        total += tx.gas
        if total > gas_limit:
            return pending[:index]
    return list(pending)


def calldata_floor(data: bytes) -> int:
    zeros = data.count(0)
    return 21_000 + 10 * (zeros + 4 * (len(data) - zeros))


def revert_error(error: BaseException | None) -> ContractRevertError:
    data = b""
    if error is not None and error.args and isinstance(error.args[0], bytes):
        data = error.args[0]
    reason = decode_revert_reason(data)
    if reason is None and error is not None and not data:
        reason = type(error).__name__  # e.g. OutOfGas, InvalidInstruction
    return ContractRevertError(reason, data)
