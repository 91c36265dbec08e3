"""The content server's side of the "channel" scheme: its offers, and reads paid inline.

`ChannelOffers` is the scheme's `OfferBuilder`: for every article it offers, next to "exact",
a channel in each token the article is priced in (precomputed once per article; `extra` names
the channel contract, the least deposit and the grace period).

It is also `InlinePayments` (`agent_pay.server.inline`): a read paid by a voucher on a channel
the facilitator knows needs no chain and no ledger round trip, so the server's paid path asks
`charge_inline` first and, when it answers, serves at once. In process that is one signature
recovery on the event loop, no thread hop; behind a remote facilitator, one HTTP round trip.
It answers None when the payment needs the chain (a new channel's deposit, a top-up); the
server then takes its ordinary path (verify, ledger, settle), which is exactly-once for the
deposit transaction.

And it is an `EntitlementSource` (`agent_pay.server.entitlements`): every read a voucher paid
is recorded by the facilitator with the voucher, so its payer re-reads it free with a key
proof. A voucher read's `PAYMENT-RESPONSE` carries no receipt (signing one per read would cost
more than the rest of the charge); the re-read answers with one, signed then.

`channel_router` adds `GET /channels/{channelId}`: where a channel stands, for a client that
restarted and resumes from the server's last accepted voucher.

All of it goes through the facilitator's channel seam (`ChannelFacilitator`): the server
never touches the channel handler, its accounts or the chain.
"""

from __future__ import annotations

import base64
from typing import Final

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from agent_pay.assets import AssetRegistry
from agent_pay.errors import Reason
from agent_pay.facilitator.base import Acceptance, ChannelFacilitator, PaidRead
from agent_pay.protocol import PaymentPayload, PaymentRequirements, SettleResponse
from agent_pay.protocol.channel import (
    CHANNEL_EXTENSION,
    CHANNEL_SCHEME,
    parse_channel_payload,
    statement_json,
)
from agent_pay.protocol.extensions import NO_TRANSACTION, ReceiptClaims
from agent_pay.server.catalogue import Article
from agent_pay.server.ledger import PaymentKey
from agent_pay.server.offers import DEFAULT_MAX_TIMEOUT_SECONDS

__all__ = ["DEFAULT_MIN_DEPOSIT_READS", "ChannelCharge", "ChannelOffers", "channel_router"]

DEFAULT_MIN_DEPOSIT_READS: Final = 10
"""A channel's deposit must pay for at least this many reads at the offer's price."""
_UNKNOWN_PAYER: Final = "0x" + "00" * 20


class ChannelCharge:
    """A read paid by a voucher (an `agent_pay.server.inline.InlineCharge`)."""

    __slots__ = ("acceptance", "channels", "network")

    def __init__(self, channels: ChannelFacilitator, acceptance: Acceptance, network: str) -> None:
        self.channels = channels
        self.acceptance = acceptance
        self.network = network

    def response_header(self) -> str:
        """`settle_response()`, encoded for `PAYMENT-RESPONSE`: written out by hand, as the
        model would serialise it (a test holds them equal), at a fifth of the cost. Every
        value is ours: an address, a CAIP-2 network, decimal amounts and the statement
        (`statement_json`), none of which JSON escapes."""
        acceptance = self.acceptance
        channel = statement_json(acceptance.statement)
        text = (
            f'{{"success":true,"payer":"{acceptance.payer}","transaction":"",'
            f'"network":"{self.network}","amount":"{acceptance.price}",'
            f'"extensions":{{"{CHANNEL_EXTENSION}":{channel}}}}}'
        )
        return base64.b64encode(text.encode("ascii")).decode("ascii")

    def settle_response(self) -> SettleResponse:
        acceptance = self.acceptance
        # Every field is ours and already valid: skip validation, this is every paid read.
        return SettleResponse.model_construct(
            success=True,
            payer=acceptance.payer,
            transaction="",
            network=self.network,
            amount=acceptance.price,
            extensions={CHANNEL_EXTENSION: acceptance.statement},
        )

    async def release(self) -> None:
        await self.channels.release(self.acceptance)


