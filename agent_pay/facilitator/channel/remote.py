"""The `ChannelFacilitator` seam over HTTP: a content server's channels kept by a facilitator in
another process (ours: `agent-pay facilitator` serves `agent_pay.facilitator.channel.endpoints`).

Each voucher costs one round trip to the facilitator (the in-process seam costs none). The
contract's terms are read once, from the facilitator's `/supported` (`connect`). What the
facilitator answers is checked as any input is; an answer that does not read, or no answer,
is `ChainUnavailableError` (503: the payer retries), never a charge or a refusal.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Final, TypeVar

import httpx

from agent_pay.errors import ChainUnavailableError, MalformedPaymentError, Reason
from agent_pay.facilitator.base import ChannelTerms
from agent_pay.facilitator.channel.records import Acceptance, ChannelRefusedError, PaidRead
from agent_pay.protocol import X402_VERSION, PaymentPayload, PaymentRequirements, WireModel
from agent_pay.protocol.channel import CHANNEL_SCHEME, ChannelStatement
from agent_pay.protocol.channel_facilitator import (
    AcceptAnswer,
    AcceptedVoucher,
    AcceptRequest,
    PaidReadAnswer,
    PaidReadRequest,
    ReleaseRequest,
)
from agent_pay.protocol.codec import decode_json
from agent_pay.protocol.models import SupportedResponse

__all__ = ["HttpChannelFacilitator"]

M = TypeVar("M", bound=WireModel)

log = logging.getLogger(__name__)

_KNOWN_PAYERS: Final = 65_536
"""Channel payers remembered (a channel's payer never changes; past this, start afresh)."""
_JSON: Final = {"content-type": "application/json"}


class HttpChannelFacilitator:
    """The channels of the facilitator at `base_url`, on the contract `terms` describe."""

    remote = True

    def __init__(
        self,
        base_url: str,
        terms: ChannelTerms,
        *,
        timeout: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url
        self.terms = terms
        self._client = httpx.AsyncClient(base_url=base_url, timeout=timeout, transport=transport)
        self._payers: dict[bytes, str] = {}

    def __repr__(self) -> str:
        return f"HttpChannelFacilitator({self.base_url})"

    @classmethod
    def connect(
        cls, base_url: str, *, network: str | None = None, timeout: float = 10.0
    ) -> HttpChannelFacilitator:
        """The channels of the facilitator at `base_url`, their terms read from its
        `/supported` (the "channel" kind on `network`, or its only one). Blocking: call it
        while assembling the server. ChainUnavailableError if it cannot be read or lists no
        channels."""
        try:
            response = httpx.get(base_url.rstrip("/") + "/supported", timeout=timeout)
            response.raise_for_status()
        except httpx.HTTPError as exc:
            raise ChainUnavailableError(f"facilitator unreachable: {exc}") from exc
        supported = _read(response.content, SupportedResponse)
        kinds = [
            k
            for k in supported.kinds
            if k.scheme == CHANNEL_SCHEME and (network is None or k.network == network)
        ]
        if len(kinds) != 1:
            where = f" on {network}" if network else ""
            raise ChainUnavailableError(
                f"the facilitator at {base_url} lists {len(kinds)} channel kind(s){where}"
            )
        try:
            terms = ChannelTerms.from_extra(kinds[0].network, kinds[0].extra or {})
        except ValueError as exc:
            raise ChainUnavailableError(f"the facilitator's channel terms: {exc}") from exc
        return cls(base_url, terms, timeout=timeout)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def accept(
        self,
        payment: PaymentPayload,
        requirements: PaymentRequirements,
        resource: str,
        *,
        url: str | None = None,
    ) -> Acceptance | None:
        body = AcceptRequest(
            x402_version=X402_VERSION,
            payment_payload=payment,
            payment_requirements=requirements,
            resource=resource,
            url=url,
        )
        answer = _read(await self._post("/channels/accept", body), AcceptAnswer)
        if answer.refusal is not None:
            refusal = answer.refusal
            statement = _statement(refusal.statement) if refusal.statement else None
            raise ChannelRefusedError(refusal.message, _reason(refusal.reason), statement)
        accepted = answer.acceptance
        if accepted is None:
            return None
        _check_accepted(accepted, payment, requirements)
        channel = bytes.fromhex(accepted.channel_id[2:])
        self._learn(channel, accepted.payer)
        return Acceptance(
            channel,
            accepted.payer,
            accepted.cumulative_amount,
            accepted.price,
            accepted.replayed,
            _statement(accepted.statement),
            accepted.release_token,
        )

    async def release(self, acceptance: Acceptance) -> None:
        """Best effort: a release that cannot reach the facilitator is logged, not raised."""
        if acceptance.replayed:
            return
        if not acceptance.release_token:
            return  # not an acceptance a facilitator gave
        body = ReleaseRequest(
            channel_id="0x" + acceptance.channel_id.hex(),
            cumulative_amount=acceptance.cumulative_amount,
            price=acceptance.price,
            release_token=acceptance.release_token,
        )
        try:
            await self._post("/channels/release", body)
        except (ChainUnavailableError, MalformedPaymentError) as exc:
            # As a read the server could not produce: the payer was charged for it. Say so.
            log.warning("releasing a voucher read failed (it stays charged): %s", exc)

    async def statement(self, channel: bytes) -> dict[str, Any] | None:
        response = await self._request("GET", f"/channels/0x{channel.hex()}", found_ok=True)
        if response.status_code == 404:
            return None
        found = _statement(_json_object(response.content))
        payer = found.get("payer")
        if isinstance(payer, str):
            self._learn(channel, payer)
        return found

    async def paid_read(self, payer: str, resource: str) -> PaidRead | None:
        body = PaidReadRequest(payer=payer, resource=resource)
        record = _read(await self._post("/channels/paid-read", body), PaidReadAnswer).paid_read
        if record is None:
            return None
        if record.payer.lower() != payer.lower() or record.resource != resource:
            raise ChainUnavailableError(
                "facilitator answered with a paid read of another payer or resource"
            )
        return PaidRead(
            bytes.fromhex(record.channel_id[2:]),
            record.cumulative,
            record.payer,
            record.payee,
            record.token,
            record.resource,
            record.url,
            record.price,
            record.at,
        )

    def known_payer(self, channel: bytes) -> str | None:
        return self._payers.get(channel)

    def _learn(self, channel: bytes, payer: str) -> None:
        if len(self._payers) >= _KNOWN_PAYERS:
            self._payers.clear()
        self._payers[channel] = payer

    async def _post(self, path: str, body: WireModel) -> bytes:
        response = await self._request("POST", path, content=body.to_json(), headers=_JSON)
        return response.content

    async def _request(
        self, method: str, path: str, *, found_ok: bool = False, **kwargs: Any
    ) -> httpx.Response:
        try:
            response = await self._client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise ChainUnavailableError(f"facilitator unreachable: {exc}") from exc
        if response.status_code == 400:
            # The payload does not fit: the payer's fault, as the facilitator read it.
            reason, message = _refusal_of(response)
            raise MalformedPaymentError(message, reason)
        if response.status_code == 200 or (found_ok and response.status_code == 404):
            return response
        raise ChainUnavailableError(
            f"facilitator answered {response.status_code}: {response.text[:200]}"
        )


def _read(raw: bytes, model: type[M]) -> M:
    """A facilitator's answer; an unreadable one is the facilitator's fault, not the payer's."""
    try:
        return decode_json(raw, model)
    except MalformedPaymentError as exc:
        raise ChainUnavailableError(f"facilitator sent an unreadable answer: {exc}") from exc


def _check_accepted(
    accepted: AcceptedVoucher, payment: PaymentPayload, requirements: PaymentRequirements
) -> None:
    """ChainUnavailableError unless `accepted` is the voucher in `payment` paying the price
    `requirements` ask (a replay: the price it paid then), by the payer its statement names:
    an acceptance of anything else pays for no read here."""
    voucher = payment.payload
    payer = accepted.statement.get("payer", accepted.payer)
    if (
        accepted.channel_id.lower() != str(voucher.get("channelId", "")).lower()
        or str(accepted.cumulative_amount) != str(voucher.get("cumulativeAmount"))
        or (accepted.price != requirements.amount and not accepted.replayed)
        or not isinstance(payer, str)
        or payer.lower() != accepted.payer.lower()
    ):
        raise ChainUnavailableError("facilitator accepted another voucher than the one sent")


def _json_object(raw: bytes) -> dict[str, Any]:
    try:
        found = json.loads(raw)
    except ValueError as exc:
        raise ChainUnavailableError(f"facilitator sent an unreadable answer: {exc}") from exc
    if not isinstance(found, dict):
        raise ChainUnavailableError("facilitator sent an answer that is not a JSON object")
    return found


def _statement(raw: dict[str, Any]) -> dict[str, Any]:
    """`raw` if it is a `ChannelStatement` (kept as the facilitator wrote it)."""
    try:
        ChannelStatement.from_wire(raw)
    except ValueError as exc:
        raise ChainUnavailableError(f"facilitator sent an unreadable statement: {exc}") from exc
    return raw


def _reason(value: str) -> Reason:
    try:
        return Reason(value)
    except ValueError:
        raise ChainUnavailableError(f"facilitator sent an unknown reason {value[:64]!r}") from None


def _refusal_of(response: httpx.Response) -> tuple[Reason, str]:
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict) or not isinstance(body.get("error"), str):
        raise ChainUnavailableError(f"facilitator answered 400: {response.text[:200]}")
    message = body.get("message")
    return _reason(body["error"]), message if isinstance(message, str) else ""
