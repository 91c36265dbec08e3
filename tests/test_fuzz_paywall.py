"""Fuzzing the doors untrusted input comes through: the header decoder, the payment verifier,
and the paid route itself with payment and entitlement headers. Thousands of inputs: nothing
but 400 or 402 comes back, no paid content leaks, no money moves, nothing crashes. A mutated
payment that still decodes is refused for the first thing it changed (`expected_refusal`), by
the verifier and by the route; one whose values were only respelled must verify.

Examples per test are in `EXAMPLES`; the total is printed by `test_the_fuzzing_budget`.
"""

from __future__ import annotations

import base64
import copy
import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from agent_pay.errors import MalformedPaymentError, PaymentRejectedError, Reason
from agent_pay.protocol import PaymentPayload, PaymentRequired, decode_header, encode_header
from agent_pay.protocol.codec import PAYMENT_REQUIRED_HEADER, PAYMENT_SIGNATURE_HEADER
from agent_pay.protocol.extensions import ENTITLEMENT_HEADER, EntitlementProof
from agent_pay.signing import TransferAuthorization
from agent_pay.testing import TestAgent, Testbed
from tests._money import books
from tests._wire_strategies import addresses, hex32, json_objects, json_values

pytestmark = pytest.mark.slow  # thousands of inputs: some 40 s

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


SAME = "<the same value, spelled another way>"  # a mutation that changes only the spelling


def mutate(base: dict[str, Any], changes: list[tuple[str, Any]]) -> dict[str, Any]:
    wire = copy.deepcopy(base)
    for where, value in changes:
        parent, key = _place(wire, where)
        parent[key] = respelled(parent[key]) if value is SAME else value
    return wire


def _place(wire: dict[str, Any], where: str) -> tuple[dict[str, Any], str]:
    if where == "signature":
        return wire["payload"], "signature"
    if where.startswith("accepted."):
        return wire["accepted"], where.removeprefix("accepted.")
    return wire["payload"]["authorization"], where


def respelled(value: Any) -> Any:
    """`value` written another way that means the same: hex (an address, the nonce, the
    signature) in the other case."""
    if isinstance(value, str) and value.startswith("0x"):
        digits = value[2:]
        return "0x" + (digits.upper() if digits == digits.lower() else digits.lower())
    return value  # a decimal string has one spelling: set to what it was


places = st.sampled_from(
    ["signature", *AUTHORIZATION_FIELDS, "accepted.amount", "accepted.payTo", "accepted.asset"]
)
uints = st.integers(min_value=0, max_value=2**256 - 1).map(str)
well_formed = {
    "signature": st.binary(min_size=65, max_size=65).map(lambda b: "0x" + b.hex()),
    "from": addresses,
    "to": addresses,
    "value": uints,
    "validAfter": uints,
    "validBefore": uints,
    "nonce": hex32,
    "accepted.amount": uints,
    "accepted.payTo": addresses,
    "accepted.asset": addresses,
}


def changes_to(values: Callable[[str], st.SearchStrategy[Any]]) -> st.SearchStrategy[Any]:
    """One to four (place, value) changes, the value drawn from `values(place)`."""
    change = places.flatmap(lambda where: st.tuples(st.just(where), values(where)))
    return st.lists(change, min_size=1, max_size=4)


# Other values, well-formed (past the decoder, to the verifier's checks) or not (the decoder's
# 400). A random value is never the one it replaces, so the route may settle none of them.
mutations = changes_to(
    lambda where: st.booleans().flatmap(lambda ok: well_formed[where] if ok else field_values)
)
# For the verifier: well-formed values, and now and then a value only respelled, which it must
# read as the same value.
mutations_or_respellings = changes_to(lambda where: well_formed[where] | st.just(SAME))


def readable(wire: dict[str, Any]) -> PaymentPayload | None:
    """`wire` as a payment, or None when it does not decode (a 400 at the door)."""
    try:
        payment = PaymentPayload.from_wire(wire)
        TransferAuthorization.from_wire(payment.exact_evm().authorization)
    except Exception:
        return None
    return payment


def expected_refusal(good: PaymentPayload, payment: PaymentPayload) -> Reason | None:
    """The reason the verifier must refuse `payment`, a mutation of `good`, with: the first of
    its checks the mutation fails, in the verifier's order (the offer echoed, then the payee
    and the amount authorized, then the signature, which covers every authorization field).
    None when every value still means what it meant (only respelled): then it is `good`."""
    offered, accepted = good.accepted, payment.accepted
    if accepted.asset != offered.asset:
        return Reason.ASSET_MISMATCH
    if accepted.pay_to != offered.pay_to:
        return Reason.RECIPIENT_MISMATCH
    if accepted.amount != offered.amount:
        return Reason.AMOUNT_MISMATCH
    before, after = (
        TransferAuthorization.from_wire(p.exact_evm().authorization) for p in (good, payment)
    )
    if after.to != before.to:
        return Reason.RECIPIENT_MISMATCH
    if after.value != before.value:
        return Reason.AMOUNT_MISMATCH
    signatures = {bytes.fromhex(p.exact_evm().signature[2:]) for p in (good, payment)}
    if after != before or len(signatures) > 1:
        return Reason.INVALID_SIGNATURE
    return None


@settings(_FUZZ, max_examples=EXAMPLES["verifier"])
@given(changes=mutations_or_respellings)
def test_the_verifier_refuses_a_mutated_payment_with_the_reason_of_its_first_change(
    bed: Testbed, good: dict[str, Any], changes: list[tuple[str, Any]]
) -> None:
    payment = readable(mutate(good, changes))
    if payment is None:
        return  # the decoder's business (a 400), not the verifier's
    original = PaymentPayload.from_wire(good)
    expected = expected_refusal(original, payment)
    event(f"expected: {expected or 'verified'}")
    if expected is None:
        payer = bed.scheme.verify(payment, original.accepted)
        assert payer == original.exact_evm().authorization.from_
        return
    with pytest.raises(PaymentRejectedError) as refused:
        bed.scheme.verify(payment, original.accepted)  # what was offered, not what it echoes
    assert refused.value.reason == expected, refused.value.message


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
    wire = mutate(good, changes)
    response = http.get(
        f"/articles/{SLUG}", headers={PAYMENT_SIGNATURE_HEADER: b64(json.dumps(wire).encode())}
    )
    assert_harmless(bed, response)
    assert books(bed.tokens, [payer.address]) == books_before
    payment = readable(wire)
    event("unreadable" if payment is None else "readable")
    if payment is not None:  # refused for the first thing the mutation changed
        expected = expected_refusal(PaymentPayload.from_wire(good), payment)
        assert expected is not None  # a random value is never the one it replaced
        assert response.status_code == 402
        required = decode_header(response.headers[PAYMENT_REQUIRED_HEADER], PaymentRequired)
        assert required.error == expected


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
