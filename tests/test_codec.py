"""The header codec: exact round trips, one error type for every bad input, the right reason."""

from __future__ import annotations

import base64
import contextlib
import json
from typing import Any

import pytest
from _wire_strategies import (
    any_model,
    facilitator_requests,
    json_objects,
    json_values,
    payment_payloads,
    payment_required,
    settle_responses,
)
from hypothesis import given, settings
from hypothesis import strategies as st
from test_protocol_models import STOCK_PAYMENT_PAYLOAD, STOCK_PAYMENT_REQUIRED, STOCK_SETTLE

from agent_pay.errors import MalformedPaymentError, Reason
from agent_pay.protocol import (
    MAX_HEADER_BYTES,
    FacilitatorRequest,
    PaymentPayload,
    PaymentRequired,
    SettleResponse,
    WireModel,
    decode_header,
    decode_json,
    encode_header,
)

MODELS: list[type[WireModel]] = [
    PaymentPayload,
    PaymentRequired,
    SettleResponse,
    FacilitatorRequest,
]


def b64(data: bytes | str) -> str:
    raw = data.encode("utf-8") if isinstance(data, str) else data
    return base64.b64encode(raw).decode("ascii")


def b64_json(obj: Any) -> str:
    return b64(json.dumps(obj))


def reason_of(value: str, model: type[WireModel] = PaymentPayload) -> Reason:
    with pytest.raises(MalformedPaymentError) as caught:
        decode_header(value, model)
    assert caught.value.status_code == 400
    return caught.value.reason


@given(st.one_of(payment_required, payment_payloads, settle_responses, facilitator_requests))
def test_decode_encode_round_trip(model: WireModel) -> None:
    header = encode_header(model)
    assert header.isascii()
    assert decode_header(header, type(model)) == model


@given(any_model)
def test_header_is_standard_base64_of_compact_camel_case_json(model: WireModel) -> None:
    decoded = base64.b64decode(encode_header(model), validate=True).decode("utf-8")
    assert decoded == model.to_json()
    assert json.loads(decoded) == model.to_wire()


@pytest.mark.parametrize(
    ("data", "model"),
    [
        (STOCK_PAYMENT_REQUIRED, PaymentRequired),
        (STOCK_PAYMENT_PAYLOAD, PaymentPayload),
        (STOCK_SETTLE, SettleResponse),
    ],
)
def test_stock_header_decodes_and_reencodes_to_the_same_json(
    data: dict[str, Any], model: type[WireModel]
) -> None:
    # The stock SDK writes PAYMENT-RESPONSE with json.dumps (spaces), the others compact.
    decoded = decode_header(b64_json(data), model)
    assert json.loads(base64.b64decode(encode_header(decoded))) == data


def test_empty_header() -> None:
    assert reason_of("") is Reason.INVALID_HEADER


@pytest.mark.parametrize(
    "value",
    [
        "!!!!",
        "not base64 at all",
        b64_json(STOCK_PAYMENT_PAYLOAD)[:-1],  # broken padding
        b64_json({"a": 1}).rstrip("="),  # missing padding
        " " + b64_json(STOCK_PAYMENT_PAYLOAD),
        b64_json(STOCK_PAYMENT_PAYLOAD)[:20] + "\n" + b64_json(STOCK_PAYMENT_PAYLOAD)[20:],
        base64.urlsafe_b64encode(b"\xfb\xff" * 30).decode(),  # url-safe alphabet: - and _
        "é" * 8,
    ],
)
def test_garbled_base64(value: str) -> None:
    assert reason_of(value) is Reason.INVALID_HEADER


