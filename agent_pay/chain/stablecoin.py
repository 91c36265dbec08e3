"""The EIP-3009 stablecoin on any `Chain`: deploy, mint, read, and settle authorizations.

Two stablecoins are deployed by default: a dollar one and a yuan one (the original pay-per-read
idea priced a read at 0.1 yuan). Both have 6 decimals, as USDC does.

The two reads every payment needs, `balance_of` and `authorization_state`, read the token's
storage directly (`eth_getStorageAt`) when the code at its address is the contract we compile:
on the embedded chain that is several times cheaper than running the getter in the EVM. Where
the slots come from is the compiler's storage layout, never a number written here; for any other
token (one we did not compile, or compiled from other sources) the reads are `eth_call`s.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from eth_abi import encode as abi_encode

from agent_pay.assets import Asset
from agent_pay.chain.base import Chain, Receipt
from agent_pay.chain.compiler import CompiledContract, compile_contract, hashmap_slot
from agent_pay.chain.contract import Contract, Transactor, deploy_contract
from agent_pay.protocol.networks import caip2

__all__ = [
    "DEFAULT_STABLECOINS",
    "TRANSFER_WITH_AUTHORIZATION_GAS",
    "Stablecoin",
    "StablecoinSpec",
    "StorageSlots",
    "deploy_stablecoins",
]

TRANSFER_WITH_AUTHORIZATION_GAS = 120_000
"""Gas limit for one settlement. Measured 64.5k (81.5k to a new holder); a fixed limit skips a
gas estimation round trip per payment, and unused gas is not charged."""


@dataclass(frozen=True, slots=True)
class StablecoinSpec:
    """What to deploy: ERC-20 metadata and the EIP-712 domain the token signs under."""

    name: str
    symbol: str
    decimals: int = 6
    eip712_version: str = "1"


DEFAULT_STABLECOINS = (
    StablecoinSpec("Agent Dollar", "USDX"),
    StablecoinSpec("Agent Yuan", "CNYX"),
)


@dataclass(frozen=True, slots=True)
class StorageSlots:
    """Where a token compiled by us keeps balances and EIP-3009 authorization states."""

    balances: int  # HashMap[address, uint256]
    authorizations: int  # HashMap[address, HashMap[bytes32, bool]]

    @classmethod
    def of(cls, compiled: CompiledContract, code: bytes) -> StorageSlots | None:
        """The slots, if `code` (what is deployed) is `compiled`'s runtime code (followed by its
        immutables) and the layout names both variables; else None."""
        if not code.startswith(compiled.runtime_bytecode):
            return None
        balances = compiled.storage_slot("balanceOf", "HashMap[address, uint256]")
        authorizations = compiled.storage_slot(
            "_authorization_states", "HashMap[address, HashMap[bytes32, bool]]"
        )
        if balances is None or authorizations is None:
            return None
        return cls(balances, authorizations)


class Stablecoin:
    """A deployed stablecoin: an `Asset` plus the calls settlement and tooling need.

    With `slots` (what `at` and `deploy` find for a token we compiled), balances and
    authorization states are read from storage; without, by calling the token's getters.
    """

    def __init__(self, contract: Contract, asset: Asset, slots: StorageSlots | None = None) -> None:
        self.contract = contract
        self.asset = asset
        self.slots = slots

    def __repr__(self) -> str:
        return f"Stablecoin({self.asset.symbol} at {self.asset.address})"

    @property
    def chain(self) -> Chain:
        return self.contract.chain

    @property
    def address(self) -> str:
        return self.contract.address

    @classmethod
    def deploy(cls, owner: Transactor, spec: StablecoinSpec) -> Stablecoin:
        """Deploy a new token whose owner (the only minter) is `owner`."""
        compiled = compile_contract("Stablecoin")
        contract = deploy_contract(
            owner,
            compiled.abi,
            compiled.bytecode,
            spec.name,
            spec.symbol,
            spec.decimals,
            spec.name,
            spec.eip712_version,
        )
        return cls.at(owner.chain, contract.address)

    @classmethod
    def at(cls, chain: Chain, address: str) -> Stablecoin:
        """Attach to a deployed token, reading its metadata and EIP-712 domain from the chain."""
        compiled = compile_contract("Stablecoin")
        contract = Contract(chain, address, compiled.abi)
        _fields, name, version, chain_id, _verifying, _salt, _ext = contract.call("eip712Domain")
        if chain_id != chain.chain_id:
            raise ValueError(f"token domain says chain {chain_id}, the node says {chain.chain_id}")
        asset = Asset(
            network=caip2(chain.chain_id),
            address=contract.address,
            symbol=contract.call("symbol"),
            decimals=contract.call("decimals"),
            eip712_name=name,
            eip712_version=version,
        )
        return cls(contract, asset, StorageSlots.of(compiled, chain.get_code(contract.address)))

    # -- reads

    def balance_of(self, address: str) -> int:
        if self.slots is None:
            return int(self.contract.call("balanceOf", address))
        key = abi_encode(["address"], [address])  # validates as the call would
        return self.chain.get_storage_at(self.address, hashmap_slot(self.slots.balances, key))

    def total_supply(self) -> int:
        return int(self.contract.call("totalSupply"))

    def authorization_state(self, authorizer: str, nonce: bytes) -> bool:
        """True once the authorization with `nonce` was used or cancelled."""
        if self.slots is None:
            return bool(self.contract.call("authorizationState", authorizer, nonce))
        keys = abi_encode(["address", "bytes32"], [authorizer, nonce])
        slot = hashmap_slot(self.slots.authorizations, keys[:32], keys[32:])
        return self.chain.get_storage_at(self.address, slot) != 0

    # -- writes

    def mint(self, owner: Transactor, to: str, amount: int) -> Receipt:
        return self.contract.transact(owner, "mint", to, amount, gas=100_000)

    def mint_many(self, owner: Transactor, grants: Iterable[tuple[str, int]]) -> list[Receipt]:
        """Mint to many holders with one batch of transactions (one block on the embedded chain)."""
        hashes = [
            owner.send(self.address, self.contract.encode("mint", to, amount), gas=100_000)
            for to, amount in grants
        ]
        receipts = [self.chain.wait_for_receipt(h) for h in hashes]
        failed = [r for r in receipts if not r.status]
        if failed:
            raise RuntimeError(f"{len(failed)} mint(s) reverted: {failed[0].revert_reason}")
        return receipts

    def transfer_with_authorization_data(
        self,
        from_: str,
        to: str,
        value: int,
        valid_after: int,
        valid_before: int,
        nonce: bytes,
        signature: bytes,
    ) -> bytes:
        """Calldata for USDC's `transferWithAuthorization(..., v, r, s)`."""
        if len(signature) != 65:
            raise ValueError("signature must be 65 bytes")
        r, s, v = signature[:32], signature[32:64], signature[64]
        return self.contract.encode(
            "transferWithAuthorization", from_, to, value, valid_after, valid_before, nonce, v, r, s
        )

    def transfers(self, receipt: Receipt) -> list[dict[str, Any]]:
        """The Transfer events this token emitted in `receipt`."""
        return self.contract.events(receipt, "Transfer")


def deploy_stablecoins(
    owner: Transactor, specs: Sequence[StablecoinSpec] = DEFAULT_STABLECOINS
) -> dict[str, Stablecoin]:
    """Deploy each spec; return the tokens by symbol."""
    return {spec.symbol: Stablecoin.deploy(owner, spec) for spec in specs}
