"""Every error agent-pay raises, and the machine-readable reasons behind them.

The tree::

    AgentPayError                  root; carries a `Reason` and an HTTP status
    ├── MalformedPaymentError      400: the payment header cannot be read at all
    │   ├── OversizedRequestError  413: a request body larger than the server reads
    │   └── SlowRequestError       408: a request body that did not arrive in time
    ├── PaymentRejectedError       402: the payment is readable but not acceptable
    ├── PaymentConflictError       409: a payment identifier already names another payment
    ├── SettlementFailedError      402: the chain refused the transfer; nothing was charged
    ├── ChainUnavailableError      503: the node is unreachable, slow or misbehaving
    ├── PolicyViolationError       client side: paying would break the spending policy
    ├── NoAcceptableOfferError     client side: no offer is payable with what we hold
    └── ConfigurationError         a setting or key is missing or wrong

Reasons are snake_case strings on the wire. Where x402 v2 has a name for the same condition we
use its name, so stock x402 clients understand our rejections.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = [
    "AgentPayError",
    "ChainUnavailableError",
    "ConfigurationError",
    "MalformedPaymentError",
    "NoAcceptableOfferError",
    "OversizedRequestError",
    "PaymentConflictError",
    "PaymentRejectedError",
    "PolicyViolationError",
    "Reason",
    "SettlementFailedError",
    "SlowRequestError",
]


class Reason(StrEnum):
    """Why a payment was refused. Stable: clients branch on these strings."""

    # -- the header itself (400)
    INVALID_HEADER = "invalid_payment_header"  # not base64, not JSON, or too large
    INVALID_PAYLOAD = "invalid_payload"  # JSON that does not fit the schema
    INVALID_X402_VERSION = "invalid_x402_version"
    JSON_TOO_DEEP = "json_too_deep"  # nested deeper than the server parses (any server)
    REQUEST_TOO_LARGE = "request_too_large"  # 413: a body larger than the server reads
    REQUEST_TIMEOUT = "request_timeout"  # 408: a body that trickled in too slowly

    # -- the offer that was accepted (402)
    UNSUPPORTED_SCHEME = "unsupported_scheme"
    NETWORK_MISMATCH = "network_mismatch"
    ASSET_MISMATCH = "invalid_exact_evm_payload_asset_mismatch"
    RECIPIENT_MISMATCH = "invalid_exact_evm_payload_recipient_mismatch"
    AMOUNT_MISMATCH = "invalid_exact_evm_payload_authorization_value_mismatch"
    REQUIREMENTS_MISMATCH = "invalid_payment_requirements"  # `accepted` is not an offer we made
    RESOURCE_MISMATCH = "invalid_payment_resource"  # signed for another resource's URL
    PAYMENT_REQUIRED = "payment_required"  # no payment was sent (the first 402)

    # -- the signed authorization (402)
    VALID_BEFORE_EXPIRED = "invalid_exact_evm_payload_authorization_valid_before"
    VALID_AFTER_FUTURE = "invalid_exact_evm_payload_authorization_valid_after"
    INVALID_SIGNATURE = "invalid_exact_evm_payload_signature"
    NONCE_ALREADY_USED = "invalid_exact_evm_nonce_already_used"
    INSUFFICIENT_BALANCE = "invalid_exact_evm_insufficient_balance"

    # -- settlement (402 / 503)
    TRANSACTION_FAILED = "transaction_failed"
    CHAIN_UNAVAILABLE = "chain_unavailable"
    PAYMENT_IN_PROGRESS = "payment_in_progress"  # 503: the same payment is being settled
    LEDGER_UNAVAILABLE = "ledger_unavailable"  # 503: the payment ledger cannot be written

    # -- re-reads of a bought article (agent-pay extension)
    ENTITLEMENT_INVALID = "entitlement_invalid"  # 402: the proof or the entitlement is missing
    ENTITLEMENT_MALFORMED = "invalid_entitlement_header"  # 400: the header cannot be read
    RECEIPT_INVALID = "receipt_invalid"  # a receipt does not verify (offline check)

    # -- x402's standard extensions (sign-in-with-x, payment-identifier)
    SIWX_MALFORMED = "invalid_siwx_header"  # 400: SIGN-IN-WITH-X cannot be read
    PAYMENT_ID_INVALID = "invalid_payment_identifier"  # 400: not 16-128 of [A-Za-z0-9_-]
    PAYMENT_ID_CONFLICT = "payment_identifier_conflict"  # 409: the id names another payment

    # -- the channel scheme (402 unless noted; agent-pay extension, see docs/protocol.md)
    CHANNEL_UNKNOWN = "channel_unknown"  # no such channel on the channel contract
    CHANNEL_CLOSED = "channel_closed"  # closed, or its payer asked to close it
    CHANNEL_PAYEE_MISMATCH = "channel_payee_mismatch"  # the channel pays someone else
    CHANNEL_ASSET_MISMATCH = "channel_asset_mismatch"  # the channel holds another token
    CHANNEL_INVALID_SIGNATURE = "channel_invalid_signature"  # not the payer's (or its signer's)
    CHANNEL_AMOUNT_NOT_INCREASING = "channel_amount_not_increasing"  # pays for a paid range
    CHANNEL_VOUCHER_USED = "channel_voucher_used"  # this very voucher was already spent
    CHANNEL_OVER_DEPOSIT = "channel_over_deposit"  # top up, or open a new channel
    CHANNEL_INVALID_OPEN = "channel_invalid_open"  # the deposit authorization is unusable
    CHANNEL_DEPOSIT_TOO_SMALL = "channel_deposit_too_small"  # below the offer's minDeposit
    CHANNEL_RELEASE_INVALID = "channel_release_invalid"  # 400: a release the facilitator never gave
    CHANNEL_BUSY = "channel_busy"  # 503: another instance holds the channel's lease; retry

    # -- the resource
    NOT_FOUND = "not_found"  # 404: no such article
    CONTENT_UNAVAILABLE = "content_unavailable"  # 503: verified, but could not be produced

    # -- client side
    OVER_POLICY = "over_policy"
    NO_ACCEPTABLE_OFFER = "no_acceptable_offer"
    PAYMENT_REFUSED = "payment_refused"  # the server still said 402 after we paid

    # -- anything else
    CONFIGURATION = "configuration_error"
    UNEXPECTED = "unexpected_error"


class AgentPayError(Exception):
    """Root of every agent-pay error: a reason code, a human message, an HTTP status."""

    status_code: int = 500
    default_reason: Reason = Reason.UNEXPECTED

    def __init__(self, message: str, reason: Reason | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason or self.default_reason

    def __str__(self) -> str:
        return f"{self.message} [{self.reason}]"


class MalformedPaymentError(AgentPayError):
    """The payment header cannot be decoded or does not fit the schema (HTTP 400)."""

    status_code = 400
    default_reason = Reason.INVALID_PAYLOAD


class OversizedRequestError(MalformedPaymentError):
    """A request body is larger than the server reads; nothing of it was parsed (HTTP 413)."""

    status_code = 413
    default_reason = Reason.REQUEST_TOO_LARGE


class SlowRequestError(MalformedPaymentError):
    """A request body did not arrive within the server's time limit (HTTP 408)."""

    status_code = 408
    default_reason = Reason.REQUEST_TIMEOUT