@pytest.mark.parametrize(
    "raw",
    [
        b"\xff\xfe\x00",  # not UTF-8
        b"{'x402Version': 2}",  # not JSON
        b'{"x402Version": 2,',
        b"[]",
        b'[{"x402Version": 2}]',
        b'"a string"',
        b"42",
        b"null",
        b'{"x402Version": NaN}',
        b'{"a": Infinity}',
        b'{"x402Version": 2, "x402Version": 2}',  # duplicate key
        b'{"x402Version": 2, "accepted": {"amount": "1", "amount": "2"}}',  # nested duplicate
        b'{"a": "\\ud800"}',  # a lone surrogate: no UTF-8 text has one
        b'{"a": "\xff"}',  # not UTF-8 inside a string
        b'{"a": 1}\x00',
        b"\xef\xbb\xbf{}",  # a byte order mark
        b'{"a": ' + b"9" * 5000 + b"}",  # beyond Python's int-from-text limit
    ],
)
def test_content_that_is_not_one_json_object(raw: bytes) -> None:
    with pytest.raises(MalformedPaymentError) as caught:
        decode_json(raw, PaymentPayload)
    assert caught.value.reason is Reason.INVALID_HEADER


@pytest.mark.parametrize(
    "raw", [b"[" * 50_000 + b"]" * 50_000, b"[" * 50_000, b'{"a": ' * 300 + b"1" + b"}" * 300]
)
def test_content_nested_too_deeply_says_so(raw: bytes) -> None:
    with pytest.raises(MalformedPaymentError) as caught:
        decode_json(raw, PaymentPayload)
    assert caught.value.reason is Reason.JSON_TOO_DEEP


@pytest.mark.parametrize("version", [1, 3, 0, "2", 2.0, True, None, [2]])
def test_wrong_version_is_reported_as_version_not_schema(version: object) -> None:
    # Even with a v1-shaped body the reason names the version.
    v1 = {"x402Version": version, "scheme": "exact", "network": "base-sepolia", "payload": {}}
    assert reason_of(b64_json(v1)) is Reason.INVALID_X402_VERSION
    assert reason_of(b64_json({**STOCK_PAYMENT_PAYLOAD, "x402Version": version})) is (
        Reason.INVALID_X402_VERSION
    )


def test_nested_wrong_version_is_reported_as_version() -> None:
    body = {
        "x402Version": 2,
        "paymentPayload": {**STOCK_PAYMENT_PAYLOAD, "x402Version": 1},
        "paymentRequirements": STOCK_PAYMENT_PAYLOAD["accepted"],
    }
    with pytest.raises(MalformedPaymentError) as caught:
        decode_json(json.dumps(body), FacilitatorRequest)
    assert caught.value.reason is Reason.INVALID_X402_VERSION


def _without(data: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in data.items() if k != key}


def _with_accepted(**changes: Any) -> dict[str, Any]:
    return {**STOCK_PAYMENT_PAYLOAD, "accepted": {**STOCK_PAYMENT_PAYLOAD["accepted"], **changes}}


@pytest.mark.parametrize(
    ("data", "field"),
    [
        (_without(STOCK_PAYMENT_PAYLOAD, "accepted"), "accepted"),
        (_without(STOCK_PAYMENT_PAYLOAD, "payload"), "payload"),
        (_without(STOCK_PAYMENT_PAYLOAD, "x402Version"), "x402Version"),
        ({**STOCK_PAYMENT_PAYLOAD, "surprise": True}, "surprise"),
        (_with_accepted(amount="-1"), "amount"),
        (_with_accepted(amount="010000"), "amount"),
        (_with_accepted(amount=10000), "amount"),
        (_with_accepted(amount="1e4"), "amount"),
        (_with_accepted(payTo="0x1234"), "payTo"),
        (_with_accepted(network="base-sepolia"), "network"),
        ({**STOCK_PAYMENT_PAYLOAD, "payload": []}, "payload"),
    ],
)
def test_schema_mismatch_names_the_field(data: dict[str, Any], field: str) -> None:
    with pytest.raises(MalformedPaymentError) as caught:
        decode_header(b64_json(data), PaymentPayload)
    assert caught.value.reason is Reason.INVALID_PAYLOAD
    assert field in caught.value.message


