"""The embedded chain's rules and first block: Prague (through the fast VM), except that a
block may share its parent's timestamp, a 60M gas limit, and dev accounts funded at genesis.

A local chain mining hundreds of blocks a second must not run ahead of real time, or EIP-3009
validity windows (checked against `block.timestamp`) would expire early: hence the one rule
relaxed from mainnet.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from eth.abc import BlockHeaderAPI
from eth.chains.base import MiningChain
from eth.constants import POST_MERGE_DIFFICULTY, POST_MERGE_MIX_HASH, POST_MERGE_NONCE
from eth.db.atomic import AtomicDB
from eth_utils import to_canonical_address

from agent_pay.chain.evm_speed import FastPragueVM

__all__ = ["DEV_FUNDS", "GAS_LIMIT", "DevPragueVM", "dev_mining_chain"]

GAS_LIMIT = 60_000_000
"""Every block's gas limit."""
DEV_FUNDS = 10_000 * 10**18
"""What each funded account holds at genesis by default (wei)."""


class DevPragueVM(FastPragueVM):
    """Prague, except that a block may share its parent's timestamp (see module docstring).

    Executes through `agent_pay.chain.evm_speed` (same results, less interpreter overhead)."""

    @classmethod
    def validate_header(cls, header: BlockHeaderAPI, parent_header: BlockHeaderAPI) -> None:
        if parent_header is not None and header.timestamp == parent_header.timestamp:
            parent_header = parent_header.copy(timestamp=header.timestamp - 1)
        super().validate_header(header, parent_header)


def dev_mining_chain(
    chain_id: int, funded: Iterable[str], funds: int, timestamp: int
) -> Any:  # py-evm's MiningChain
    """A py-evm chain in memory, its genesis stamped `timestamp`, giving `funds` wei to each of
    `funded`; its blocks run `DevPragueVM`."""
    chain_class = MiningChain.configure(
        __name__="AgentPayDevChain",
        vm_configuration=((0, DevPragueVM),),
        chain_id=chain_id,
    )
    genesis_params: dict[str, Any] = {
        "coinbase": b"\x00" * 20,
        "difficulty": POST_MERGE_DIFFICULTY,
        "extra_data": b"agent-pay",
        "gas_limit": GAS_LIMIT,
        "mix_hash": POST_MERGE_MIX_HASH,
        "nonce": POST_MERGE_NONCE,
        "timestamp": timestamp,
    }
    genesis_state = {
        to_canonical_address(a): {"balance": funds, "nonce": 0, "code": b"", "storage": {}}
        for a in funded
    }
    return chain_class.from_genesis(AtomicDB(), genesis_params, genesis_state)
