"""The x402 v2 wire models: shapes, strictness, and exact round trips."""

from __future__ import annotations

import json
from typing import Any

import pytest
from _wire_strategies import any_model, payment_payloads, requirements
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

import agent_pay.protocol as protocol
from agent_pay.errors import MalformedPaymentError, Reason
from agent_pay.protocol import (
    ExactEvmPayload,
    FacilitatorRequest,
    PaymentPayload,
    PaymentRequired,
    PaymentRequirements,
    SettleResponse,
    SupportedResponse,
    VerifyResponse,
    caip2,
    parse_caip2,
)
from agent_pay.protocol.base import WIRE_CONTEXT

USDC_BASE_SEPOLIA = "0x036CbD53842c5426634e7929541eC2318f3dCF7e"
PAYEE = "0x209693Bc6afc0C5328bA36FaF03C514EF312287C"
PAYER = "0x857b06519E91e3A54538791bDbb0E22373e36b66"

# Shapes as the stock x402 v2 Python SDK (2.25.0) writes them: camelCase, string amounts,
# string authorization fields, extra = the token's EIP-712 name and version.
STOCK_REQUIREMENTS: dict[str, Any] = {
    "scheme": "exact",
    "network": "eip155:84532",
    "amount": "10000",
    "asset": USDC_BASE_SEPOLIA,
    "payTo": PAYEE,
    "maxTimeoutSeconds": 300,
    "extra": {"name": "USDC", "version": "2"},
}
STOCK_PAYMENT_REQUIRED: dict[str, Any] = {
    "x402Version": 2,
    "error": "Payment required",
    "resource": {
        "url": "https://api.example.com/premium-data",
        "description": "Access to premium market data",
        "mimeType": "application/json",
    },
    "accepts": [STOCK_REQUIREMENTS],
}
STOCK_PAYMENT_PAYLOAD: dict[str, Any] = {
    "x402Version": 2,
    "resource": STOCK_PAYMENT_REQUIRED["resource"],
    "accepted": STOCK_REQUIREMENTS,
    "payload": {
        "signature": "0x" + "2d" * 64 + "1b",
        "authorization": {
            "from": PAYER,
            "to": PAYEE,
            "value": "10000",
            "validAfter": "0",
            "validBefore": "1740672154",
            "nonce": "0xf3746613c2d920b5fdabc0856f2aeb2d4f88ee6037b8cc5d04a71a4462f13480",
        },
    },
}
STOCK_SETTLE: dict[str, Any] = {
    "success": True,
    "payer": PAYER,
    "transaction": "0x" + "ab" * 32,
    "network": "eip155:84532",
    "amount": "10000",
}
STOCK_SETTLE_FAILED: dict[str, Any] = {
    "success": False,
    "errorReason": "invalid_exact_evm_payload_signature",
    "errorMessage": "signature does not match",
    "transaction": "",
    "network": "eip155:84532",
}
STOCK_VERIFY: dict[str, Any] = {
    "isValid": False,
    "invalidReason": "network_mismatch",
    "payer": PAYER,
}
STOCK_SUPPORTED: dict[str, Any] = {
    "kinds": [
        {"x402Version": 2, "scheme": "exact", "network": "eip155:84532"},
        {"x402Version": 1, "scheme": "exact", "network": "base-sepolia"},
    ],
    "extensions": ["bazaar"],
    "signers": {"eip155:*": [PAYEE]},
}


