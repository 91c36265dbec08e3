"""The bodies of a facilitator's channel endpoints: the "channel" side of the facilitator seam
(`agent_pay.facilitator.base.ChannelFacilitator`) over HTTP.

- `POST /channels/accept` — `AcceptRequest` → `AcceptAnswer`: the voucher paid the read
  (`acceptance`), was refused (`refusal`: reason, message, the channel's statement), or needs
  the chain first (neither: verify and settle it);
- `POST /channels/release` — `ReleaseRequest` → `{}`: undo an acceptance whose read could
  not be served; it names the acceptance by the `releaseToken` the facilitator gave with it;
- `POST /channels/paid-read` — `PaidReadRequest` → `PaidReadAnswer`;
- `GET /channels/{channelId}` — the `ChannelStatement`, 404 `channel_unknown`.

A body that does not fit is 400 with a machine-readable reason, as at `/verify`.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field

from agent_pay.protocol.base import Address, Amount, Bytes32Hex, WireModel
from agent_pay.protocol.models import PaymentPayload, PaymentRequirements, X402Version

__all__ = [
    "AcceptAnswer",
    "AcceptRequest",
    "AcceptedVoucher",
    "PaidReadAnswer",
    "PaidReadRecord",
    "PaidReadRequest",
    "ReleaseRequest",
    "VoucherRefusal",
]

Path = Annotated[str, Field(min_length=1, max_length=2048)]
"""A resource's URL path (or URL): bounded, as everything a facilitator reads."""
Token = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


class AcceptRequest(WireModel):
    """Pay one read of `resource` (a URL path; `url` as sold) with the voucher in the payload."""

    x402_version: X402Version
    payment_payload: PaymentPayload
    payment_requirements: PaymentRequirements
    resource: Path
    url: Path | None = None


class AcceptedVoucher(WireModel):
    """A read paid by a voucher (`agent_pay.facilitator.base.Acceptance`), and the token that
    releases it."""

    channel_id: Bytes32Hex
    payer: Address
    cumulative_amount: Amount
    price: Amount
    replayed: bool
    statement: dict[str, Any]  # a `ChannelStatement`, checked by the reader
    release_token: Token


class VoucherRefusal(WireModel):
    """A voucher refused: the 402's reason and message, and where its channel stands."""

    reason: Annotated[str, Field(max_length=64)]
    message: Annotated[str, Field(max_length=1024)]
    statement: dict[str, Any] | None = None


class AcceptAnswer(WireModel):
    """At most one of `acceptance` and `refusal`; neither: the payment needs the chain."""

    acceptance: AcceptedVoucher | None = None
    refusal: VoucherRefusal | None = None


class ReleaseRequest(WireModel):
    """Undo the acceptance of voucher `cumulativeAmount` on `channelId` for `price`."""

    channel_id: Bytes32Hex
    cumulative_amount: Amount
    price: Amount
    release_token: Token


class PaidReadRequest(WireModel):
    """Did `payer` pay for a read of `resource` (a URL path) by voucher?"""

    payer: Address
    resource: Path


class PaidReadRecord(WireModel):
    """One read paid by voucher (`agent_pay.facilitator.base.PaidRead`)."""

    channel_id: Bytes32Hex
    cumulative: Amount
    payer: Address
    payee: Address
    token: Address
    resource: Path
    url: Path
    price: Amount
    at: float


class PaidReadAnswer(WireModel):
    paid_read: PaidReadRecord | None = None
