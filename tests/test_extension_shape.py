"""Every extension agent-pay declares has x402's `{info, schema}` shape, and our client echoes
what a 402 declared in its PAYMENT-SIGNATURE, as x402 v2 asks."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator

import httpx
import pytest

from agent_pay.protocol import PaymentRequired
from agent_pay.protocol.channel import CHANNEL_EXTENSION
from agent_pay.protocol.codec import (
    PAYMENT_REQUIRED_HEADER,
    PAYMENT_SIGNATURE_HEADER,
    decode_header,
)
from agent_pay.protocol.declaration import info_of
from agent_pay.testing import Testbed

SLUG = "eip-3009-gasless-transfers"  # USDX and CNYX


@pytest.fixture(scope="module")
def bed() -> Iterator[Testbed]:
    bed = Testbed.create(schemes=("exact", "channel"))
    yield bed
    bed.close()


def declared(bed: Testbed) -> dict[str, object]:
    with bed.client() as http:
        response = http.get(f"/articles/{SLUG}")
    required = decode_header(response.headers[PAYMENT_REQUIRED_HEADER], PaymentRequired)
    assert required.extensions is not None
    return required.extensions


def test_every_declared_extension_is_info_and_schema(bed: Testbed) -> None:
    extensions = declared(bed)
    assert set(extensions) == {
        "agent-pay/entitlement",
        "sign-in-with-x",
        "payment-identifier",
        "offer-receipt",
    }
    for key, entry in extensions.items():
        assert isinstance(entry, dict)
        assert {"info", "schema"} <= set(entry), key
        schema = entry["schema"]
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        assert schema["type"] == "object"
        for name in schema.get("required", []):  # the schema describes this info
            assert name in entry["info"] or key == "sign-in-with-x", (key, name)


def test_our_client_echoes_the_402s_extensions(bed: Testbed) -> None:
    sent: list[str] = []

    def keep(request: httpx.Request) -> None:
        if PAYMENT_SIGNATURE_HEADER in request.headers:
            sent.append(request.headers[PAYMENT_SIGNATURE_HEADER])

    agent = bed.agent()
    with bed.client(agent) as http:
        http.event_hooks["request"] = [keep]
        assert http.get(f"/articles/{SLUG}").status_code == 200
    (header,) = sent
    echoed = json.loads(base64.b64decode(header))["extensions"]
    ours = declared(bed)
    assert set(echoed) == set(ours)
    for key in ours:  # the same entries (the per-402 parts, nonces and challenges, differ)
        assert echoed[key]["schema"] == ours[key]["schema"]  # type: ignore[index]
    assert echoed["offer-receipt"]["info"]["offers"][0]["payload"]["resourceUrl"].endswith(SLUG)


def test_readers_take_both_shapes() -> None:
    statement = {"channelId": "0x" + "11" * 32, "deposit": "1", "highest": "0", "served": "0"}
    assert info_of({CHANNEL_EXTENSION: {"info": statement, "schema": {}}}, CHANNEL_EXTENSION) == (
        statement
    )
    assert info_of({CHANNEL_EXTENSION: statement}, CHANNEL_EXTENSION) == statement  # bare: older
    assert info_of(None, CHANNEL_EXTENSION) is None
