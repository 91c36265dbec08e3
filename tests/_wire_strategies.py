"""Hypothesis strategies for agent_pay.protocol models, shared by the protocol tests."""

from __future__ import annotations

from typing import Any, TypeVar

from eth_utils.address import to_checksum_address
from hypothesis import strategies as st

from agent_pay.protocol import (
    ExactEvmAuthorization,
    ExactEvmPayload,
    FacilitatorRequest,
    PaymentPayload,
    PaymentRequired,
    PaymentRequirements,
    ResourceInfo,
    SettleResponse,
    SupportedKind,
    SupportedResponse,
    VerifyResponse,
    WireModel,
)

M = TypeVar("M", bound=WireModel)


def _model(model: type[M], **fields: st.SearchStrategy[Any]) -> st.SearchStrategy[M]:
    # Not st.builds: it would also infer the camelCase alias parameters from the signature.
    return st.fixed_dictionaries(fields).map(model.model_validate)


uint256 = st.integers(min_value=0, max_value=2**256 - 1)
addresses = st.binary(min_size=20, max_size=20).map(lambda b: to_checksum_address(b))
# Peers may spell addresses in lowercase; PaymentRequirements must echo that spelling.
spelled_addresses = addresses | addresses.map(str.lower)
hex32 = st.binary(min_size=32, max_size=32).map(lambda b: "0x" + b.hex())
networks = st.integers(min_value=1, max_value=2**63).map(lambda n: f"eip155:{n}")
short_text = st.text(max_size=40)

# JSON values that survive a JSON round trip unchanged (no NaN, no infinities).
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**64), max_value=2**64)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values: st.SearchStrategy[Any] = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
json_objects = st.dictionaries(st.text(max_size=10), json_values, max_size=5)

resources = _model(
    ResourceInfo,
    url=st.text(min_size=1, max_size=60),
    description=st.none() | short_text,
    mime_type=st.none() | st.sampled_from(["text/markdown", "text/html"]),
    service_name=st.none() | short_text,
    tags=st.none() | st.lists(short_text, max_size=5),
    icon_url=st.none() | short_text,
)

requirements = _model(
    PaymentRequirements,
    scheme=st.sampled_from(["exact", "batch-settlement"]),
    network=networks,
    amount=uint256,
    asset=spelled_addresses,
    pay_to=spelled_addresses,
    max_timeout_seconds=st.integers(min_value=0, max_value=2**31),
    extra=json_objects,
)

authorizations = _model(
    ExactEvmAuthorization,
    from_=addresses,
    to=addresses,
    value=uint256,
    valid_after=uint256,
    valid_before=uint256,
    nonce=hex32,
)

exact_payloads = _model(
    ExactEvmPayload,
    signature=st.binary(min_size=65, max_size=65).map(lambda b: "0x" + b.hex()),
    authorization=authorizations,
)

payment_required = _model(
    PaymentRequired,
    error=st.none() | short_text,
    resource=st.none() | resources,
    accepts=st.lists(requirements, max_size=3),
    extensions=st.none() | json_objects,
)

payment_payloads = _model(
    PaymentPayload,
    x402_version=st.just(2),
    resource=st.none() | resources,
    accepted=requirements,
    payload=exact_payloads.map(lambda p: p.to_wire()) | json_objects,
    extensions=st.none() | json_objects,
)

settle_responses = _model(
    SettleResponse,
    success=st.booleans(),
    error_reason=st.none() | short_text,
    error_message=st.none() | short_text,
    payer=st.none() | addresses,
    transaction=st.just("") | hex32,
    network=networks,
    amount=st.none() | uint256,
    extensions=st.none() | json_objects,
)

verify_responses = _model(
    VerifyResponse,
    is_valid=st.booleans(),
    invalid_reason=st.none() | short_text,
    invalid_message=st.none() | short_text,
    payer=st.none() | addresses,
)

facilitator_requests = _model(
    FacilitatorRequest,
    x402_version=st.just(2),
    payment_payload=payment_payloads,
    payment_requirements=requirements,
)

supported_responses = _model(
    SupportedResponse,
    kinds=st.lists(
        _model(
            SupportedKind,
            x402_version=st.sampled_from([1, 2]),
            scheme=st.just("exact"),
            network=networks | st.just("base-sepolia"),
            extra=st.none() | json_objects,
        ),
        max_size=3,
    ),
    extensions=st.lists(short_text, max_size=3),
    signers=st.dictionaries(st.just("eip155:*"), st.lists(addresses, max_size=2), max_size=1),
)

any_model = st.one_of(
    requirements,
    payment_required,
    payment_payloads,
    settle_responses,
    verify_responses,
    facilitator_requests,
    supported_responses,
    exact_payloads,
)
