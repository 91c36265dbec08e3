"""One encoding of a channel statement: `statement_wire` builds the wire dict without the model,
`statement_json` writes a paid read's short one by hand; both must say exactly what the model
says. And the contract's status codes map onto the statement's one status enum."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from agent_pay.chain.channel import ChannelStatus as ContractStatus
from agent_pay.protocol.base import MAX_UINT256
from agent_pay.protocol.channel import (
    ChannelStatement,
    ChannelStatus,
    statement_json,
    statement_wire,
)

amounts = st.integers(0, MAX_UINT256)
addresses = st.binary(min_size=20, max_size=20).map(lambda b: "0x" + b.hex())
ranges = st.lists(st.tuples(amounts, amounts).map(sorted), max_size=4)


@given(
    channel=st.binary(min_size=32, max_size=32),
    deposit=amounts,
    highest=amounts,
    served=amounts,
    status=st.sampled_from(ChannelStatus),
    unpaid=ranges,
    parties=st.none() | st.tuples(addresses, addresses, addresses),
    claimed=st.none() | amounts,
)
def test_the_hand_built_statement_says_what_the_model_says(
    channel: bytes,
    deposit: int,
    highest: int,
    served: int,
    status: ChannelStatus,
    unpaid: list[list[int]],
    parties: tuple[str, str, str] | None,
    claimed: int | None,
) -> None:
    wire = statement_wire(
        "0x" + channel.hex(),
        deposit,
        highest,
        served,
        status,
        unpaid,
        parties=parties,
        claimed=claimed,
    )
    model = ChannelStatement.from_wire(wire)
    assert (model.deposit, model.highest, model.served, model.status) == (
        deposit,
        highest,
        served,
        status,
    )
    assert model.unpaid == [list(r) for r in unpaid]
    assert model.claimed == claimed
    if parties is None:
        assert model.payer is None
    else:
        assert [a.lower() for a in (model.payer, model.payee, model.asset)] == list(parties)
    text = statement_json(wire)
    assert json.loads(text) == wire
    if parties is None and claimed is None:  # the short one, written out by hand
        expected = model.to_json()
        assert text == (expected if unpaid else expected.replace(',"unpaid":[]', ""))


def test_every_contract_status_has_one_stated_status() -> None:
    assert {s: s.stated for s in ContractStatus} == {
        ContractStatus.NONE: ChannelStatus.CLOSED,
        ContractStatus.OPEN: ChannelStatus.OPEN,
        ContractStatus.CLOSING: ChannelStatus.CLOSING,
        ContractStatus.CLOSED: ChannelStatus.CLOSED,
    }
    assert [s.value for s in ChannelStatus] == ["open", "closing", "closed"]
