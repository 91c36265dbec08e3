"""The `ChannelFacilitator` seam keeps its contract whichever side of it the channels are on:
the same steps on `LocalChannelFacilitator` (in process) and on `HttpChannelFacilitator` (over
the facilitator service's channel endpoints) give the same outcomes, values and reasons.

Each seam gets a channel of its own, opened alike (one read paid, a deposit of ten), and the
same vouchers; what it answers is written down with the channel and payer taken out, so that
the two records compare whole.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from agent_pay.errors import PaymentRejectedError, Reason
from agent_pay.facilitator.base import ChannelFacilitator
from agent_pay.facilitator.channel.records import ChannelRefusedError
from agent_pay.protocol import PaymentRequirements
from tests._channel_seam import DEPOSIT_READS, SeamBed, seam_bed
from tests.test_e2e_channel import OTHER, PRICE

SEAMS = ("local", "http")
Outcomes = dict[str, Any]


@pytest.fixture(scope="module")
def env() -> Iterator[SeamBed]:
    with seam_bed() as bed:
        yield bed


@pytest.fixture(scope="module")
def outcomes(env: SeamBed) -> dict[str, Outcomes]:
    """What each seam answered to the same steps, each on a channel of its own."""
    return {kind: _steps_on(env, kind, n) for n, kind in enumerate(SEAMS)}


def _steps_on(env: SeamBed, kind: str, n: int) -> Outcomes:
    slugs = [f"note-{100 + 10 * n + i:03d}" for i in range(6)]  # this seam's articles
    agent, channel = env.opened(slugs[0])  # the opening read paid PRICE
    offer = env.offer(slugs[1])
    other_payee = env.offer(OTHER)
    tokens = env.bed.tokens
    another_asset = next(t.address for s, t in tokens.items() if s != "USDX")

    def pay(cumulative: int, slug: str, requirements: PaymentRequirements = offer) -> Any:
        return env.voucher(agent, channel, cumulative, requirements, slug), requirements

    def normal(value: Any) -> Any:
        """`value` with this seam's channel, payer and articles named, not given."""
        if isinstance(value, dict):
            return {k: normal(v) for k, v in value.items()}
        if isinstance(value, str):
            value = value.replace("0x" + channel.hex(), "<channel>")
            value = value.replace(agent.address, "<payer>")
            for i, slug in enumerate(slugs):
                value = value.replace(slug, f"<article {i}>")
        return value

    async def accept(
        seam: ChannelFacilitator, paid: tuple[Any, PaymentRequirements], slug: str
    ) -> Any:
        payment, requirements = paid
        try:
            got = await seam.accept(payment, requirements, f"/articles/{slug}")
        except ChannelRefusedError as exc:
            return ("refused", exc.reason, normal(exc.message), normal(exc.statement))
        except PaymentRejectedError as exc:  # the seam promises ChannelRefusedError
            return ("rejected", exc.reason, normal(exc.message))
        if got is None:
            return None
        assert got.channel_id == channel
        assert got.payer == agent.address
        return ("accepted", got.cumulative_amount, got.price, got.replayed, normal(got.statement))

    async def steps(seam: ChannelFacilitator) -> Outcomes:
        out: Outcomes = {"known_before": seam.known_payer(channel)}
        out["first"] = await accept(seam, pay(2 * PRICE, slugs[1]), slugs[1])
        out["known_payer"] = normal(seam.known_payer(channel))
        out["next"] = await accept(seam, pay(3 * PRICE, slugs[2]), slugs[2])
        out["replayed"] = await accept(seam, pay(3 * PRICE, slugs[2]), slugs[2])
        out["used"] = await accept(seam, pay(3 * PRICE, slugs[3]), slugs[3])
        out["lower"] = await accept(seam, pay(PRICE // 2, slugs[3]), slugs[3])
        out["over_deposit"] = await accept(
            seam, pay((DEPOSIT_READS + 1) * PRICE, slugs[3]), slugs[3]
        )
        payment, _ = pay(4 * PRICE, slugs[3])
        unknown = payment.model_copy(
            update={"payload": {**payment.payload, "channelId": "0x" + "ab" * 32}}
        )
        out["unknown_channel"] = await accept(seam, (unknown, offer), slugs[3])
        out["wrong_payee"] = await accept(seam, pay(4 * PRICE, OTHER, other_payee), OTHER)
        for name, change in (
            ("wrong_asset", {"asset": another_asset}),
            ("wrong_network", {"network": "eip155:1"}),
        ):
            wrong = offer.model_copy(update=change)
            out[name] = await accept(seam, pay(4 * PRICE, slugs[3], wrong), slugs[3])
        # A read that could not be served: released, its slice is unpaid again.
        taken = await seam.accept(*pay(4 * PRICE, slugs[3]), f"/articles/{slugs[3]}")
        assert taken is not None
        await seam.release(taken)
        out["after_release"] = normal(await seam.statement(channel))
        out["again"] = await accept(seam, pay(4 * PRICE, slugs[3]), slugs[3])
        out["statement"] = normal(await seam.statement(channel))
        out["unknown_statement"] = await seam.statement(b"\xab" * 32)
        read = await seam.paid_read(agent.address, f"/articles/{slugs[2]}")
        assert read is not None
        out["paid_read"] = normal(read._replace(channel_id=b"", at=0)._asdict())
        out["unpaid_read"] = await seam.paid_read(agent.address, f"/articles/{slugs[5]}")
        out["known_unknown"] = seam.known_payer(b"\xab" * 32)
        return out

    return env.run(kind, steps)


@pytest.mark.parametrize("kind", SEAMS)
def test_vouchers_in_order_are_accepted_and_a_retry_is_a_replay(
    outcomes: dict[str, Outcomes], kind: str
) -> None:
    out = outcomes[kind]
    assert out["first"][:4] == ("accepted", 2 * PRICE, PRICE, False)
    assert out["first"][4]["served"] == str(2 * PRICE)
    assert out["next"][:4] == ("accepted", 3 * PRICE, PRICE, False)
    assert out["replayed"][:4] == ("accepted", 3 * PRICE, PRICE, True)
    assert out["again"][:4] == ("accepted", 4 * PRICE, PRICE, False)  # after its release


@pytest.mark.parametrize(
    ("step", "reason"),
    [
        ("used", Reason.CHANNEL_VOUCHER_USED),
        ("lower", Reason.CHANNEL_AMOUNT_NOT_INCREASING),
        ("over_deposit", Reason.CHANNEL_OVER_DEPOSIT),
        ("wrong_payee", Reason.CHANNEL_PAYEE_MISMATCH),
        ("wrong_asset", Reason.CHANNEL_ASSET_MISMATCH),
        ("wrong_network", Reason.NETWORK_MISMATCH),
    ],
)
@pytest.mark.parametrize("kind", SEAMS)
def test_a_voucher_refused_is_a_channel_refusal_with_its_reason(
    outcomes: dict[str, Outcomes], kind: str, step: str, reason: Reason
) -> None:
    refused = outcomes[kind][step]
    assert refused[:2] == ("refused", reason)


@pytest.mark.parametrize("kind", SEAMS)
def test_a_refusal_on_the_payers_own_channel_states_where_it_stands(
    outcomes: dict[str, Outcomes], kind: str
) -> None:
    statement = outcomes[kind]["used"][3]
    assert (statement["highest"], statement["served"]) == (str(3 * PRICE), str(3 * PRICE))


@pytest.mark.parametrize("kind", SEAMS)
def test_release_statement_paid_read_and_known_payer(
    outcomes: dict[str, Outcomes], kind: str
) -> None:
    out = outcomes[kind]
    assert out["unknown_channel"] is None  # the chain first: verify and settle it
    assert out["after_release"]["served"] == str(3 * PRICE)
    assert out["statement"]["served"] == str(4 * PRICE)
    assert out["statement"]["payer"] == "<payer>"
    assert out["unknown_statement"] is None
    assert out["paid_read"]["cumulative"] == 3 * PRICE
    assert out["paid_read"]["payer"] == "<payer>"
    assert out["paid_read"]["resource"] == "/articles/<article 2>"
    assert out["unpaid_read"] is None
    assert out["known_payer"] == "<payer>"
    assert out["known_unknown"] is None


def test_both_seams_give_the_same_outcomes(outcomes: dict[str, Outcomes]) -> None:
    local, http = outcomes["local"], outcomes["http"]
    local.pop("known_before"), http.pop("known_before")  # the remote one learns on first use
    assert local == http
