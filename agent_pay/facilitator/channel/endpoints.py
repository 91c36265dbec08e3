"""The facilitator's channel endpoints: its channel handler's side of the seam, served over HTTP
so that a content server in another process charges vouchers through it
(`agent_pay.facilitator.channel.remote` calls them; the bodies are in
`agent_pay.protocol.channel_facilitator`).

A voucher refused is a 200 answer with the refusal, as `/verify` answers a refused payment; a
body that does not fit its model is 400 with the reason (`invalid_payload`, ...), over the size
cap 413, and a release whose token is not one this facilitator gave 400
`channel_release_invalid`. Only the facilitator's own answers can release a read, each once: a
release token is a random name this process gave one acceptance (`ReleaseTokens`).
"""

from __future__ import annotations

import secrets
import sqlite3
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import TypeVar

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from agent_pay.errors import (
    ChainUnavailableError,
    MalformedPaymentError,
    PaymentRejectedError,
    Reason,
)
from agent_pay.facilitator.channel.records import Acceptance, ChannelRefusedError, PaidRead
from agent_pay.facilitator.channel.scheme import ChannelEvmScheme
from agent_pay.protocol.base import WireModel
from agent_pay.protocol.channel_facilitator import (
    AcceptAnswer,
    AcceptedVoucher,
    AcceptRequest,
    PaidReadAnswer,
    PaidReadRecord,
    PaidReadRequest,
    ReleaseRequest,
    VoucherRefusal,
)
from agent_pay.protocol.codec import decode_json

__all__ = ["MAX_CHANNEL_BODY_BYTES", "BodyReader", "ReleaseTokens", "channel_endpoints"]

M = TypeVar("M", bound=WireModel)
BodyReader = Callable[[Request, int], Awaitable[bytes]]
"""`(request, max_bytes) -> body`: the app's body reader, its timeout applied."""

MAX_CHANNEL_BODY_BYTES = 16 * 1024
"""A voucher's request is about 2 KB; a deposit's twice that."""

_NO_STORE = {"Cache-Control": "no-store"}


class ReleaseTokens:
    """One random token per acceptance given, each releasing that acceptance once.

    A token names one acceptance, not a voucher: the same voucher accepted again after a
    release, or retried (a replayed acceptance), gets a new token, so an old release sent
    again cannot undo a read that was served. The most recent `capacity` tokens are kept (a
    release follows its acceptance within a read's time); they die with the process."""

    def __init__(self, capacity: int = 65_536) -> None:
        self._capacity = capacity
        self._given: OrderedDict[str, Acceptance] = OrderedDict()

    def token(self, acceptance: Acceptance) -> str:
        token = secrets.token_hex(32)
        self._given[token] = acceptance._replace(statement={})  # all a release needs
        if len(self._given) > self._capacity:
            self._given.popitem(last=False)
        return token

    def redeem(self, channel: bytes, cumulative: int, price: int, token: str) -> Acceptance:
        """The acceptance `token` was given for, once; MalformedPaymentError if it names no
        acceptance of (`channel`, `cumulative`, `price`) this facilitator gave."""
        given = self._given.get(token)
        if given is None or (given.channel_id, given.cumulative_amount, given.price) != (
            channel,
            cumulative,
            price,
        ):
            raise MalformedPaymentError(
                "this release token was not given by this facilitator for this acceptance, "
                "or was used already",
                Reason.CHANNEL_RELEASE_INVALID,
            )
        del self._given[token]
        return given


def channel_endpoints(
    handler: ChannelEvmScheme, read_body: BodyReader, tokens: ReleaseTokens | None = None
) -> APIRouter:
    """The channel endpoints on `handler` (module docstring); `read_body` reads a request's
    body within the app's limits."""
    router = APIRouter()
    tokens = tokens or ReleaseTokens()

    async def read(request: Request, model: type[M]) -> M:
        return decode_json(await read_body(request, MAX_CHANNEL_BODY_BYTES), model)

    @router.post("/channels/accept")
    async def accept(request: Request) -> Response:
        body = await read(request, AcceptRequest)
        payment, requirements = body.payment_payload, body.payment_requirements
        try:
            handler.check_requirements(payment, requirements)
            acceptance = handler.accept(payment, requirements, body.resource, url=body.url)
        except ChannelRefusedError as exc:
            answer = AcceptAnswer(refusal=_refusal(exc, exc.statement))
        except MalformedPaymentError:
            raise
        except PaymentRejectedError as exc:
            answer = AcceptAnswer(refusal=_refusal(exc, None))
        else:
            answer = AcceptAnswer(
                acceptance=_accepted(acceptance, tokens) if acceptance is not None else None
            )
        return Response(answer.to_json(), media_type="application/json", headers=_NO_STORE)

    @router.post("/channels/release")
    async def release(request: Request) -> Response:
        body = await read(request, ReleaseRequest)
        channel = bytes.fromhex(body.channel_id[2:])
        handler.release(
            tokens.redeem(channel, body.cumulative_amount, body.price, body.release_token)
        )
        return JSONResponse({}, headers=_NO_STORE)

    @router.post("/channels/paid-read")
    async def paid_read(request: Request) -> Response:
        body = await read(request, PaidReadRequest)
        try:
            found = handler.paid_read(body.payer, body.resource)
        except sqlite3.Error as exc:
            raise ChainUnavailableError(f"the channel store cannot be read: {exc}") from exc
        answer = PaidReadAnswer(paid_read=_record(found) if found is not None else None)
        return Response(answer.to_json(), media_type="application/json", headers=_NO_STORE)

    @router.get("/channels/{channel_id}")
    async def statement(channel_id: str) -> JSONResponse:
        try:
            raw = bytes.fromhex(channel_id.removeprefix("0x"))
        except ValueError:
            raw = b""
        found = handler.statement(raw) if len(raw) == 32 else None
        if found is None:
            body = {"error": Reason.CHANNEL_UNKNOWN, "message": "no such channel here"}
            return JSONResponse(body, 404)
        return JSONResponse(found, headers=_NO_STORE)

    return router


def _refusal(exc: PaymentRejectedError, statement: dict[str, object] | None) -> VoucherRefusal:
    return VoucherRefusal(reason=exc.reason, message=exc.message[:1024], statement=statement)


def _accepted(acceptance: Acceptance, tokens: ReleaseTokens) -> AcceptedVoucher:
    return AcceptedVoucher(
        channel_id="0x" + acceptance.channel_id.hex(),
        payer=acceptance.payer,
        cumulative_amount=acceptance.cumulative_amount,
        price=acceptance.price,
        replayed=acceptance.replayed,
        statement=acceptance.statement,
        release_token=tokens.token(acceptance),
    )


def _record(read: PaidRead) -> PaidReadRecord:
    return PaidReadRecord(
        channel_id="0x" + read.channel_id.hex(),
        cumulative=read.cumulative,
        payer=read.payer,
        payee=read.payee,
        token=read.token,
        resource=read.resource,
        url=read.url,
        price=read.price,
        at=read.at,
    )
