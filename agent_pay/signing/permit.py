"""EIP-2612 `permit`: an owner's signed approval, submitted by anyone."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from agent_pay.signing._checks import check_address, check_uint256
from agent_pay.signing.typed_data import Fields, TokenDomain, build_typed_data

__all__ = ["PERMIT_FIELDS", "Permit", "permit_typed_data"]

PERMIT_FIELDS: Final[Fields] = [
    {"name": "owner", "type": "address"},
    {"name": "spender", "type": "address"},
    {"name": "value", "type": "uint256"},
    {"name": "nonce", "type": "uint256"},
    {"name": "deadline", "type": "uint256"},
]


@dataclass(frozen=True, slots=True)
class Permit:
    """Let `spender` move up to `value` of `owner`'s tokens until `deadline` (unix seconds).

    Unlike EIP-3009, `nonce` is the owner's sequential counter read from the token's
    `nonces(owner)`, so permits from one owner must be used in order.
    """

    owner: str
    spender: str
    value: int
    nonce: int
    deadline: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "owner", check_address(self.owner))
        object.__setattr__(self, "spender", check_address(self.spender))
        check_uint256("value", self.value)
        check_uint256("nonce", self.nonce)
        check_uint256("deadline", self.deadline)

    def eip712_message(self) -> dict[str, Any]:
        """The typed-data `message`."""
        return {
            "owner": self.owner,
            "spender": self.spender,
            "value": self.value,
            "nonce": self.nonce,
            "deadline": self.deadline,
        }


def permit_typed_data(domain: TokenDomain, permit: Permit) -> dict[str, Any]:
    """Full typed data for `permit`."""
    return build_typed_data(domain, "Permit", PERMIT_FIELDS, permit.eip712_message())
