"""How a paid read's failures become errors: a refused verification, a facilitator's reason
code, a ledger that cannot be reached, content that cannot be produced (nothing charged)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

from agent_pay.errors import ChainUnavailableError, PaymentRejectedError, Reason
from agent_pay.protocol import VerifyResponse
from agent_pay.server.timings import timed

__all__ = ["ledger_down", "produce_content", "reason_from", "rejection"]

log = logging.getLogger("agent_pay.server.checkout")  # the logger these messages always used

T = TypeVar("T")


def produce_content(produce: Callable[[], T]) -> T:
    try:
        with timed("render"):
            return produce()
    except Exception as exc:
        log.exception("producing the content failed")
        raise ChainUnavailableError(
            "the article could not be produced; nothing was charged",
            Reason.CONTENT_UNAVAILABLE,
            retry_after=1,
        ) from exc


def rejection(verdict: VerifyResponse) -> PaymentRejectedError:
    return PaymentRejectedError(
        verdict.invalid_message or "payment is not valid",
        reason_from(verdict.invalid_reason, Reason.INVALID_PAYLOAD),
    )


def reason_from(code: str | None, default: Reason) -> Reason:
    """A facilitator's reason string as our enum; unknown codes (a stock facilitator's) fold
    into `default` rather than being passed through unchecked."""
    try:
        return Reason(code) if code else default
    except ValueError:
        return default


def ledger_down(exc: Exception) -> ChainUnavailableError:
    log.error("ledger error: %s", exc)
    return ChainUnavailableError(
        f"the payment ledger is unavailable: {exc}", Reason.LEDGER_UNAVAILABLE
    )
