"""x402 v2 headers: standard base64 of compact camelCase JSON.

`decode_header` is the one door untrusted header text comes through. Whatever the input, it
returns a model or raises `MalformedPaymentError` (HTTP 400) with a reason saying which layer
failed: the encoding (`INVALID_HEADER`), the protocol version (`INVALID_X402_VERSION`) or the
schema (`INVALID_PAYLOAD`).
"""

from __future__ import annotations

import base64
import binascii
from typing import Any, Final, TypeVar

import jiter
from pydantic import ValidationError

from agent_pay.errors import MalformedPaymentError, Reason
from agent_pay.protocol.base import WireModel, describe_validation_error
from agent_pay.protocol.models import X402_VERSION

__all__ = [
    "MAX_HEADER_BYTES",
    "PAYMENT_REQUIRED_HEADER",
    "PAYMENT_RESPONSE_HEADER",
    "PAYMENT_SIGNATURE_HEADER",
    "decode_header",
    "decode_json",
    "encode_header",
]

PAYMENT_REQUIRED_HEADER: Final = "PAYMENT-REQUIRED"
PAYMENT_SIGNATURE_HEADER: Final = "PAYMENT-SIGNATURE"
PAYMENT_RESPONSE_HEADER: Final = "PAYMENT-RESPONSE"
MAX_HEADER_BYTES: Final = 16384
"""A payment header is about 1.2 KiB of payment, plus the extensions of the 402 it answers,
which x402 v2 clients echo (3-8 KiB against agent-pay's 402s: signed offers, a sign-in
message, their schemas). h11, uvicorn's default parser, caps a request's header block at
16 KiB."""

M = TypeVar("M", bound=WireModel)

_VERSION_KEY: Final = "x402Version"


def encode_header(model: WireModel) -> str:
    """Standard base64 of the model's compact JSON (by alias, None fields omitted)."""
    return base64.b64encode(model.to_json().encode("utf-8")).decode("ascii")


def decode_header(value: str, model: type[M], *, max_bytes: int = MAX_HEADER_BYTES) -> M:
    """Read a base64 x402 header into `model`.

    Raises:
        MalformedPaymentError: and nothing else, for any input string.
    """
    # Size first: nothing below should spend time or memory on an oversized value.
    if not isinstance(value, str):
        raise MalformedPaymentError("header is not a string", Reason.INVALID_HEADER)
    if len(value) > max_bytes:
        raise MalformedPaymentError(
            f"header is longer than {max_bytes} bytes", Reason.INVALID_HEADER
        )
    try:
        # validate=True refuses characters outside the alphabet instead of skipping them, so
        # two different header strings never decode to the same payment.
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise MalformedPaymentError(
            "header is not standard base64", Reason.INVALID_HEADER
        ) from None
    return decode_json(raw, model)


def decode_json(data: bytes | str, model: type[M], *, max_bytes: int | None = None) -> M:
    """Read one JSON object (a header's content, or a facilitator request body) into `model`.

    Raises:
        MalformedPaymentError: and nothing else, for any input.
    """
    if max_bytes is not None and len(data) > max_bytes:
        raise MalformedPaymentError(f"body is longer than {max_bytes} bytes", Reason.INVALID_HEADER)
    obj = _load_json(data)
    if not isinstance(obj, dict):
        raise MalformedPaymentError("content is not a JSON object", Reason.INVALID_HEADER)
    # Checked before the schema so that a v1 payment is told "wrong version", not "bad field".
    if _VERSION_KEY in obj and not _is_supported_version(obj[_VERSION_KEY]):
        raise MalformedPaymentError(
            f"x402Version must be {X402_VERSION}", Reason.INVALID_X402_VERSION
        )
    try:
        return model.from_wire(obj)
    except ValidationError as error:
        reason = Reason.INVALID_PAYLOAD
        first = error.errors(include_url=False, include_input=False)[0]
        # A nested version (paymentPayload.x402Version) that is present but wrong is a version
        # problem too; a missing one is a schema problem.
        if first["loc"] and first["loc"][-1] == _VERSION_KEY and first["type"] != "missing":
            reason = Reason.INVALID_X402_VERSION
        raise MalformedPaymentError(describe_validation_error(error), reason) from None
    except RecursionError:
        raise MalformedPaymentError(
            "content is nested too deeply", Reason.INVALID_PAYLOAD
        ) from None


def _is_supported_version(value: Any) -> bool:
    # type() not isinstance(): True == 1 and 2.0 == 2 in Python, but neither is a version.
    return type(value) is int and value == X402_VERSION


def _load_json(data: bytes | str) -> Any:
    """Parse strict JSON with jiter (pydantic's parser), which does in Rust what the standard
    library needs a Python hook per object for (a third of a voucher read's parsing):

    - a duplicate key is refused: parsers disagree on which one wins, and refusing them means
      every party reads the same payment;
    - NaN and Infinity are refused: they are not JSON, though Python's parser takes them;
    - the text must be UTF-8 (jiter checks it), with no lone surrogate escapes, and nest at
      most a few hundred levels.
    """
    if isinstance(data, str):
        try:
            data = data.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate in the string itself
            raise MalformedPaymentError("content is not UTF-8", Reason.INVALID_HEADER) from None
    try:
        return jiter.from_json(
            data, allow_inf_nan=False, catch_duplicate_keys=True, cache_mode="keys"
        )
    except ValueError as error:
        # jiter stops at 200 levels with an error (never a crash): the nesting limit here.
        if "recursion limit" in str(error):
            raise MalformedPaymentError(
                "content is nested too deeply", Reason.JSON_TOO_DEEP
            ) from None
        raise MalformedPaymentError("content is not valid JSON", Reason.INVALID_HEADER) from None
