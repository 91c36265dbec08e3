"""x402's MCP transport (x402 `specs/transports-v2/mcp.md`): what goes where in a tool call.

- A paid tool called without payment answers a tool *result* with `isError: true`, the
  `PaymentRequired` as `structuredContent`, and the same object as JSON in `content[0].text`.
- The client calls again with the `PaymentPayload` in the request's `_meta["x402/payment"]`.
- The answer carries the `SettleResponse` in the result's `_meta["x402/payment-response"]`; a
  refused payment is a payment-required result again, whose `error` says why.

Our wire models are the same as on HTTP; only the envelope differs. Anything read from the
other side goes through `decode_json`, the codec's one door for untrusted input.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final

from mcp.types import CallToolResult, TextContent

from agent_pay.errors import MalformedPaymentError
from agent_pay.protocol import PaymentPayload, PaymentRequired, SettleResponse
from agent_pay.protocol.codec import decode_json

__all__ = [
    "PAYMENT_META_KEY",
    "PAYMENT_RESPONSE_META_KEY",
    "payment_in",
    "payment_required_in",
    "payment_required_result",
    "settlement_in",
    "without_nulls",
]

PAYMENT_META_KEY: Final = "x402/payment"
PAYMENT_RESPONSE_META_KEY: Final = "x402/payment-response"


def payment_required_result(required: PaymentRequired) -> CallToolResult:
    """The tool result that asks for payment (or says why a payment was refused)."""
    wire = required.to_wire()
    return CallToolResult(
        content=[TextContent(type="text", text=json.dumps(wire))],
        structured_content=wire,
        is_error=True,
    )


def payment_required_in(result: CallToolResult) -> PaymentRequired | None:
    """The `PaymentRequired` a tool result asks with, if it does: `structuredContent` first,
    then `content[0].text` (as the spec tells clients)."""
    if not result.is_error:
        return None
    candidates: list[Any] = [result.structured_content]
    if result.content and isinstance(result.content[0], TextContent):
        candidates.append(result.content[0].text)
    for candidate in candidates:
        if isinstance(candidate, dict) and "accepts" in candidate:
            candidate = json.dumps(candidate)
        if isinstance(candidate, str) and '"accepts"' in candidate:
            try:
                return decode_json(candidate, PaymentRequired)
            except MalformedPaymentError:
                continue
    return None


def payment_in(meta: Mapping[str, Any] | None) -> PaymentPayload | None:
    """The payment a tool call carries in `_meta`, if any.

    Raises:
        MalformedPaymentError: it carries one that is not a valid x402 v2 payload.
    """
    raw = (meta or {}).get(PAYMENT_META_KEY)
    if raw is None:
        return None
    return decode_json(json.dumps(without_nulls(raw)), PaymentPayload)


def settlement_in(result: CallToolResult) -> SettleResponse | None:
    """The settlement a tool result reports in `_meta`, if it reports a readable one."""
    raw = (result.meta or {}).get(PAYMENT_RESPONSE_META_KEY)
    if not isinstance(raw, dict):
        return None
    try:
        return decode_json(json.dumps(without_nulls(raw)), SettleResponse)
    except MalformedPaymentError:
        return None


def without_nulls(value: Any) -> Any:
    """`value` with every null object member dropped: some x402 clients send optional fields
    as explicit nulls (`"mimeType": null`), which our strict models refuse."""
    if isinstance(value, dict):
        return {k: without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [without_nulls(v) for v in value]
    return value
