"""Ground for testing a `Chain` backend: a tiny contract that stores, logs and reverts, and raw
signed transactions with any field overridden.

    tiny = compile_tiny()
    contract = deploy_contract(Transactor(chain, dev_signer(0)), tiny.abi, tiny.bytecode, False)
    chain.send_raw_transaction(signed_transfer(account, chain, nonce=99))   # a nonce gap
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import vyper
from eth_account.signers.local import LocalAccount
from vyper.compiler.settings import Settings

from agent_pay.chain.base import Chain
from agent_pay.chain.devkeys import dev_account

__all__ = ["TINY_CONTRACT", "CompiledContract", "compile_tiny", "signed_transfer"]

TINY_CONTRACT = """
# pragma version ~=0.4.3

stored: public(HashMap[uint256, uint256])

event Stored:
    key: indexed(uint256)
    value: uint256
    by: address

@deploy
def __init__(fail: bool):
    assert not fail, "tiny: constructor says no"

@external
def store(key: uint256, amount: uint256):
    self.stored[key] = amount
    log Stored(key=key, value=amount, by=msg.sender)

@external
def boom():
    raise "tiny: boom"

@external
def bare(x: uint256):
    assert x > 100  # no reason string: the revert carries no data

@external
@view
def positive(x: uint256) -> uint256:
    assert x > 0, "tiny: not positive"
    return x

@external
@view
def pair(x: uint256) -> (uint256, address):
    return x * 2, msg.sender
"""
"""Its constructor reverts when asked to (`fail`); `store` writes and logs; `boom` reverts with
a reason, `bare` without one; the views return one value, a tuple, or revert."""


@dataclass(frozen=True)
class CompiledContract:
    abi: list[dict[str, Any]]
    bytecode: bytes
    storage_layout: dict[str, Any]


def compile_tiny() -> CompiledContract:
    """`TINY_CONTRACT` compiled for prague (about a second: compile it once per module)."""
    out = vyper.compile_code(
        TINY_CONTRACT,
        output_formats=["abi", "bytecode", "layout"],
        settings=Settings(evm_version="prague"),
    )
    bytecode = bytes.fromhex(out["bytecode"].removeprefix("0x"))
    return CompiledContract(out["abi"], bytecode, out["layout"]["storage_layout"])


def signed_transfer(account: LocalAccount, chain: Chain, **overrides: Any) -> bytes:
    """A raw signed EIP-1559 transfer of 1 wei to dev account 9 at the account's next nonce,
    with any field overridden."""
    max_fee, priority_fee = chain.fee_params()
    tx: dict[str, Any] = {
        "type": 2,
        "chainId": chain.chain_id,
        "nonce": chain.get_nonce(account.address),
        "to": dev_account(9).address,
        "value": 1,
        "data": b"",
        "gas": 21_000,
        "maxFeePerGas": max_fee,
        "maxPriorityFeePerGas": priority_fee,
    }
    tx.update(overrides)
    return bytes(account.sign_transaction(tx).raw_transaction)
