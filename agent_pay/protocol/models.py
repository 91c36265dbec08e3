"""x402 version 2 messages: what a 402 offers, what an agent pays with, what settlement says.

Field names and shapes follow the stock x402 v2 SDK so its clients, servers and facilitators
read ours and we read theirs. Where the stock SDK is loose (any string for an amount or an
address) we are strict, but only in ways a conforming peer never notices.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Final, Generic, Self, TypeVar

from pydantic import (
    BeforeValidator,
    Field,
    ModelWrapValidatorHandler,
    PrivateAttr,
    SerializerFunctionWrapHandler,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)

from agent_pay.errors import MalformedPaymentError, Reason
from agent_pay.protocol.base import (
    Address,
    Amount,
    Network,
    NonNegativeInt,
    WireModel,
    describe_validation_error,
    is_evm_network,
    normalize_address,
)
from agent_pay.protocol.exact import ExactEvmPayload

__all__ = [
    "X402_VERSION",
    "FacilitatorRequest",
    "PaymentPayload",
    "PaymentRequired",
    "PaymentRequirements",
    "ResourceInfo",
    "SettleResponse",
    "SupportedKind",
    "SupportedResponse",
    "VerifyResponse",
]

X402_VERSION: Final = 2
"""The only x402 protocol version we speak."""

_TX_HASH = re.compile(r"0x[0-9a-fA-F]{64}")


def _parse_version(value: object) -> int:
    if type(value) is not int or value != X402_VERSION:
        raise ValueError(f"must be {X402_VERSION}")
    return value


def _parse_tx_hash(value: object) -> str:
    # "" is what x402 sends when nothing reached the chain.
    if value == "":
        return ""
    if not isinstance(value, str) or not _TX_HASH.fullmatch(value):
        raise ValueError('must be a 0x-prefixed 32-byte transaction hash or ""')
    return value.lower()


_ADDRESS_FIELDS: Final = (("asset", "asset"), ("pay_to", "payTo"))

X402Version = Annotated[int, BeforeValidator(_parse_version)]
TxHash = Annotated[str, BeforeValidator(_parse_tx_hash)]


class ResourceInfo(WireModel):
    """What is being sold: its URL and, optionally, how to present it."""

    url: str
    description: str | None = None
    mime_type: str | None = None
    service_name: str | None = None
    tags: list[str] | None = None
    icon_url: str | None = None


class PaymentRequirements(WireModel):
    """One way to pay for a resource; a 402 lists several in `accepts`.

    The client echoes the one it picked as `PaymentPayload.accepted`, and the server compares
    it field by field with what it offered, so parsing then serialising must give back the same
    JSON. On `eip155` networks `asset` and `pay_to` must be EVM addresses and are checksummed;
    offers on other networks (a stock server may list Solana beside EVM) are kept as given so
    that one foreign offer does not make the whole 402 unreadable.
    """

    scheme: str
    network: Network
    amount: Amount
    asset: str
    pay_to: str
    max_timeout_seconds: NonNegativeInt
    extra: dict[str, Any] = Field(default_factory=dict)

    # A stock x402 server compares `accepted` with its offer by plain string equality, so an
    # address it spelled in lowercase must come back in lowercase. Python sees the checksum
    # form; the wire gets the peer's spelling back.
    _spelling: dict[str, str] = PrivateAttr(default_factory=dict)

    @field_validator("asset", "pay_to")
    @classmethod
    def _evm_address(cls, value: str, info: ValidationInfo) -> str:
        network = info.data.get("network")
        if network is None or is_evm_network(network):
            return normalize_address(value)
        return value

    @model_validator(mode="wrap")
    @classmethod
    def _remember_spelling(cls, data: Any, handler: ModelWrapValidatorHandler[Self]) -> Self:
        model = handler(data)
        if isinstance(data, dict):
            for name, alias in _ADDRESS_FIELDS:
                raw = data.get(alias, data.get(name))
                if isinstance(raw, str) and raw != getattr(model, name):
                    model._spelling[name] = raw
        return model

    @model_serializer(mode="wrap")
    def _echo_spelling(self, handler: SerializerFunctionWrapHandler) -> Any:
        data = handler(self)
        for name, alias in _ADDRESS_FIELDS:
            raw = self._spelling.get(name)
            # Only a respelling of the current value: model_copy(update=...) may have changed it.
            if raw is None or raw.lower() != getattr(self, name).lower():
                continue
            data[alias if alias in data else name] = raw
        return data

    def __eq__(self, other: object) -> bool:
        # The same offer whatever the spelling of its addresses.
        if not isinstance(other, PaymentRequirements):
            return NotImplemented
        return self.__dict__ == other.__dict__

    __hash__ = WireModel.__hash__


class PaymentRequired(WireModel):
    """The body of the `PAYMENT-REQUIRED` header on a 402 response.

    `error` is empty on the first 402 and carries a reason code when a payment was refused.
    """

    x402_version: X402Version = X402_VERSION
    error: str | None = None
    resource: ResourceInfo | None = None
    accepts: list[PaymentRequirements]
    extensions: dict[str, Any] | None = None


JsonPath = tuple[str | int, ...]
M = TypeVar("M", bound=WireModel)


class _Seen(Generic[M]):
    """Parts of payments validated lately, by content: an agent echoes one offer (`accepted`)
    for one resource in every payment, and validating them again (models, checksummed
    addresses) was a third of the cost of reading a channel voucher's header.

    A hit is exactly what validation would return. Decoded JSON compares equal across types
    (1 == 1.0 == True), so besides `==` the leaves that are not strings must have the types
    they had when the part was validated. Thread-safe (single dict operations).

    Args:
        key: the fields that find a candidate (it is then compared whole).
    """

    _SIZE: Final = 256

    def __init__(self, *key: str) -> None:
        self._fields = key
        self._seen: dict[tuple[Any, ...], tuple[dict[str, Any], list[tuple[JsonPath, type]], M]]
        self._seen = {}

    def _key(self, raw: dict[str, Any]) -> tuple[Any, ...]:
        return tuple([raw.get(name) for name in self._fields])

    def get(self, raw: Any) -> M | None:
        if type(raw) is not dict:
            return None
        try:
            seen = self._seen.get(self._key(raw))
        except TypeError:  # an unhashable value where a string belongs: not one we saw
            return None
        if seen is None:
            return None
        known, typed, model = seen
        if raw != known:
            return None
        for path, kind in typed:
            value: Any = raw
            for step in path:
                value = value[step]
            if type(value) is not kind:
                return None
        return model

    def remember(self, raw: Any, model: M) -> None:
        if type(raw) is not dict:
            return
        typed: list[tuple[JsonPath, type]] = []
        known = _copy_json(raw, (), typed)
        try:
            key = self._key(raw)
            hash(key)
        except TypeError:
            return
        if len(self._seen) >= self._SIZE:
            self._seen.clear()
        self._seen[key] = (known, typed, model)


def _copy_json(value: Any, path: JsonPath, typed: list[tuple[JsonPath, type]]) -> Any:
    """A copy of decoded JSON `value`, noting the path and type of every leaf not a string."""
    if type(value) is dict:
        return {k: _copy_json(v, (*path, k), typed) for k, v in value.items()}
    if type(value) is list:
        return [_copy_json(v, (*path, i), typed) for i, v in enumerate(value)]
    if type(value) is not str:
        typed.append((path, type(value)))
    return value


_SEEN_OFFERS: Final = _Seen[PaymentRequirements]("scheme", "network", "amount", "asset", "payTo")
_SEEN_RESOURCES: Final = _Seen[ResourceInfo]("url")


class PaymentPayload(WireModel):
    """The body of the `PAYMENT-SIGNATURE` header an agent retries with.

    `payload` is scheme-specific and stays a dict here; `exact_evm()` reads it for "exact".
    """

    x402_version: X402Version
    resource: ResourceInfo | None = None
    accepted: PaymentRequirements
    payload: dict[str, Any]
    extensions: dict[str, Any] | None = None

    @classmethod
    def from_wire(cls, data: Any) -> Self:
        # The offer echoed and the resource: parts validated before with the same content are
        # reused (`_Seen`).
        if type(data) is not dict:
            return super().from_wire(data)
        raw_offer, raw_resource = data.get("accepted"), data.get("resource")
        offer, resource = _SEEN_OFFERS.get(raw_offer), _SEEN_RESOURCES.get(raw_resource)
        if offer is not None or resource is not None:
            data = dict(data)
            if offer is not None:
                data["accepted"] = offer
            if resource is not None:
                data["resource"] = resource
        payment = super().from_wire(data)
        if offer is None:
            _SEEN_OFFERS.remember(raw_offer, payment.accepted)
        if resource is None and payment.resource is not None:
            _SEEN_RESOURCES.remember(raw_resource, payment.resource)
        return payment

    def exact_evm(self) -> ExactEvmPayload:
        """`payload` as an "exact" EVM payload.

        Raises:
            MalformedPaymentError: with `Reason.INVALID_PAYLOAD` if it does not fit.
        """
        try:
            return ExactEvmPayload.from_wire(self.payload)
        except ValidationError as error:
            detail = describe_validation_error(error)
            raise MalformedPaymentError(f"payload.{detail}", Reason.INVALID_PAYLOAD) from None


class VerifyResponse(WireModel):
    """A facilitator's answer to `POST /verify`: would this payment settle right now?"""

    is_valid: bool
    invalid_reason: str | None = None
    invalid_message: str | None = None
    payer: Address | None = None
    extensions: dict[str, Any] | None = None
    extra: dict[str, Any] | None = None


