"""The facilitator role: the resource server asks it to verify and settle payments.

`Facilitator` is the seam between the server and the chain. Two implementations: the in-process
`LocalFacilitator` and `HttpFacilitatorClient`, which talks to any x402 v2 facilitator
(ours, served by `facilitator.http.create_facilitator_app`, or a stock one).

`ChannelFacilitator` is the seam's "channel" side: what a content server asks of channels besides
verify and settle — a voucher accepted at once (the fast path of every paid read), released
when its read could not be served, a channel's statement, a paid read to re-read — and the
contract's terms (`ChannelTerms`) its offers state. Two implementations: in process
(`facilitator.channel.local`, no I/O per voucher) and over HTTP (`facilitator.channel.remote`,
one round trip per voucher).

Outcomes that concern the payment come back as values (`VerifyResponse.is_valid`,
`SettleResponse.success` with a reason), as x402 facilitators answer them; trouble with the
chain or the facilitator itself raises `ChainUnavailableError`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from agent_pay.facilitator.channel.records import Acceptance, PaidRead
from agent_pay.protocol import (
    PaymentPayload,
    PaymentRequirements,
    SettleResponse,
    SupportedKind,
    SupportedResponse,
    VerifyResponse,
)

__all__ = [
    "Acceptance",
    "ChannelFacilitator",
    "ChannelTerms",
    "Facilitator",
    "PaidRead",
    "SchemeHandler",
    "Settlement",
]


@dataclass(frozen=True, slots=True)
class Settlement:
    """A payment that has been settled: money moved, or (for a channel) a voucher recorded."""

    payer: str
    transaction: str  # 0x-hex hash of the settling transaction; "" when none was needed
    amount: int
    gas_used: int = 0
    block_number: int | None = None


class SchemeHandler(Protocol):
    """One payment scheme on one network, as the facilitator runs it. Synchronous: the
    `LocalFacilitator` calls it from worker threads.

    `verify` and `settle` raise `PaymentRejectedError` / `MalformedPaymentError` /
    `SettlementFailedError` for the payment's faults and `ChainUnavailableError` for the
    chain's.
    """

    @property
    def scheme(self) -> str: ...

    @property
    def network(self) -> str: ...

    def verify(self, payment: PaymentPayload, requirements: PaymentRequirements) -> str:
        """Check that `payment` would settle now; return the payer's address."""
        ...

    def settle(self, payment: PaymentPayload, requirements: PaymentRequirements) -> Settlement:
        """Settle `payment`; return what happened."""
        ...

    def supported_kind(self) -> SupportedKind:
        """How `/supported` lists this handler."""
        ...


class Facilitator(Protocol):
    """Verify and settle x402 payments."""

    async def verify(
        self, payment: PaymentPayload, requirements: PaymentRequirements
    ) -> VerifyResponse:
        """Would `payment` settle for `requirements` right now? Nothing moves."""
        ...

    async def settle(
        self, payment: PaymentPayload, requirements: PaymentRequirements
    ) -> SettleResponse:
        """Move the money: verify again, submit, wait for confirmation."""
        ...

    async def supported(self) -> SupportedResponse:
        """The (version, scheme, network) kinds this facilitator handles."""
        ...


@dataclass(frozen=True, slots=True)
class ChannelTerms:
    """The channel contract a facilitator settles channels on, as a server's offers state it.

    `/supported` lists it in its "channel" kind's `extra` (`to_extra`), so that a server behind
    a remote facilitator learns it there (`from_extra`).
    """

    network: str  # CAIP-2
    channel_manager: str  # the contract's address
    voucher_domain_name: str  # the EIP-712 domain vouchers are signed under
    voucher_domain_version: str
    grace_period: int  # seconds between a payer's close request and its withdrawal

    def to_extra(self) -> dict[str, Any]:
        return {
            "channelManager": self.channel_manager,
            "gracePeriod": self.grace_period,
            "voucherDomain": {
                "name": self.voucher_domain_name,
                "version": self.voucher_domain_version,
            },
        }

    @classmethod
    def from_extra(cls, network: str, extra: dict[str, Any]) -> ChannelTerms:
        """The terms a "channel" kind's `extra` states; ValueError if it states none."""
        try:
            domain = extra["voucherDomain"]
            terms = cls(
                network,
                extra["channelManager"],
                domain["name"],
                domain["version"],
                extra["gracePeriod"],
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"no channel terms in {extra!r}") from exc
        strings = (terms.channel_manager, terms.voucher_domain_name, terms.voucher_domain_version)
        if not all(isinstance(x, str) for x in strings) or type(terms.grace_period) is not int:
            raise ValueError(f"malformed channel terms in {extra!r}")
        return terms


class ChannelFacilitator(Protocol):
    """What a content server asks of the facilitator's channels, besides verify and settle.

    `remote` says what a call costs: False, in this process, pure CPU (the fast path stays
    fast); True, one HTTP round trip to the facilitator per call.

    `accept` raises `ChannelRefusedError` (402, with the channel's statement) or
    `MalformedPaymentError` for the payment's faults, `ChainUnavailableError` when the
    facilitator cannot be asked.
    """

    @property
    def remote(self) -> bool: ...

    @property
    def terms(self) -> ChannelTerms: ...

    async def accept(
        self,
        payment: PaymentPayload,
        requirements: PaymentRequirements,
        resource: str,
        *,
        url: str | None = None,
    ) -> Acceptance | None:
        """Pay one read of `resource` (a URL path; `url` as sold) with the voucher in
        `payment`; None when the payment needs the chain first (verify and settle it)."""
        ...

    async def release(self, acceptance: Acceptance) -> None:
        """Undo `acceptance`: its read could not be served."""
        ...

    async def statement(self, channel: bytes) -> dict[str, Any] | None:
        """Where `channel` stands (the wire's `ChannelStatement`), or None if unknown."""
        ...

    async def paid_read(self, payer: str, resource: str) -> PaidRead | None:
        """A read of `resource` (a URL path) `payer` paid by voucher, if any."""
        ...

    def known_payer(self, channel: bytes) -> str | None:
        """The payer of `channel`, if known without I/O (a channel's payer never changes)."""
        ...
