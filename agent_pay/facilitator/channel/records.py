"""What a channel account hands out and keeps: a refusal with its statement, the record of
a paid read (`PaidRead`, an entitlement), an acceptance, the store's change list, and the
recent vouchers with their JSON encoding (`agent_pay.facilitator.channel.book` uses them all).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Final, NamedTuple

from agent_pay.errors import ChainUnavailableError, PaymentRejectedError, Reason
from agent_pay.protocol.channel import CHANNEL_EXTENSION, statement_declaration

__all__ = [
    "Acceptance",
    "ChannelBusyError",
    "ChannelRefusedError",
    "PaidRead",
    "ReadChange",
    "Recent",
    "recent_entry",
    "recent_wire",
    "to_json",
]


class ChannelRefusedError(PaymentRejectedError):
    """A voucher refused (402), with where its channel stands, for the 402's extensions."""

    def __init__(
        self, message: str, reason: Reason, statement: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message, reason)
        self.statement = statement

    @property
    def extensions(self) -> dict[str, Any]:
        """`PAYMENT-REQUIRED` extensions: the channel statement, when the channel is known."""
        if self.statement is None:
            return {}
        return {CHANNEL_EXTENSION: statement_declaration(self.statement)}


class ChannelBusyError(ChainUnavailableError):
    """The channel is another instance's on a shared store, and it did not hand it over in
    time, or this instance's lease on it ran out (503 with Retry-After, reason
    `channel_busy`): nothing was accepted, the same voucher may be sent again."""

    def __init__(self, message: str) -> None:
        super().__init__(message, Reason.CHANNEL_BUSY, retry_after=1)


class PaidRead(NamedTuple):
    """One read of `resource` (a URL path; `url` as sold) paid by the voucher `cumulative` on
    `channel_id`: what entitles `payer` to read it again. Everything its receipt states.
    (A named tuple, as `Acceptance`: one is made on every paid read, four times faster than a
    frozen dataclass.)"""

    channel_id: bytes
    cumulative: int
    payer: str
    payee: str
    token: str
    resource: str
    url: str
    price: int
    at: float


class Acceptance(NamedTuple):
    """A read paid by a voucher: `price` more served (nothing more when `replayed`).
    `release_token` is what a remote facilitator needs to release it ("" in process)."""

    channel_id: bytes
    payer: str
    cumulative_amount: int
    price: int
    replayed: bool
    statement: dict[str, Any]  # the wire's `ChannelStatement`
    release_token: str = ""


ReadChange = tuple[int, str, PaidRead | None]
"""A change to a channel's paid reads, for the store: (cumulative, resource, the read) when a
voucher paid one, (cumulative, resource, None) when that read was undone (`release`)."""


@dataclass(slots=True)
class Recent:
    """A voucher accepted lately: for a replay of it, and for the snapshot."""

    signature: bytes
    resource: str
    at: float
    price: int
    wire: str = ""  # its entry in the snapshot's JSON, once the store has encoded it


def recent_entry(cumulative: int, recent: Recent) -> list[Any]:
    return [
        str(cumulative),
        "0x" + recent.signature.hex(),
        recent.resource,
        recent.at,
        str(recent.price),
    ]


def recent_wire(cumulative: int, recent: Recent) -> str:
    """`recent_entry` as compact JSON, written out: the resource is the one string that
    needs escaping (its encoding is kept), and a float's JSON is its repr."""
    resource = json_string(recent.resource)
    return (
        f'["{cumulative}","0x{recent.signature.hex()}",{resource},{recent.at!r},"{recent.price}"]'
    )


to_json: Final = json.JSONEncoder(separators=(",", ":")).encode
json_string: Final = lru_cache(maxsize=1024)(to_json)