class ChannelOffers:
    """The "channel" scheme's offers and inline charging, on the facilitator's channel contract.

    Args:
        assets: the tokens articles are priced in (the facilitator must settle each).
        channels: the facilitator's channels (in process or remote).
        min_deposit_reads: the least deposit, in reads at the offer's price.
    """

    scheme = CHANNEL_SCHEME

    def __init__(
        self,
        assets: AssetRegistry,
        channels: ChannelFacilitator,
        *,
        min_deposit_reads: int = DEFAULT_MIN_DEPOSIT_READS,
        max_timeout_seconds: int = DEFAULT_MAX_TIMEOUT_SECONDS,
    ) -> None:
        self.assets = assets
        self.channels = channels
        self.terms = channels.terms
        self.min_deposit_reads = min_deposit_reads
        self.max_timeout_seconds = max_timeout_seconds
        self.grace_period = self.terms.grace_period
        self._offers: dict[tuple[object, ...], list[PaymentRequirements]] = {}

    def offers(self, article: Article) -> list[PaymentRequirements]:
        key = (article.slug, tuple(sorted(article.prices.items())), article.author)
        cached = self._offers.get(key)
        if cached is None:
            cached = self._offers[key] = self._build(article)
        return cached

    def _build(self, article: Article) -> list[PaymentRequirements]:
        terms = self.terms
        offers = []
        for symbol in sorted(article.prices):
            asset = self.assets.by_symbol(symbol)
            price = article.price_atomic(symbol, asset.decimals)
            offers.append(
                PaymentRequirements(
                    scheme=self.scheme,
                    network=asset.network,
                    amount=price,
                    asset=asset.address,
                    pay_to=article.author,
                    max_timeout_seconds=self.max_timeout_seconds,
                    extra={
                        "name": asset.eip712_name,
                        "version": asset.eip712_version,
                        "channelManager": terms.channel_manager,
                        "minDeposit": str(price * self.min_deposit_reads),
                        "gracePeriod": terms.grace_period,
                        "voucherDomain": {
                            "name": terms.voucher_domain_name,
                            "version": terms.voucher_domain_version,
                        },
                    },
                )
            )
        return offers

    def check_payload(self, payment: PaymentPayload) -> None:
        parse_channel_payload(payment.payload)

    def payment_key(self, payment: PaymentPayload) -> PaymentKey:
        """(channel, payer, channelId:cumulativeAmount): each voucher pays one read. The payer
        is the deposit's when the payload opens the channel, else the known channel's (as far
        as the facilitator's channels know it without asking)."""
        payload = parse_channel_payload(payment.payload)
        if payload.open is not None:
            payer = payload.open.authorization.from_
        else:
            known = self.channels.known_payer(bytes.fromhex(payload.channel_id[2:]))
            payer = known if known is not None else _UNKNOWN_PAYER
        return PaymentKey(self.scheme, payer, f"{payload.channel_id}:{payload.cumulative_amount}")

    async def charge_inline(
        self,
        payment: PaymentPayload,
        requirements: PaymentRequirements,
        resource: str,
        *,
        url: str | None = None,
    ) -> ChannelCharge | None:
        acceptance = await self.channels.accept(payment, requirements, resource, url=url)
        if acceptance is None:
            return None
        return ChannelCharge(self.channels, acceptance, requirements.network)

    async def entitlement(self, payer: str, resource: str) -> ReceiptClaims | None:
        """The receipt claims of a read of `resource` (a URL path) `payer` paid by voucher:
        what the receipt a re-read returns states."""
        read = await self.channels.paid_read(payer, resource)
        return _claims(read, self.terms.network) if read is not None else None


def _claims(read: PaidRead, network: str) -> ReceiptClaims:
    """What the receipt of `read` states: scheme "channel", no transaction, the read's price,
    issued when its voucher was first accepted (the same receipt at every re-read)."""
    return ReceiptClaims(
        scheme=CHANNEL_SCHEME,
        payer=read.payer,
        pay_to=read.payee,
        resource=read.url,
        amount=read.price,
        asset=read.token,
        network=network,
        transaction=NO_TRANSACTION,
        issued_at=int(read.at),
    )


def channel_router(channels: ChannelFacilitator) -> APIRouter:
    """`GET /channels/{channelId}`: the channel's `ChannelStatement`, 404 if unknown here."""
    router = APIRouter()

    @router.get("/channels/{channel_id}")
    async def channel_statement(channel_id: str) -> JSONResponse:
        try:
            raw = bytes.fromhex(channel_id.removeprefix("0x"))
        except ValueError:
            raw = b""
        statement = await channels.statement(raw) if len(raw) == 32 else None
        if statement is None:
            body = {"error": Reason.CHANNEL_UNKNOWN, "message": "no such channel here"}
            return JSONResponse(body, 404)
        return JSONResponse(statement, headers={"Cache-Control": "no-store"})

    return router
