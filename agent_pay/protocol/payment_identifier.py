"""x402's `payment-identifier` extension: a client-chosen idempotency key for a payment.

A 402 declares `extensions["payment-identifier"] = {"info": {"required": false}, "schema": ...}`;
a client that supports it echoes the entry in its `PaymentPayload` with `info.id` added: 16 to
128 characters of `[A-Za-z0-9_-]`, the same on every retry of one payment. The same id with the
same payment is the same payment (the first result, one charge); the same id with another
payment is a conflict (HTTP 409). Pure: the server's side is `agent_pay.server.payment_ids`.
"""

from __future__ import annotations

import re
from typing import Any, Final

from agent_pay.errors import MalformedPaymentError, Reason
from agent_pay.protocol.declaration import declare, info_of, object_schema
from agent_pay.protocol.models import PaymentPayload

__all__ = [
    "PAYMENT_IDENTIFIER",
    "payment_identifier",
    "payment_identifier_declaration",
]

PAYMENT_IDENTIFIER: Final = "payment-identifier"
_ID: Final = re.compile(r"[A-Za-z0-9_-]{16,128}")


def payment_identifier_declaration(*, required: bool = False) -> dict[str, Any]:
    """The `extensions["payment-identifier"]` entry of a 402."""
    schema = object_schema(
        {
            "required": {"type": "boolean"},
            "id": {"type": "string", "minLength": 16, "maxLength": 128},
        },
        ["required"],
    )
    return declare({"required": required}, schema)


def payment_identifier(payment: PaymentPayload) -> str | None:
    """The id `payment` carries in `extensions["payment-identifier"].info.id`, if any.

    Raises:
        MalformedPaymentError: `Reason.PAYMENT_ID_INVALID` (400) for an id that is not 16 to
            128 characters of letters, digits, `-` and `_`.
    """
    info = info_of(payment.extensions, PAYMENT_IDENTIFIER)
    if not isinstance(info, dict) or info.get("id") is None:
        return None
    value = info["id"]
    if not isinstance(value, str) or not _ID.fullmatch(value):
        raise MalformedPaymentError(
            "payment-identifier id must be 16 to 128 characters of A-Z a-z 0-9 - _",
            Reason.PAYMENT_ID_INVALID,
        )
    return value
