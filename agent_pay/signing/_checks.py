"""Argument checks shared by the signing dataclasses: fail at construction, not at signing."""

from __future__ import annotations

from agent_pay.protocol import MAX_UINT256, normalize_address


def check_address(value: object) -> str:
    """`value` as a checksum address; ValueError otherwise."""
    return normalize_address(value)


def check_uint256(name: str, value: object) -> None:
    """ValueError unless `value` is an int (not a bool) in uint256 range."""
    if type(value) is not int or not 0 <= value <= MAX_UINT256:
        raise ValueError(f"{name} must be an integer between 0 and 2**256 - 1")


def check_bytes32(name: str, value: object) -> None:
    """ValueError unless `value` is exactly 32 bytes."""
    if not isinstance(value, bytes) or len(value) != 32:
        raise ValueError(f"{name} must be exactly 32 bytes")
