"""What a node says about fees: the suggested priority fee and `eth_feeHistory`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from agent_pay.chain.embedded import MinedBlock
from agent_pay.node.index import priority_fee_percentiles
from agent_pay.node.jsonrpc import INVALID_PARAMS, RpcFailure

__all__ = ["PRIORITY_FEE", "fee_history"]

PRIORITY_FEE = 10**9  # what eth_maxPriorityFeePerGas suggests: 1 gwei, as anvil


def fee_history(
    blocks: Sequence[MinedBlock], next_base_fee: int, percentiles: Any
) -> dict[str, Any]:
    """`eth_feeHistory` over `blocks` (consecutive, oldest first), the block after them paying
    `next_base_fee`; with the priority fees at `percentiles` of each block's gas.

    Raises RpcFailure: `percentiles` is not an increasing list of numbers in [0, 100].
    """
    if (
        not isinstance(percentiles, list)
        or not all(_is_percentile(p) for p in percentiles)
        or sorted(percentiles) != percentiles
    ):
        raise RpcFailure(INVALID_PARAMS, "reward percentiles must be increasing numbers")
    result: dict[str, Any] = {
        "oldestBlock": hex(blocks[0].number),
        "baseFeePerGas": [hex(b.block.header.base_fee_per_gas) for b in blocks]
        + [hex(next_base_fee)],
        "gasUsedRatio": [b.block.header.gas_used / b.block.header.gas_limit for b in blocks],
        "baseFeePerBlobGas": ["0x1"] * (len(blocks) + 1),
        "blobGasUsedRatio": [0.0] * len(blocks),
    }
    if percentiles:
        result["reward"] = [priority_fee_percentiles(b, percentiles) for b in blocks]
    return result


def _is_percentile(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value <= 100
