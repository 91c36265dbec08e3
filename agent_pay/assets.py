"""Stablecoins as every role sees them: where they live, what they are called, how they sign.

Pure data, shared by the server (what it offers), the facilitator (what it settles) and the
client (what it can pay with). Amounts are integers in atomic units; `parse_amount` and
`format_amount` convert from and to human decimals exactly.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from agent_pay.protocol.base import normalize_address

__all__ = ["Asset", "AssetRegistry", "format_amount", "parse_amount"]


def parse_amount(value: str | int | Decimal, decimals: int) -> int:
    """Human amount ("0.1") to atomic units (100000 at 6 decimals), exactly or not at all."""
    if decimals < 0:
        raise ValueError(f"decimals must be >= 0, got {decimals}")
    try:
        amount = Decimal(value) if not isinstance(value, Decimal) else value
    except (InvalidOperation, ValueError) as exc:
        raise ValueError(f"not a number: {value!r}") from exc
    if not amount.is_finite() or amount < 0:
        raise ValueError(f"amount must be a finite non-negative number, got {value!r}")
    # Exact rational arithmetic: Decimal arithmetic would round to the context's 28 digits.
    numerator, denominator = amount.as_integer_ratio()
    scale: int = 10**decimals
    atomic, rest = divmod(numerator * scale, denominator)
    if rest:
        raise ValueError(f"{value} is finer than {decimals} decimals allow")
    return atomic


def format_amount(atomic: int, decimals: int) -> str:
    """Atomic units to a human decimal string without trailing zeros ("0.1")."""
    text = f"{Decimal(atomic).scaleb(-decimals):f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


@dataclass(frozen=True, slots=True)
class Asset:
    """An EIP-3009 stablecoin on one network."""

    network: str  # CAIP-2, e.g. "eip155:31337"
    address: str  # checksum
    symbol: str
    decimals: int
    eip712_name: str  # the token's EIP-712 domain: x402 carries it in `extra`
    eip712_version: str

    def __post_init__(self) -> None:
        # Rejects a mixed-case address with a wrong EIP-55 checksum: most likely a typo.
        object.__setattr__(self, "address", normalize_address(self.address))

    @property
    def chain_id(self) -> int:
        namespace, _, reference = self.network.partition(":")
        if namespace != "eip155" or not reference.isdigit():
            raise ValueError(f"not an EVM network: {self.network!r}")
        return int(reference)

    @property
    def key(self) -> tuple[str, str]:
        return (self.network, self.address)

    def parse(self, value: str | int | Decimal) -> int:
        return parse_amount(value, self.decimals)

    def format(self, atomic: int) -> str:
        return f"{format_amount(atomic, self.decimals)} {self.symbol}"


class AssetRegistry:
    """The assets one party knows, looked up by symbol or by (network, address)."""

    def __init__(self, assets: Iterable[Asset] = ()) -> None:
        self._by_key: dict[tuple[str, str], Asset] = {}
        self._by_symbol: dict[str, Asset] = {}
        for asset in assets:
            self.add(asset)

    def add(self, asset: Asset) -> None:
        if asset.symbol in self._by_symbol and self._by_symbol[asset.symbol] != asset:
            raise ValueError(f"two different assets named {asset.symbol}")
        self._by_key[asset.key] = asset
        self._by_symbol[asset.symbol] = asset

    def by_symbol(self, symbol: str) -> Asset:
        try:
            return self._by_symbol[symbol]
        except KeyError:
            raise KeyError(f"unknown token {symbol!r}; known: {sorted(self._by_symbol)}") from None

    def find(self, network: str, address: str) -> Asset | None:
        try:
            return self._by_key.get((network, normalize_address(address)))
        except ValueError:
            return None

    def __iter__(self) -> Iterator[Asset]:
        return iter(self._by_symbol.values())

    def __len__(self) -> int:
        return len(self._by_symbol)

    def __contains__(self, symbol: object) -> bool:
        return symbol in self._by_symbol