@pytest.mark.parametrize(
    ("model", "data"),
    [
        (PaymentRequirements, STOCK_REQUIREMENTS),
        (PaymentRequired, STOCK_PAYMENT_REQUIRED),
        (PaymentPayload, STOCK_PAYMENT_PAYLOAD),
        (SettleResponse, STOCK_SETTLE),
        (SettleResponse, STOCK_SETTLE_FAILED),
        (VerifyResponse, STOCK_VERIFY),
        (SupportedResponse, STOCK_SUPPORTED),
        (
            FacilitatorRequest,
            {
                "x402Version": 2,
                "paymentPayload": STOCK_PAYMENT_PAYLOAD,
                "paymentRequirements": STOCK_REQUIREMENTS,
            },
        ),
    ],
)
def test_stock_x402_json_parses_and_reserializes_identically(
    model: type[protocol.WireModel], data: dict[str, Any]
) -> None:
    parsed = model.from_wire(data)
    assert parsed.to_wire() == data
    assert json.loads(parsed.to_json()) == data


def test_stock_payload_reads_as_exact_evm() -> None:
    exact = PaymentPayload.from_wire(STOCK_PAYMENT_PAYLOAD).exact_evm()
    assert exact.authorization.from_ == PAYER
    assert exact.authorization.value == 10_000
    assert exact.authorization.valid_before == 1_740_672_154
    assert exact.to_wire() == STOCK_PAYMENT_PAYLOAD["payload"]


@given(any_model)
def test_json_round_trip_is_exact(model: protocol.WireModel) -> None:
    again = type(model).model_validate(json.loads(model.to_json()))
    assert again == model
    assert again.to_json() == model.to_json()
    assert type(model).from_wire(model.to_wire()) == model


@given(requirements)
def test_requirements_amount_is_a_string_on_the_wire(req: PaymentRequirements) -> None:
    wire = req.to_wire()
    assert wire["amount"] == str(req.amount)
    assert isinstance(wire["maxTimeoutSeconds"], int)


def test_amount_accepts_a_python_int_in_code_but_not_a_json_number() -> None:
    in_code = PaymentRequirements.model_validate({**STOCK_REQUIREMENTS, "amount": 10_000})
    assert in_code.amount == 10_000
    with pytest.raises(ValidationError, match="amount"):
        PaymentRequirements.from_wire({**STOCK_REQUIREMENTS, "amount": 10_000})
    with pytest.raises(ValidationError, match="amount"):
        PaymentRequirements.model_validate_json(json.dumps({**STOCK_REQUIREMENTS, "amount": 1}))


@pytest.mark.parametrize(
    "amount",
    ["", "-1", "+1", "01", "00", "1.0", "1e3", " 1", "1 ", "1_000", "0x10",
     "\u0661\u0662", "\u00b2", str(2**256), "9" * 79, True, None, 1.0],
)  # fmt: skip
def test_non_canonical_amounts_are_refused(amount: object) -> None:
    with pytest.raises(ValidationError, match="amount"):
        PaymentRequirements.from_wire({**STOCK_REQUIREMENTS, "amount": amount})


@pytest.mark.parametrize("amount", ["0", "1", str(2**256 - 1)])
def test_canonical_amounts_round_trip(amount: str) -> None:
    req = PaymentRequirements.from_wire({**STOCK_REQUIREMENTS, "amount": amount})
    assert req.amount == int(amount)
    assert req.to_wire()["amount"] == amount


def test_addresses_are_checksummed_and_bad_checksums_refused() -> None:
    lower = PaymentRequirements.from_wire({**STOCK_REQUIREMENTS, "payTo": PAYEE.lower()})
    assert lower.pay_to == PAYEE
    upper = PaymentRequirements.from_wire({**STOCK_REQUIREMENTS, "payTo": "0x" + PAYEE[2:].upper()})
    assert upper.pay_to == PAYEE
    typo = PAYEE[:-1] + ("c" if PAYEE[-1] == "C" else "C")
    for bad in [typo, PAYEE[:-2], PAYEE[2:], PAYEE + "00", "0x" + "g" * 40, 42]:
        with pytest.raises(ValidationError, match="payTo"):
            PaymentRequirements.from_wire({**STOCK_REQUIREMENTS, "payTo": bad})


