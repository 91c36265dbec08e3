"""The EIP-3009 stablecoin on any `Chain`: deploy, mint, read, and settle authorizations.

Two stablecoins are deployed by default: a dollar one and a yuan one (the original pay-per-read
idea priced a read at 0.1 yuan). Both have 6 decimals, as USDC does.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from agent_pay.assets import Asset
from agent_pay.chain.base import Chain, Receipt
from agent_pay.chain.compiler import compile_contract
from agent_pay.chain.contract import Contract, Transactor, deploy_contract
from agent_pay.protocol.networks import caip2

__all__ = [
    "DEFAULT_STABLECOINS",
    "TRANSFER_WITH_AUTHORIZATION_GAS",
    "Stablecoin",
    "StablecoinSpec",
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


class Stablecoin:
    """A deployed stablecoin: an `Asset` plus the calls settlement and tooling need."""

    def __init__(self, contract: Contract, asset: Asset) -> None:
        self.contract = contract
        self.asset = asset

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
        contract = Contract(chain, address, compile_contract("Stablecoin").abi)
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
        return cls(contract, asset)

    # -- reads

    def balance_of(self, address: str) -> int:
        return int(self.contract.call("balanceOf", address))

    def total_supply(self) -> int:
        return int(self.contract.call("totalSupply"))

    def authorization_state(self, authorizer: str, nonce: bytes) -> bool:
        """True once the authorization with `nonce` was used or cancelled."""
        return bool(self.contract.call("authorizationState", authorizer, nonce))

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
