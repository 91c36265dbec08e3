"""The pydantic base for every wire type, and the field types the wire is made of.

Python sees integers and checksum addresses; the wire sees decimal strings and hex. The
annotated types below do that translation in one place so every model agrees on it.

Input is read in two modes. In code (`Model(amount=100_000)`) a Python int is a fine amount.
On the wire (`WireModel.from_wire`, used by the codec) an amount must be a canonical decimal
*string*, as stock x402 sends it: a JSON number there is a schema error, because a client
that sends one is not speaking x402 v2 and would break the verbatim echo of `accepted`.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Annotated, Any, Final, Self

from eth_utils.address import to_checksum_address
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    PlainSerializer,
    ValidationError,
    ValidationInfo,
)
from pydantic.alias_generators import to_camel

__all__ = [
    "MAX_UINT256",
    "Address",
    "Amount",
    "Bytes32Hex",
    "Network",
    "NonNegativeInt",
    "WireModel",
    "describe_validation_error",
    "is_evm_network",
    "normalize_address",
]

MAX_UINT256: Final = 2**256 - 1
WIRE_CONTEXT: Final = {"wire": True}

# [0-9], never \d: \d also matches non-ASCII digits, which int() would happily accept.
_CANONICAL_DECIMAL = re.compile(r"0|[1-9][0-9]{0,77}")
_HEX_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")
_BYTES32_HEX = re.compile(r"0x[0-9a-fA-F]{64}")
# CAIP-2: namespace ":" reference.
_CAIP2 = re.compile(r"[-a-z0-9]{3,8}:[-_a-zA-Z0-9]{1,32}")


def _on_wire(info: ValidationInfo) -> bool:
    context = info.context
    return info.mode == "json" or (isinstance(context, dict) and bool(context.get("wire")))


def _parse_amount(value: object, info: ValidationInfo) -> int:
    if isinstance(value, str):
        if not _CANONICAL_DECIMAL.fullmatch(value):
            raise ValueError("must be a canonical decimal string (digits only, no leading zeros)")
        number = int(value)
    elif isinstance(value, int) and not isinstance(value, bool) and not _on_wire(info):
        number = value
    else:
        raise ValueError("must be a decimal string")
    if not 0 <= number <= MAX_UINT256:
        raise ValueError("must be between 0 and 2**256 - 1")
    return number


def _parse_non_negative_int(value: object) -> int:
    # bool is an int subclass; True must not pass for a timeout or version.
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError("must be an integer")
    if value < 0:
        raise ValueError("must not be negative")
    return value


def normalize_address(value: object) -> str:
    """Return `value` as an EIP-55 checksum address, or raise ValueError.

    All-lowercase and all-uppercase hex are accepted as unchecksummed. Mixed case must carry a
    valid checksum: a wrong one is most likely a typo in a payee address, and money sent there
    is lost.
    """
    if not isinstance(value, str) or not _HEX_ADDRESS.fullmatch(value):
        raise ValueError("must be a 0x-prefixed 20-byte hex address")
    checksummed = _checksum(value)
    body = value[2:]
    if body != body.lower() and body != body.upper() and value != checksummed:
        raise ValueError("has an invalid EIP-55 checksum")
    return checksummed


@lru_cache(maxsize=8192)
def _checksum(address: str) -> str:
    # EIP-55 costs a keccak plus a Python loop per call, and one paid read checks the same few
    # addresses (payee, token, payer) about eight times: this was half of verification time.
    return str(to_checksum_address(address))


def _parse_bytes32(value: object) -> str:
    if not isinstance(value, str) or not _BYTES32_HEX.fullmatch(value):
        raise ValueError("must be 0x followed by 64 hex digits")
    return value.lower()


def _parse_network(value: object) -> str:
    if not isinstance(value, str) or not _CAIP2.fullmatch(value):
        raise ValueError("must be a CAIP-2 network id such as eip155:8453")
    return value


def is_evm_network(network: str) -> bool:
    """True for CAIP-2 networks in the `eip155` namespace, whose values we check as EVM values."""
    return network.startswith("eip155:")


Amount = Annotated[
    int,
    BeforeValidator(_parse_amount),
    PlainSerializer(str, return_type=str),
]
"""A uint256 in atomic units: an int in Python, a canonical decimal string on the wire."""

NonNegativeInt = Annotated[int, BeforeValidator(_parse_non_negative_int)]
"""A JSON integer (never a string, never a bool) that is at least zero."""

Address = Annotated[str, BeforeValidator(normalize_address)]
"""A 20-byte EVM address, normalised to its EIP-55 checksum form."""

Bytes32Hex = Annotated[str, BeforeValidator(_parse_bytes32)]
"""32 bytes as 0x-prefixed hex, normalised to lowercase."""

Network = Annotated[str, BeforeValidator(_parse_network)]
"""A CAIP-2 network identifier, e.g. ``eip155:31337``."""


class WireModel(BaseModel):
    """Base of every x402 wire type: frozen, camelCase on the wire, unknown fields refused.

    Serialise with `to_wire()` / `to_json()` (by alias, None omitted); parse untrusted input with
    `from_wire()`, which accepts only camelCase names and string amounts.
    """

    model_config = ConfigDict(
        frozen=True,
        strict=True,
        extra="forbid",
        alias_generator=to_camel,
        populate_by_name=True,
        serialize_by_alias=True,
    )

    def to_wire(self) -> dict[str, Any]:
        """The JSON-ready dict: camelCase keys, amounts as strings, None fields left out."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)

    def to_json(self) -> str:
        """Compact JSON of `to_wire()`."""
        return self.model_dump_json(by_alias=True, exclude_none=True)

    @classmethod
    def from_wire(cls, data: Any) -> Self:
        """Validate decoded JSON strictly as it must appear on the wire.

        Raises pydantic's ValidationError; the codec turns that into MalformedPaymentError.
        """
        return cls.model_validate(data, context=WIRE_CONTEXT, by_alias=True, by_name=False)


def describe_validation_error(error: ValidationError, limit: int = 160) -> str:
    """One short line naming the first offending field, never echoing the input."""
    details = error.errors(include_url=False, include_input=False, include_context=False)
    if not details:
        return "does not match the schema"
    first = details[0]
    where = ".".join(str(part) for part in first["loc"]) or "(root)"
    message = first["msg"].removeprefix("Value error, ")
    more = f" (and {len(details) - 1} more)" if len(details) > 1 else ""
    # The message itself may quote enum options or the like; cap it so logs stay small.
    text = f"{where}: {message}{more}"
    return text if len(text) <= limit else text[: limit - 3] + "..."