class PaymentRejectedError(AgentPayError):
    """The payment was read but is not acceptable for this resource (HTTP 402)."""

    status_code = 402


class PaymentConflictError(AgentPayError):
    """A payment identifier already names another payment, or another resource (HTTP 409)."""

    status_code = 409
    default_reason = Reason.PAYMENT_ID_CONFLICT


class SettlementFailedError(AgentPayError):
    """The chain refused the transfer: nothing was charged, nothing is served (HTTP 402)."""

    status_code = 402
    default_reason = Reason.TRANSACTION_FAILED


class ChainUnavailableError(AgentPayError):
    """The node cannot be reached or did not answer in time; retry later (HTTP 503)."""

    status_code = 503
    default_reason = Reason.CHAIN_UNAVAILABLE

    def __init__(
        self,
        message: str,
        reason: Reason | None = None,
        retry_after: int = 2,
        *,
        broadcast: bool | None = None,
        transaction: str | None = None,
    ) -> None:
        super().__init__(message, reason)
        self.retry_after = retry_after
        self.broadcast = broadcast
        """From a settlement: whether its transaction reached the node before the trouble
        (True: it may still be mined; False: certainly not sent; None: unknown)."""
        self.transaction = transaction
        """From a settlement that may have been broadcast: the hash (0x-hex) of the last
        transaction handed to the node, which may still be mined; None if none was."""


class PolicyViolationError(AgentPayError):
    """Paying this offer would break the agent's spending policy; nothing was signed."""

    status_code = 402
    default_reason = Reason.OVER_POLICY


class NoAcceptableOfferError(AgentPayError):
    """None of the server's offers can be paid with the tokens and networks we have."""

    status_code = 402
    default_reason = Reason.NO_ACCEPTABLE_OFFER


class ConfigurationError(AgentPayError):
    """A setting, key or keystore is missing or wrong."""

    default_reason = Reason.CONFIGURATION