def test_error_message_never_echoes_the_input() -> None:
    secret = "s3cr3t-" + "x" * 3000
    data = _with_accepted(amount=secret)
    with pytest.raises(MalformedPaymentError) as caught:
        decode_header(b64_json(data), PaymentPayload)
    assert "s3cr3t" not in str(caught.value)
    assert len(caught.value.message) <= 160


def test_size_is_checked_before_decoding() -> None:
    assert MAX_HEADER_BYTES == 16384  # room for the 402's extensions, which clients echo
    with pytest.raises(MalformedPaymentError, match="longer than 16384") as caught:
        decode_header("A" * 16385, PaymentPayload)
    assert caught.value.reason is Reason.INVALID_HEADER
    # 16384 bytes is allowed through to the base64 layer (and fails later, as not JSON).
    with pytest.raises(MalformedPaymentError, match="not valid JSON"):
        decode_header("A" * 16384, PaymentPayload)
    with pytest.raises(MalformedPaymentError, match="longer than 100"):
        decode_header(b64_json(STOCK_PAYMENT_PAYLOAD), PaymentPayload, max_bytes=100)


def test_a_real_payment_header_fits_comfortably() -> None:
    assert len(b64_json(STOCK_PAYMENT_PAYLOAD)) < MAX_HEADER_BYTES // 4


def test_non_string_header_value() -> None:
    with pytest.raises(MalformedPaymentError):
        decode_header(b"abc", PaymentPayload)  # type: ignore[arg-type]


# -- fuzzing: whatever the input, only MalformedPaymentError comes out


def _only_malformed(value: str, model: type[WireModel]) -> None:
    with contextlib.suppress(MalformedPaymentError):
        decode_header(value, model)


@settings(max_examples=300)
@given(st.text(), st.sampled_from(MODELS))
def test_fuzz_text(value: str, model: type[WireModel]) -> None:
    _only_malformed(value, model)


@settings(max_examples=300)
@given(st.binary(max_size=2048), st.sampled_from(MODELS))
def test_fuzz_base64_of_bytes(raw: bytes, model: type[WireModel]) -> None:
    _only_malformed(b64(raw), model)


@settings(max_examples=300)
@given(json_values, st.sampled_from(MODELS))
def test_fuzz_base64_of_json(value: Any, model: type[WireModel]) -> None:
    _only_malformed(b64_json(value), model)


@settings(max_examples=300)
@given(st.data())
def test_fuzz_valid_payload_with_one_member_replaced(data: st.DataObject) -> None:
    payment = json.loads(json.dumps(STOCK_PAYMENT_PAYLOAD))
    # Walk to a random object inside the payment and replace or add one member.
    target = payment
    while True:
        children = [k for k, v in target.items() if isinstance(v, dict)]
        if not children or data.draw(st.booleans()):
            break
        target = target[data.draw(st.sampled_from(children))]
    key = data.draw(st.sampled_from([*target.keys(), "extra", "x402Version"]))
    target[key] = data.draw(json_values)
    _only_malformed(b64_json(payment), PaymentPayload)
    try:
        decoded = decode_header(b64_json(payment), PaymentPayload)
    except MalformedPaymentError:
        return
    with contextlib.suppress(MalformedPaymentError):
        decoded.exact_evm()


@given(json_objects)
def test_fuzz_objects_against_every_model(obj: dict[str, Any]) -> None:
    for model in MODELS:
        _only_malformed(b64_json(obj), model)


def test_text_with_a_lone_surrogate_is_not_json() -> None:
    # A str (a facilitator body) can hold a surrogate no UTF-8 byte string can.
    with pytest.raises(MalformedPaymentError) as caught:
        decode_json('{"x402Version": 2, "a": "\ud800"}', PaymentPayload)
    assert caught.value.reason is Reason.INVALID_HEADER
