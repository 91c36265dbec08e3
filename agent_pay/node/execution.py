"""Running a transaction against a mined block's state without mining it: what `eth_call`
answers, and how the EVM's failures read as JSON-RPC errors (`eth_call`, `eth_estimateGas`)."""

from __future__ import annotations

from typing import Any

from eth.vm.spoof import SpoofTransaction

from agent_pay.chain.base import decode_revert_reason
from agent_pay.chain.embedded import EmbeddedChain, MinedBlock
from agent_pay.node.jsonrpc import RpcFailure, as_address, as_bytes, as_quantity, to_hex

__all__ = ["ZERO_ADDRESS", "call", "capped_gas", "revert_failure"]

ZERO_ADDRESS = b"\x00" * 20


def capped_gas(tx: dict[str, Any], cap: int) -> int:
    """The gas a call or estimate runs with: what it names, at most `cap`."""
    named = tx.get("gas")
    return cap if named is None else min(as_quantity(named, "gas"), cap)


def call(chain: EmbeddedChain, tx: dict[str, Any], mined: MinedBlock, gas_cap: int) -> str:
    """The output of `tx` (a JSON-RPC call object) run on the state after `mined`, as hex.

    Raises RpcFailure: the call reverted (code 3, with its data) or the EVM failed.
    """
    vm = chain.evm.get_vm(mined.block.header)
    sender = as_address(tx["from"], "from") if tx.get("from") else ZERO_ADDRESS
    data = as_bytes(tx.get("input") or tx.get("data") or "0x")
    unsigned = vm.create_unsigned_transaction(
        nonce=vm.state.get_nonce(sender),
        gas_price=0,
        gas=capped_gas(tx, gas_cap),
        to=as_address(tx["to"], "to") if tx.get("to") else b"",
        value=as_quantity(tx.get("value", 0), "value"),
        data=data,
    )
    with vm.in_costless_state() as state:
        computation = state.costless_execute_transaction(SpoofTransaction(unsigned, from_=sender))
    if computation.is_error:
        raise _vm_failure(computation.error)
    return to_hex(computation.output)


def revert_failure(reason: str | None, data: bytes) -> RpcFailure:
    """A revert as geth answers it: code 3, "execution reverted: <reason>", the data."""
    message = f"execution reverted: {reason}" if reason else "execution reverted"
    return RpcFailure(3, message, to_hex(data))


def _vm_failure(error: BaseException) -> RpcFailure:
    data = error.args[0] if error.args and isinstance(error.args[0], bytes) else b""
    if type(error).__name__ == "Revert":
        return revert_failure(decode_revert_reason(data), data)
    return RpcFailure(-32000, type(error).__name__)
