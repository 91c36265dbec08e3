"""x402 v2 wire types and header codec. Pure: no HTTP, no chain, no signing.

Python code sees ints and checksum addresses; the wire sees decimal strings and hex.
`encode_header` / `decode_header` turn models into header values and back, and
`decode_header` raises only `MalformedPaymentError`, whatever it is given.
"""

from agent_pay.protocol.base import MAX_UINT256, WireModel, normalize_address
from agent_pay.protocol.codec import (
    MAX_HEADER_BYTES,
    PAYMENT_REQUIRED_HEADER,
    PAYMENT_RESPONSE_HEADER,
    PAYMENT_SIGNATURE_HEADER,
    decode_header,
    decode_json,
    encode_header,
)
from agent_pay.protocol.exact import ExactEvmAuthorization, ExactEvmPayload
from agent_pay.protocol.models import (
    X402_VERSION,
    FacilitatorRequest,
    PaymentPayload,
    PaymentRequired,
    PaymentRequirements,
    ResourceInfo,
    SettleResponse,
    SupportedKind,
    SupportedResponse,
    VerifyResponse,
)
from agent_pay.protocol.networks import caip2, parse_caip2

__all__ = [
    "MAX_HEADER_BYTES",
    "MAX_UINT256",
    "PAYMENT_REQUIRED_HEADER",
    "PAYMENT_RESPONSE_HEADER",
    "PAYMENT_SIGNATURE_HEADER",
    "X402_VERSION",
    "ExactEvmAuthorization",
    "ExactEvmPayload",
    "FacilitatorRequest",
    "PaymentPayload",
    "PaymentRequired",
    "PaymentRequirements",
    "ResourceInfo",
    "SettleResponse",
    "SupportedKind",
    "SupportedResponse",
    "VerifyResponse",
    "WireModel",
    "caip2",
    "decode_header",
    "decode_json",
    "encode_header",
    "normalize_address",
    "parse_caip2",
]
