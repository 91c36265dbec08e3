"""Fuzzing the doors untrusted input comes through: the header decoder, the payment verifier,
and the paid route itself with payment and entitlement headers. Thousands of inputs: nothing
but 400 or 402 comes back, no paid content leaks, no money moves, nothing crashes.

Examples per test are in `EXAMPLES`; the total is printed by `test_the_fuzzing_budget`.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent_pay.errors import MalformedPaymentError, PaymentRejectedError
from agent_pay.protocol import PaymentPayload, PaymentRequired, decode_header, encode_header
from agent_pay.protocol.codec import PAYMENT_REQUIRED_HEADER, PAYMENT_SIGNATURE_HEADER
from agent_pay.protocol.extensions import ENTITLEMENT_HEADER, EntitlementProof
from agent_pay.testing import TestAgent, Testbed
from tests._money import books
from tests._wire_strategies import addresses, hex32, json_objects, json_values

SLUG = "why-micropayments-failed"

EXAMPLES = {
    "decoder": 1500,
    "verifier": 800,
    "route_payment_headers": 1200,
    "route_mutated_payments": 800,
    "route_entitlements": 500,
}

_FUZZ = settings(
    deadline=None,
    database=None,  # deterministic per run; no example database written into the tree
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.fixture(scope="module")
def bed() -> Testbed:
    return Testbed.create()


@pytest.fixture(scope="module")
def http(bed: Testbed) -> Iterator[httpx.Client]:
    with bed.client() as client:
        yield client


@pytest.fixture(scope="module")
def payer(bed: Testbed) -> TestAgent:
    return bed.agent(funds={"USDX": "1"})


@pytest.fixture(scope="module")
def good(http: httpx.Client, payer: TestAgent) -> dict[str, Any]:
    """A valid payment's wire JSON, never sent as is: the base every mutation starts from."""
    required = decode_header(
        http.get(f"/articles/{SLUG}").headers[PAYMENT_REQUIRED_HEADER], PaymentRequired
    )
    return payer.auth.sign(required.accepts[0], required).to_wire()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


header_text = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=300)
headers = st.one_of(
    header_text,
    st.binary(max_size=600).map(b64),
    json_values.map(lambda v: b64(json.dumps(v).encode())),
    json_objects.map(lambda v: b64(json.dumps({"x402Version": 2, **v}).encode())),
)


# -- the decoder, on its own --------------------------------------------------------------------


@settings(_FUZZ, max_examples=EXAMPLES["decoder"])
@given(value=headers | st.text(max_size=400))
def test_the_decoder_raises_only_malformed_payment(value: str) -> None:
    for model in (PaymentPayload, EntitlementProof):
        try:
            decoded = decode_header(value, model)
        except MalformedPaymentError:
            continue
        assert encode_header(decoded)  # whatever it accepted, it can write back


# -- the verifier, on its own -------------------------------------------------------------------

field_values = st.one_of(
    st.integers(min_value=0, max_value=2**256 - 1).map(str),
    st.integers(min_value=-(2**70), max_value=2**70),
    addresses,
    hex32,
    st.binary(min_size=65, max_size=65).map(lambda b: "0x" + b.hex()),
    header_text,
    st.none(),
)
AUTHORIZATION_FIELDS = ["from", "to", "value", "validAfter", "validBefore", "nonce"]


def mutate(base: dict[str, Any], changes: list[tuple[str, Any]]) -> dict[str, Any]:
    wire = copy.deepcopy(base)
    for where, value in changes:
        if where == "signature":
            wire["payload"]["signature"] = value
        elif where.startswith("accepted."):
            wire["accepted"][where.removeprefix("accepted.")] = value
        else:
            wire["payload"]["authorization"][where] = value
    return wire


places = st.sampled_from(
    ["signature", *AUTHORIZATION_FIELDS, "accepted.amount", "accepted.payTo", "accepted.asset"]
)
mutations = st.lists(st.tuples(places, field_values), min_size=1, max_size=4)


@settings(_FUZZ, max_examples=EXAMPLES["verifier"])
@given(changes=mutations)
def test_the_verifier_refuses_or_accepts_and_never_crashes(
    bed: Testbed, good: dict[str, Any], changes: list[tuple[str, Any]]
) -> None:
    wire = mutate(good, changes)
    try:
        payment = PaymentPayload.from_wire(wire)
        payment.exact_evm()
    except Exception:
        return  # unreadable: the decoder's business (a 400), not the verifier's
    with contextlib.suppress(PaymentRejectedError, MalformedPaymentError):
        bed.scheme.verify(payment, payment.accepted)


# -- through the app ----------------------------------------------------------------------------


def assert_harmless(bed: Testbed, response: httpx.Response) -> None:
    assert response.status_code in (400, 402), (response.status_code, response.text[:300])
    article = bed.catalogue.get(SLUG)
    assert article is not None
    assert article.remainder not in response.text
    assert not any(
        line in response.text
        for line in article.remainder.splitlines()
        if len(line) > 40 and line not in article.preview and '"' not in line
    )


@pytest.fixture(scope="module")
def books_before(bed: Testbed, payer: TestAgent) -> dict[tuple[str, str], int]:
    return books(bed.tokens, [payer.address])


@settings(_FUZZ, max_examples=EXAMPLES["route_payment_headers"])
@given(value=headers)
def test_any_payment_header_is_400_or_402(bed: Testbed, http: httpx.Client, value: str) -> None:
    assert_harmless(bed, http.get(f"/articles/{SLUG}", headers={PAYMENT_SIGNATURE_HEADER: value}))


@settings(_FUZZ, max_examples=EXAMPLES["route_mutated_payments"])
@given(changes=mutations)
def test_any_mutated_payment_is_400_or_402_and_moves_nothing(
    bed: Testbed,
    http: httpx.Client,
    payer: TestAgent,
    good: dict[str, Any],
    books_before: dict[tuple[str, str], int],
    changes: list[tuple[str, Any]],
) -> None:
    header = b64(json.dumps(mutate(good, changes)).encode())
    assert_harmless(bed, http.get(f"/articles/{SLUG}", headers={PAYMENT_SIGNATURE_HEADER: header}))
    assert books(bed.tokens, [payer.address]) == books_before


proofs = st.fixed_dictionaries(
    {
        "payer": addresses,
        "resource": st.sampled_from([f"/articles/{SLUG}", "/articles/other", "/"]) | header_text,
        "challenge": hex32,
        "expiresAt": st.integers(min_value=0, max_value=2**64 - 1) | field_values,
        "signature": st.binary(min_size=65, max_size=65).map(lambda b: "0x" + b.hex()),
    },
    optional={"receipt": json_objects},
)


@settings(_FUZZ, max_examples=EXAMPLES["route_entitlements"])
@given(proof=proofs | json_objects)
def test_any_entitlement_header_is_400_or_402(
    bed: Testbed, http: httpx.Client, proof: dict[str, Any]
) -> None:
    header = b64(json.dumps(proof).encode())
    assert_harmless(bed, http.get(f"/articles/{SLUG}", headers={ENTITLEMENT_HEADER: header}))


def test_the_fuzzing_budget() -> None:
    """The inputs the tests above try, in all (shown with -s)."""
    total = sum(EXAMPLES.values())
    print(f"\nfuzzing: {total} inputs ({EXAMPLES})")
    assert total >= 4000
