"""The node's index of mined blocks, and their JSON-RPC shapes (blocks, transactions, receipts,
logs) as geth and anvil write them: quantities as 0x-hex, data as 0x-hex, addresses lower-case.

The index is fed by `EmbeddedChain(on_block=...)` from the mining thread and read by request
handlers in others without a lock: a block is appended before its transactions are indexed, so
a receipt is never served for a block that `eth_blockNumber` does not show yet.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import rlp
from eth_abi import encode as abi_encode
from eth_utils import is_address, to_checksum_address

from agent_pay.chain.embedded import MinedBlock

__all__ = [
    "BlockIndex",
    "block_json",
    "collect_logs",
    "effective_gas_price",
    "log_json",
    "log_matcher",
    "priority_fee_percentiles",
    "receipt_json",
    "transaction_json",
]

_ERROR_STRING = bytes.fromhex("08c379a0")
_ZERO32 = "0x" + "00" * 32
_EMPTY_UNCLES = "0x1dcc4de8dec75d7aab85b567b6ccd41ad312451b948a7413f0a142fd40d49347"


def _hex(data: bytes) -> str:
    return "0x" + bytes(data).hex()


def _address(canonical: bytes) -> str:
    return "0x" + bytes(canonical).hex()


class BlockIndex:
    """Mined blocks by number and hash, and transactions by hash. Append-only."""

    def __init__(self, genesis: MinedBlock) -> None:
        self._blocks: list[MinedBlock] = [genesis]
        self._by_hash: dict[bytes, int] = {genesis.hash: 0}
        self._transactions: dict[bytes, tuple[int, int]] = {}

    def add(self, mined: MinedBlock) -> None:
        if mined.number != len(self._blocks):
            raise ValueError(f"block {mined.number} out of order (have {len(self._blocks)})")
        self._by_hash[mined.hash] = mined.number
        self._blocks.append(mined)
        for position, tx in enumerate(mined.block.transactions):
            self._transactions[bytes(tx.hash)] = (mined.number, position)

    @property
    def latest(self) -> MinedBlock:
        return self._blocks[-1]

    def by_number(self, number: int) -> MinedBlock | None:
        return self._blocks[number] if 0 <= number < len(self._blocks) else None

    def by_hash(self, block_hash: bytes) -> MinedBlock | None:
        number = self._by_hash.get(block_hash)
        return None if number is None else self._blocks[number]

    def locate(self, tx_hash: bytes) -> tuple[MinedBlock, int] | None:
        """The block holding a mined transaction and its position in it."""
        where = self._transactions.get(tx_hash)
        return None if where is None else (self._blocks[where[0]], where[1])


# -- JSON-RPC shapes -------------------------------------------------------------------------------


def effective_gas_price(tx: Any, base_fee: int) -> int:
    if tx.type_id is None or tx.type_id == 1:
        return int(tx.gas_price)
    return min(int(tx.max_fee_per_gas), base_fee + int(tx.max_priority_fee_per_gas))


def transaction_json(
    tx: Any, sender: str, mined: MinedBlock | None = None, position: int | None = None
) -> dict[str, Any]:
    """A transaction object; `mined`/`position` None for a pending one."""
    out: dict[str, Any] = {
        "hash": _hex(tx.hash),
        "nonce": hex(tx.nonce),
        "blockHash": _hex(mined.hash) if mined else None,
        "blockNumber": hex(mined.number) if mined else None,
        "transactionIndex": hex(position) if position is not None else None,
        "from": sender.lower(),
        "to": _address(tx.to) if tx.to else None,
        "value": hex(tx.value),
        "gas": hex(tx.gas),
        "input": _hex(tx.data),
        "r": hex(tx.r),
        "s": hex(tx.s),
    }
    if tx.type_id is None:  # legacy
        out.update(type="0x0", gasPrice=hex(tx.gas_price), v=hex(tx.v))
        if tx.chain_id is not None:
            out["chainId"] = hex(tx.chain_id)
        return out
    out.update(
        type=hex(tx.type_id),
        chainId=hex(tx.chain_id),
        v=hex(tx.y_parity),
        yParity=hex(tx.y_parity),
        accessList=[
            {"address": _address(a), "storageKeys": [_hex(k.to_bytes(32, "big")) for k in keys]}
            for a, keys in tx.access_list
        ],
    )
    if tx.type_id == 1:
        out["gasPrice"] = hex(tx.gas_price)
    else:
        base_fee = int(mined.block.header.base_fee_per_gas) if mined else None
        out.update(
            maxFeePerGas=hex(tx.max_fee_per_gas),
            maxPriorityFeePerGas=hex(tx.max_priority_fee_per_gas),
            gasPrice=hex(
                effective_gas_price(tx, base_fee) if base_fee is not None else tx.max_fee_per_gas
            ),
        )
    return out


def log_json(mined: MinedBlock, position: int, log_position: int) -> dict[str, Any]:
    receipt = mined.receipts[position]
    log = receipt.logs[log_position]
    return {
        "address": log.address.lower(),
        "topics": [_hex(t) for t in log.topics],
        "data": _hex(log.data),
        "blockNumber": hex(mined.number),
        "blockHash": _hex(mined.hash),
        "blockTimestamp": hex(mined.timestamp),
        "transactionHash": _hex(receipt.tx_hash),
        "transactionIndex": hex(position),
        "logIndex": hex(log.log_index),
        "removed": False,
    }


def receipt_json(mined: MinedBlock, position: int) -> dict[str, Any]:
    tx = mined.block.transactions[position]
    receipt = mined.receipts[position]
    evm_receipt = mined.evm_receipts[position]
    out: dict[str, Any] = {
        "type": hex(tx.type_id or 0),
        "status": "0x1" if receipt.status else "0x0",
        "transactionHash": _hex(receipt.tx_hash),
        "transactionIndex": hex(position),
        "blockHash": _hex(mined.hash),
        "blockNumber": hex(mined.number),
        "blockTimestamp": hex(mined.timestamp),
        "from": receipt.sender.lower(),
        "to": receipt.to.lower() if receipt.to else None,
        "contractAddress": receipt.contract_address.lower() if receipt.contract_address else None,
        "cumulativeGasUsed": hex(evm_receipt.gas_used),
        "gasUsed": hex(receipt.gas_used),
        "effectiveGasPrice": hex(effective_gas_price(tx, int(mined.block.header.base_fee_per_gas))),
        "logs": [log_json(mined, position, i) for i in range(len(receipt.logs))],
        "logsBloom": _hex(int(evm_receipt.bloom).to_bytes(256, "big")),
    }
    if receipt.revert_reason is not None:
        # As besu does: the revert data, here always an Error(string) with the decoded reason.
        out["revertReason"] = _hex(_ERROR_STRING + abi_encode(["string"], [receipt.revert_reason]))
    return out


def block_json(mined: MinedBlock, full: bool) -> dict[str, Any]:
    header = mined.block.header
    transactions: list[Any]
    if full:
        transactions = [
            transaction_json(tx, mined.receipts[i].sender, mined, i)
            for i, tx in enumerate(mined.block.transactions)
        ]
    else:
        transactions = [_hex(tx.hash) for tx in mined.block.transactions]
    return {
        "number": hex(header.block_number),
        "hash": _hex(header.hash),
        "parentHash": _hex(header.parent_hash),
        "nonce": _hex(header.nonce),
        "sha3Uncles": _hex(header.uncles_hash) if header.uncles_hash else _EMPTY_UNCLES,
        "logsBloom": _hex(int(header.bloom).to_bytes(256, "big")),
        "transactionsRoot": _hex(header.transaction_root),
        "stateRoot": _hex(header.state_root),
        "receiptsRoot": _hex(header.receipt_root),
        "miner": _address(header.coinbase),
        "difficulty": hex(header.difficulty),
        "totalDifficulty": "0x0",
        "extraData": _hex(header.extra_data),
        "size": hex(len(rlp.encode(mined.block))),
        "gasLimit": hex(header.gas_limit),
        "gasUsed": hex(header.gas_used),
        "timestamp": hex(header.timestamp),
        "mixHash": _hex(header.mix_hash),
        "baseFeePerGas": hex(header.base_fee_per_gas),
        "withdrawalsRoot": _hex(header.withdrawals_root),
        "blobGasUsed": hex(header.blob_gas_used),
        "excessBlobGas": hex(header.excess_blob_gas),
        "parentBeaconBlockRoot": _hex(header.parent_beacon_block_root or b"\x00" * 32),
        "requestsHash": _hex(header.requests_hash) if header.requests_hash else _ZERO32,
        "transactions": transactions,
        "withdrawals": [],
        "uncles": [],
    }


# -- queries ---------------------------------------------------------------------------------------


def priority_fee_percentiles(mined: MinedBlock, percentiles: list[float]) -> list[str]:
    base_fee = int(mined.block.header.base_fee_per_gas)
    tips = sorted(effective_gas_price(tx, base_fee) - base_fee for tx in mined.block.transactions)
    if not tips:
        return ["0x0"] * len(percentiles)
    return [hex(tips[min(len(tips) - 1, int(p / 100 * len(tips)))]) for p in percentiles]


def log_matcher(address: Any, topics: Any) -> Callable[[str, tuple[bytes, ...]], bool]:
    addresses: set[str] | None = None
    if address is not None:
        listed = address if isinstance(address, list) else [address]
        addresses = {_checksum(a) for a in listed}
    wanted: list[set[bytes] | None] = []
    for position in topics or []:
        if position is None:
            wanted.append(None)
        elif isinstance(position, list):
            wanted.append({_topic(t) for t in position} or None)
        else:
            wanted.append({_topic(position)})

    def match(emitter: str, log_topics: tuple[bytes, ...]) -> bool:
        if addresses is not None and emitter not in addresses:
            return False
        if len(wanted) > len(log_topics):
            return False
        return all(w is None or t in w for w, t in zip(wanted, log_topics, strict=False))

    return match


def collect_logs(
    blocks: list[MinedBlock], match: Callable[[str, tuple[bytes, ...]], bool]
) -> list[dict[str, Any]]:
    found = []
    for mined in blocks:
        for position, receipt in enumerate(mined.receipts):
            for log_position, entry in enumerate(receipt.logs):
                if match(entry.address, entry.topics):
                    found.append(log_json(mined, position, log_position))
    return found


def _checksum(value: Any) -> str:
    if not isinstance(value, str) or not is_address(value):
        raise ValueError(f"invalid address: {value!r}")
    return str(to_checksum_address(value))


def _topic(value: Any) -> bytes:
    if isinstance(value, str) and value.startswith("0x") and len(value) == 66:
        return bytes.fromhex(value[2:])
    raise ValueError(f"invalid topic: {value!r}")
