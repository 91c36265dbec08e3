"""The channel scheme's handler (facilitator.channel.scheme): the fast payload parser against
the model, and a handler restarting from its store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent_pay.errors import MalformedPaymentError, PaymentRejectedError, Reason
from agent_pay.facilitator.channel.scheme import ChannelEvmScheme, parse_payload
from agent_pay.facilitator.channel.store import ChannelStore
from agent_pay.protocol import PaymentPayload, PaymentRequirements, ResourceInfo
from agent_pay.protocol.channel import ChannelPayload
from agent_pay.signing import LocalSigner
from agent_pay.signing.voucher import Voucher, sign_voucher
from tests._channel_parts import (
    PAYEE,
    TOKEN,
    Chain,
    P,
    _open_channel,
    new_chain,
)


@pytest.fixture(scope="module")
def onchain() -> Chain:
    return new_chain()


# -- the payload parser ------------------------------------------------------------------------

_HEX = "0123456789abcdefABCDEF"


def _payment(payload: dict[str, Any]) -> PaymentPayload:
    offer = PaymentRequirements(
        scheme="channel",
        network="eip155:31337",
        amount=P,
        asset=TOKEN,
        pay_to=PAYEE,
        max_timeout_seconds=60,
    )
    return PaymentPayload(x402_version=2, accepted=offer, payload=payload)


@settings(max_examples=150, deadline=None)
@given(
    channel=st.one_of(
        st.text(_HEX, min_size=64, max_size=64).map(lambda h: "0x" + h),
        st.text(_HEX, min_size=0, max_size=66).map(lambda h: "0x" + h),
        st.integers(),
    ),
    amount=st.one_of(
        st.integers(0, 2**260).map(str),
        st.sampled_from(["01", "-1", "1.0", " 1", "", "1e3", "\u0661"]),
        st.integers(0, 10),
    ),
    signature=st.one_of(
        st.text(_HEX, min_size=130, max_size=130).map(lambda h: "0x" + h),
        st.text(_HEX, min_size=128, max_size=132).map(lambda h: "0x" + h),
    ),
    extra=st.sampled_from([{}, {"open": None}, {"other": 1}]),
)
def test_fast_payload_parser_agrees_with_the_model(
    channel: Any, amount: Any, signature: Any, extra: dict[str, Any]
) -> None:
    payload = {"channelId": channel, "cumulativeAmount": amount, "signature": signature, **extra}
    try:
        expected: ChannelPayload | None = ChannelPayload.from_wire(payload)
    except Exception:
        expected = None
    if expected is None:
        with pytest.raises(MalformedPaymentError):
            parse_payload(_payment(payload))
    else:
        parsed = parse_payload(_payment(payload))
        fields = ("channel_id", "cumulative_amount", "signature", "open", "top_up")
        assert [getattr(parsed, f) for f in fields] == [getattr(expected, f) for f in fields]


def test_handler_restarts_from_its_store(onchain: Chain, tmp_path: Path) -> None:
    payer = LocalSigner.random()
    payee = LocalSigner.random().address
    channel = _open_channel(onchain, payer, payee, 10 * P)
    handler = ChannelEvmScheme(
        onchain.manager, [onchain.token], onchain.relayer, store=ChannelStore.open(tmp_path)
    )
    offer = _offer(onchain, payee)
    first = _voucher(onchain, payer, channel, P, offer)
    assert handler.accept(first, offer, "/a") is None  # not seen yet: the slow path reads it
    assert handler.settle(first, offer).transaction == ""
    assert handler.accept(_voucher(onchain, payer, channel, 2 * P, offer), offer, "/a")
    handler.store.close()

    again = ChannelEvmScheme(
        onchain.manager, [onchain.token], onchain.relayer, store=ChannelStore.open(tmp_path)
    )
    replay = _voucher(onchain, payer, channel, 2 * P, offer)
    with pytest.raises(PaymentRejectedError) as caught:
        again.accept(replay, offer, "/other")
    assert caught.value.reason == Reason.CHANNEL_VOUCHER_USED
    done = again.accept(_voucher(onchain, payer, channel, 3 * P, offer), offer, "/a")
    assert done is not None
    assert done.statement["served"] == str(3 * P)
    again.store.close()


def _offer(env: Chain, payee: str) -> PaymentRequirements:
    asset = env.token.asset
    return PaymentRequirements(
        scheme="channel",
        network=asset.network,
        amount=P,
        asset=asset.address,
        pay_to=payee,
        max_timeout_seconds=60,
        extra={
            "name": asset.eip712_name,
            "version": asset.eip712_version,
            "channelManager": env.manager.address,
            "minDeposit": "0",
            "gracePeriod": 600,
            "voucherDomain": {"name": "agent-pay Channel", "version": "1"},
        },
    )


def _voucher(
    env: Chain, payer: LocalSigner, channel: bytes, cumulative: int, offer: PaymentRequirements
) -> PaymentPayload:
    signature = sign_voucher(payer, env.manager.domain, Voucher(channel, cumulative))
    payload = {
        "channelId": "0x" + channel.hex(),
        "cumulativeAmount": str(cumulative),
        "signature": "0x" + signature.hex(),
    }
    resource = ResourceInfo(url="http://testserver/a")
    return PaymentPayload(x402_version=2, resource=resource, accepted=offer, payload=payload)
