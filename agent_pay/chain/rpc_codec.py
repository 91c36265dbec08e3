"""JSON-RPC wire values: hex quantities and data, log objects and call objects."""

from __future__ import annotations

from typing import Any

from eth_utils import to_checksum_address

from agent_pay.chain.base import ChainError, Log

__all__ = ["hex_data", "parse_bytes", "parse_int", "parse_log", "tx_object"]


def parse_log(entry: dict[str, Any]) -> Log:
    """A JSON-RPC log object as a `Log`."""
    return Log(
        address=to_checksum_address(entry["address"]),
        topics=tuple(parse_bytes(t) for t in entry["topics"]),
        data=parse_bytes(entry["data"]),
        log_index=parse_int(entry["logIndex"]),
        transaction_hash=parse_bytes(entry["transactionHash"]),
        block_number=parse_int(entry["blockNumber"]),
    )


def tx_object(to: str | None, data: bytes, sender: str | None, *, value: int = 0) -> dict[str, str]:
    """The transaction object of eth_call / eth_estimateGas."""
    tx = {"data": hex_data(data)}
    if to:
        tx["to"] = to_checksum_address(to)
    if sender:
        tx["from"] = to_checksum_address(sender)
    if value:
        tx["value"] = hex(value)
    return tx


def hex_data(data: bytes) -> str:
    """Bytes as JSON-RPC DATA: 0x-prefixed hex."""
    return "0x" + data.hex()


def parse_bytes(value: str) -> bytes:
    """JSON-RPC DATA (0x-prefixed hex, or bare hex) as bytes."""
    return bytes.fromhex(value[2:] if value[:2] in ("0x", "0X") else value)


def parse_int(value: Any) -> int:
    """A JSON-RPC QUANTITY (0x-hex; decimal strings and ints accepted) as an int."""
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        return int(value, 16) if value[:2] in ("0x", "0X") else int(value)
    raise ChainError(f"expected a quantity, got {value!r}")