def test_offers_on_other_networks_are_kept_verbatim() -> None:
    solana = {
        **STOCK_REQUIREMENTS,
        "network": "solana:EtWTRABZaYq6iMfeYKouRu166VU2xqa1",
        "asset": "4zMMC9srt5Ri5X14GAgXhaHii3GnPAEERYPJgZJDncDU",
        "payTo": "2wKupLR9q6wXYppw8Gr2NvWxKBUqm4PPJKkQfoxHDBg4",
    }
    both = PaymentRequired.from_wire(
        {**STOCK_PAYMENT_REQUIRED, "accepts": [STOCK_REQUIREMENTS, solana]}
    )
    assert both.to_wire()["accepts"][1] == solana


@pytest.mark.parametrize("network", ["eip155", "eip155:", "EIP155:1", "eip155:1:2", "x:1", 8453])
def test_network_must_be_caip2(network: object) -> None:
    with pytest.raises(ValidationError, match="network"):
        PaymentRequirements.from_wire({**STOCK_REQUIREMENTS, "network": network})


def test_wire_input_uses_camel_case_only_and_refuses_unknown_fields() -> None:
    snake = {**STOCK_REQUIREMENTS, "pay_to": PAYEE}
    del snake["payTo"]
    with pytest.raises(ValidationError):
        PaymentRequirements.from_wire(snake)
    with pytest.raises(ValidationError, match="surprise"):
        PaymentRequirements.from_wire({**STOCK_REQUIREMENTS, "surprise": 1})
    # In code, field names work too.
    assert PaymentRequirements.model_validate({**snake}).pay_to == PAYEE


@pytest.mark.parametrize("timeout", [-1, "300", 300.0, True])
def test_max_timeout_is_a_non_negative_json_integer(timeout: object) -> None:
    with pytest.raises(ValidationError, match="maxTimeoutSeconds"):
        PaymentRequirements.from_wire({**STOCK_REQUIREMENTS, "maxTimeoutSeconds": timeout})


def test_models_are_frozen() -> None:
    req = PaymentRequirements.from_wire(STOCK_REQUIREMENTS)
    with pytest.raises(ValidationError):
        req.amount = 1


def test_none_fields_are_omitted_but_none_inside_extra_is_kept() -> None:
    req = PaymentRequirements.from_wire({**STOCK_REQUIREMENTS, "extra": {"k": None}})
    assert req.to_wire()["extra"] == {"k": None}
    assert "error" not in PaymentRequired(accepts=[req]).to_wire()


def test_payment_required_defaults_to_version_2_and_refuses_others() -> None:
    assert PaymentRequired(accepts=[]).x402_version == 2
    for version in [1, 3, "2", True, 2.0]:
        with pytest.raises(ValidationError, match="x402Version"):
            PaymentPayload.from_wire({**STOCK_PAYMENT_PAYLOAD, "x402Version": version})


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("signature",), "0x1234"),
        (("signature",), "0x" + "zz" * 65),
        (("authorization", "value"), 10_000),
        (("authorization", "value"), "-1"),
        (("authorization", "validBefore"), 1740672154),
        (("authorization", "nonce"), "0x1234"),
        (("authorization", "from"), "nobody"),
        (("authorization", "to"), None),
    ],
)
def test_exact_evm_refuses_payloads_that_do_not_fit(path: tuple[str, ...], value: object) -> None:
    data = json.loads(json.dumps(STOCK_PAYMENT_PAYLOAD))
    target = data["payload"]
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    payment = PaymentPayload.from_wire(data)  # payload is a free dict at this layer
    with pytest.raises(MalformedPaymentError) as caught:
        payment.exact_evm()
    assert caught.value.reason is Reason.INVALID_PAYLOAD
    assert path[-1] in caught.value.message


def test_exact_evm_refuses_missing_and_extra_members() -> None:
    for payload in [
        {},
        {"signature": "0x" + "00" * 65},
        {**STOCK_PAYMENT_PAYLOAD["payload"], "x": 1},
    ]:
        payment = PaymentPayload.from_wire({**STOCK_PAYMENT_PAYLOAD, "payload": payload})
        with pytest.raises(MalformedPaymentError):
            payment.exact_evm()


