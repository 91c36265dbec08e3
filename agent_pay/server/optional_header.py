"""A request header that may be absent, decoded into a wire model: the FastAPI dependency behind
each proof of a payer's key (`AGENT-PAY-ENTITLEMENT`, `SIGN-IN-WITH-X`)."""

from __future__ import annotations

from typing import Generic, TypeVar

from fastapi import Request

from agent_pay.errors import MalformedPaymentError, Reason
from agent_pay.protocol import WireModel
from agent_pay.protocol.codec import decode_header

__all__ = ["OptionalHeader"]

M = TypeVar("M", bound=WireModel)


class OptionalHeader(Generic[M]):
    """Dependency: header `name` decoded as `model` (base64 JSON), or None without one.

    Raises MalformedPaymentError (400) with `reason`, naming the header, for one that cannot be
    read.
    """

    def __init__(self, name: str, model: type[M], reason: Reason) -> None:
        self.name = name
        self.model = model
        self.reason = reason

    async def __call__(self, request: Request) -> M | None:
        value = request.headers.get(self.name)
        if value is None:
            return None
        try:
            return decode_header(value, self.model)
        except MalformedPaymentError as exc:
            raise MalformedPaymentError(f"{self.name}: {exc.message}", self.reason) from None
