"""CAIP-2 network ids for EVM chains: ``eip155:<chain id>``."""

from __future__ import annotations

import re

__all__ = ["EIP155_NAMESPACE", "caip2", "parse_caip2"]

EIP155_NAMESPACE = "eip155"

# CAIP-2 allows at most 32 characters of reference; a chain id is written in plain decimal,
# without leading zeros, so every chain has exactly one spelling and string comparison of
# networks is exact.
_EIP155 = re.compile(r"eip155:([1-9][0-9]{0,31})")


def caip2(chain_id: int) -> str:
    """The CAIP-2 id of an EVM chain: ``caip2(31337) == "eip155:31337"``."""
    if type(chain_id) is not int or chain_id <= 0:
        raise ValueError(f"chain id must be a positive integer, not {chain_id!r}")
    network = f"{EIP155_NAMESPACE}:{chain_id}"
    if not _EIP155.fullmatch(network):
        raise ValueError("chain id is too large for CAIP-2")
    return network


def parse_caip2(network: str) -> int:
    """The chain id in ``eip155:<N>``.

    Raises:
        ValueError: for another namespace, or a number that is not canonical decimal.
    """
    match = _EIP155.fullmatch(network) if isinstance(network, str) else None
    if match is None:
        raise ValueError(f"not a canonical eip155 CAIP-2 network id: {str(network)[:80]!r}")
    return int(match.group(1))