def test_hex_values_are_normalised_to_lowercase() -> None:
    data = json.loads(json.dumps(STOCK_PAYMENT_PAYLOAD["payload"]))
    data["signature"] = data["signature"].upper().replace("0X", "0x")
    data["authorization"]["nonce"] = data["authorization"]["nonce"].upper().replace("0X", "0x")
    exact = ExactEvmPayload.from_wire(data)
    assert exact.signature == STOCK_PAYMENT_PAYLOAD["payload"]["signature"]
    assert exact.authorization.nonce == STOCK_PAYMENT_PAYLOAD["payload"]["authorization"]["nonce"]


@pytest.mark.parametrize("transaction", ["0x1234", "ab" * 32, None, "0x" + "ab" * 33])
def test_settle_transaction_is_a_hash_or_empty(transaction: object) -> None:
    with pytest.raises(ValidationError, match="transaction"):
        SettleResponse.from_wire({**STOCK_SETTLE, "transaction": transaction})


def test_caip2_round_trip_and_refusals() -> None:
    assert caip2(31337) == "eip155:31337"
    assert parse_caip2("eip155:31337") == 31337
    assert parse_caip2(caip2(2**64)) == 2**64
    for bad in ["eip155:0", "eip155:01", "eip155:-1", "eip155:+1", "eip155:1.0", "eip155:",
                "solana:5eykt4UsFv8P8NJdTREpY1vzqKqZKvdp", "eip155:\u0661", " eip155:1",
                "eip155:1 ",
                "eip155:" + "9" * 33]:  # fmt: skip
        with pytest.raises(ValueError, match="eip155"):
            parse_caip2(bad)
    for bad_id in [0, -1, True, 10**40]:
        with pytest.raises(ValueError, match="chain id"):
            caip2(bad_id)


def test_public_names_are_locked() -> None:
    assert sorted(protocol.__all__) == sorted(
        [
            "MAX_HEADER_BYTES", "MAX_UINT256", "PAYMENT_REQUIRED_HEADER", "PAYMENT_RESPONSE_HEADER",
            "PAYMENT_SIGNATURE_HEADER", "X402_VERSION", "ExactEvmAuthorization", "ExactEvmPayload",
            "FacilitatorRequest", "PaymentPayload", "PaymentRequired", "PaymentRequirements",
            "ResourceInfo", "SettleResponse", "SupportedKind", "SupportedResponse",
            "VerifyResponse", "WireModel", "caip2", "decode_header", "decode_json",
            "encode_header", "normalize_address", "parse_caip2",
        ]
    )  # fmt: skip
    for name in protocol.__all__:
        assert hasattr(protocol, name)


def test_a_peers_address_spelling_is_echoed_back_verbatim() -> None:
    # A stock server compares `accepted` with its offer by string equality: an offer it spelled
    # in lowercase must be echoed in lowercase, while Python code sees the checksum form.
    lowercase = {**STOCK_REQUIREMENTS, "asset": USDC_BASE_SEPOLIA.lower(), "payTo": PAYEE.lower()}
    offer = PaymentRequirements.from_wire(lowercase)
    assert (offer.asset, offer.pay_to) == (USDC_BASE_SEPOLIA, PAYEE)
    assert offer.to_wire() == lowercase
    assert offer == PaymentRequirements.from_wire(STOCK_REQUIREMENTS)
    payment = PaymentPayload.from_wire({**STOCK_PAYMENT_PAYLOAD, "accepted": lowercase})
    assert payment.to_wire()["accepted"] == lowercase
    assert PaymentPayload(x402_version=2, accepted=offer, payload={}).to_wire()["accepted"] == (
        lowercase
    )
    # A changed address is never written with the old spelling.
    moved = offer.model_copy(update={"pay_to": PAYER})
    assert moved.to_wire()["payTo"] == PAYER
    assert moved.to_wire()["asset"] == USDC_BASE_SEPOLIA.lower()