class SettleResponse(WireModel):
    """A facilitator's answer to `POST /settle`, and the body of the `PAYMENT-RESPONSE` header.

    `transaction` is the settlement transaction hash, or "" when nothing reached the chain.
    """

    success: bool
    error_reason: str | None = None
    error_message: str | None = None
    payer: Address | None = None
    transaction: TxHash
    network: Network
    amount: Amount | None = None
    extensions: dict[str, Any] | None = None
    extra: dict[str, Any] | None = None


class FacilitatorRequest(WireModel):
    """The JSON body of `POST /verify` and `POST /settle`."""

    x402_version: X402Version
    payment_payload: PaymentPayload
    payment_requirements: PaymentRequirements


class SupportedKind(WireModel):
    """One (version, scheme, network) a facilitator can verify and settle.

    Version and network are not checked here: a stock facilitator also lists its v1 kinds,
    whose networks are legacy names such as "base-sepolia".
    """

    x402_version: NonNegativeInt
    scheme: str
    network: str
    extra: dict[str, Any] | None = None


class SupportedResponse(WireModel):
    """A facilitator's answer to `GET /supported`."""

    kinds: list[SupportedKind]
    extensions: list[str] = Field(default_factory=list)
    signers: dict[str, list[str]] = Field(default_factory=dict)
