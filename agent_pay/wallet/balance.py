"""What an address holds on a chain: native currency and each token."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from agent_pay.chain.base import Chain
from agent_pay.chain.stablecoin import Stablecoin

__all__ = ["Balances", "balances"]


@dataclass(frozen=True, slots=True)
class Balances:
    """What an address holds: native currency (wei) and each token (atomic units)."""

    address: str
    native: int
    tokens: Mapping[str, int]


def balances(chain: Chain, address: str, tokens: Mapping[str, Stablecoin]) -> Balances:
    return Balances(
        address,
        chain.get_balance(address),
        {symbol: token.balance_of(address) for symbol, token in tokens.items()},
    )