# -- the offer a payment echoes is validated once per content (`PaymentPayload.from_wire`) -----


def _validated_afresh(data: dict[str, Any]) -> PaymentPayload:
    return PaymentPayload.model_validate(data, context=WIRE_CONTEXT, by_alias=True, by_name=False)


def _outcome(validate: Any, data: dict[str, Any]) -> str:
    """The JSON a validation gives (types spelled out: 1, 1.0 and true differ), or its error."""
    try:
        return str(validate(data).to_json())
    except ValidationError as error:
        return "error: " + str(error.errors(include_url=False)[0]["loc"])


def _respelled(value: Any, flips: list[bool]) -> Any:
    """`value` with some numbers in another type that compares equal (1 -> 1.0 -> True)."""
    if isinstance(value, dict):
        return {k: _respelled(v, flips) for k, v in value.items()}
    if isinstance(value, list):
        return [_respelled(v, flips) for v in value]
    if type(value) in (int, float, bool) and flips and flips.pop():
        if type(value) is int:
            return float(value)
        if type(value) is float and value in (0.0, 1.0):
            return bool(value)
        if type(value) is bool:
            return int(value)
    return value


@given(payment_payloads, st.lists(st.booleans(), max_size=12))
def test_a_seen_offer_validates_as_it_would_afresh(
    payment: PaymentPayload, flips: list[bool]
) -> None:
    # The second payment's offer compares == to the first's, but some of its numbers are in
    # another type: reusing the first's validation would hide that.
    first = payment.to_wire()
    second = {**first, "accepted": _respelled(first["accepted"], list(flips))}
    if "resource" in first and flips and flips[0]:  # the same resource, with a null field
        second["resource"] = {**first["resource"], "iconUrl": None}
    assert _outcome(PaymentPayload.from_wire, first) == _outcome(_validated_afresh, first)
    assert _outcome(PaymentPayload.from_wire, second) == _outcome(_validated_afresh, second)
    assert _outcome(PaymentPayload.from_wire, first) == _outcome(_validated_afresh, first)


def test_a_seen_offer_is_reused_only_for_the_same_content() -> None:
    first = PaymentPayload.from_wire(STOCK_PAYMENT_PAYLOAD)
    again = PaymentPayload.from_wire(json.loads(json.dumps(STOCK_PAYMENT_PAYLOAD)))
    assert again.accepted is first.accepted  # validated once
    for changed in (
        {"maxTimeoutSeconds": 300.0},  # == 300, but not an integer on the wire
        {"extra": {"name": "USDC", "version": "2", "flag": True}},
    ):
        data = {**STOCK_PAYMENT_PAYLOAD, "accepted": {**STOCK_REQUIREMENTS, **changed}}
        assert _outcome(PaymentPayload.from_wire, data) == _outcome(_validated_afresh, data)
    with_one = {**STOCK_REQUIREMENTS, "extra": {"name": "USDC", "version": "2", "flag": 1}}
    PaymentPayload.from_wire({**STOCK_PAYMENT_PAYLOAD, "accepted": with_one})
    with_true = {**STOCK_REQUIREMENTS, "extra": {"name": "USDC", "version": "2", "flag": True}}
    payment = PaymentPayload.from_wire({**STOCK_PAYMENT_PAYLOAD, "accepted": with_true})
    assert payment.accepted.extra["flag"] is True
    # A lowercase payee is its own content, echoed back as it was spelled.
    lower = {**STOCK_REQUIREMENTS, "payTo": PAYEE.lower()}
    for _ in range(2):
        echoed = PaymentPayload.from_wire({**STOCK_PAYMENT_PAYLOAD, "accepted": lower})
        assert echoed.accepted.to_wire()["payTo"] == PAYEE.lower()
        assert echoed.accepted.pay_to == PAYEE
