"""The server's channel charge (server.channel_offers): its PAYMENT-RESPONSE as the model
encodes it."""

from __future__ import annotations

from tests._channel_parts import P, accept, account


def test_a_charge_encodes_its_payment_response_as_the_model_does() -> None:
    from agent_pay.protocol import SettleResponse
    from agent_pay.protocol.codec import decode_header, encode_header
    from agent_pay.server.channel_offers import ChannelCharge

    acct = account(deposit=2**255)
    charges = [accept(acct, P)]  # no unpaid range
    charges.append(accept(acct, 5 * P))  # leaves one, so the statement carries it
    charges.append(accept(acct, 9 * P))  # and a second
    charges.append(accept(acct, 3 * P))  # paid into the first, splitting it
    charges.append(accept(acct, 2**255, price=2**254))  # large amounts
    acct.stopping = True  # closing
    charges.append(accept(acct, 2**255, price=2**254))  # a replay: served again, as closing
    for done in charges:
        charge = ChannelCharge(None, done, "eip155:31337")  # type: ignore[arg-type]
        assert charge.response_header() == encode_header(charge.settle_response())
        assert decode_header(charge.response_header(), SettleResponse) == charge.settle_response()
    assert {len(done.statement.get("unpaid", [])) for done in charges} >= {0, 1, 2}
    assert charges[-1].statement["status"] == "closing"
