"""The client's channel scheme (client.channels): allocation, deposit and budget, its store, and
the channels command."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from agent_pay.assets import Asset
from agent_pay.client.channel_store import ChannelRecord, ClientChannelStore
from agent_pay.client.channels import ChannelClientScheme, ChannelPolicy
from agent_pay.client.policy import SpendingPolicy
from agent_pay.errors import Reason
from agent_pay.protocol import PaymentRequired, PaymentRequirements, ResourceInfo
from agent_pay.protocol.slices import merge, subtract
from tests._channel_parts import _KEYS, PAYEE, TOKEN, P

_ASSET = Asset("eip155:31337", TOKEN, "USDX", 6, "Agent Dollar", "1")
_MANAGER = "0x" + "44" * 20


def _client_offer(payee: str = PAYEE) -> PaymentRequirements:
    return PaymentRequirements(
        scheme="channel",
        network="eip155:31337",
        amount=P,
        asset=TOKEN,
        pay_to=payee,
        max_timeout_seconds=60,
        extra={
            "name": "Agent Dollar",
            "version": "1",
            "channelManager": _MANAGER,
            "minDeposit": str(10 * P),
            "gracePeriod": 600,
            "voucherDomain": {"name": "agent-pay Channel", "version": "1"},
        },
    )


def _challenge(offer: PaymentRequirements) -> PaymentRequired:
    return PaymentRequired(resource=ResourceInfo(url="http://example.test/a"), accepts=[offer])


@pytest.fixture
def client(tmp_path: Path) -> ChannelClientScheme:
    policy = SpendingPolicy.per_token([_ASSET], max_per_payment="1", budget="0.01")  # 10,000
    return ChannelClientScheme(
        _KEYS[2],
        policy,
        ClientChannelStore(tmp_path / "channels"),
        ChannelPolicy(deposit_reads=50, min_expected_reads=1),
    )


def test_client_allocates_distinct_totals_under_concurrency(client: ChannelClientScheme) -> None:
    offer = _client_offer()
    totals: list[int] = []

    def read() -> None:
        for _ in range(10):
            payload = client.sign(offer, _challenge(offer)).payload
            totals.append(int(payload["cumulativeAmount"]))

    threads = [threading.Thread(target=read) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(totals) == [n * P for n in range(1, 41)]
    (record,) = client.channels()
    assert record.top == 40 * P
    assert record.status == "opening"


def test_client_opens_with_a_deposit_within_budget_and_locks_it(
    client: ChannelClientScheme,
) -> None:
    offer = _client_offer()
    assert client.spending.remaining(_ASSET) == 10_000
    payment = client.sign(offer, _challenge(offer))
    assert payment.payload["open"]["authorization"]["value"] == str(50 * P)
    assert client.spending.remaining(_ASSET) == 10_000 - 50 * P  # locked: counts as reserved
    client.spending.commit(offer)
    client.settled(payment, _settled(offer))
    assert client.spending.remaining(_ASSET) == 10_000 - 50 * P  # a read moves locked to spent
    assert client.spending.spent(_ASSET) == P
    assert client.channels()[0].status == "open"


def test_client_does_not_open_when_the_deposit_does_not_fit(tmp_path: Path) -> None:
    policy = SpendingPolicy.per_token([_ASSET], max_per_payment="1", budget="0.0005")  # 500
    scheme = ChannelClientScheme(
        _KEYS[2], policy, None, ChannelPolicy(deposit_reads=50, min_expected_reads=1)
    )
    why = scheme.spending.why_not(_client_offer())
    assert why is not None
    assert "budget" in why


def test_client_opens_only_when_several_reads_are_expected(tmp_path: Path) -> None:
    policy = SpendingPolicy.per_token([_ASSET], max_per_payment="1", budget="1")
    scheme = ChannelClientScheme(_KEYS[2], policy, None, ChannelPolicy(min_expected_reads=3))
    offer = _client_offer()
    assert scheme.spending.why_not(offer) is not None
    scheme.expect(PAYEE, 5)
    assert scheme.spending.why_not(offer) is None


def _settled(offer: PaymentRequirements, statement: dict[str, Any] | None = None) -> Any:
    from agent_pay.protocol import SettleResponse

    extensions = {"agent-pay/channel": statement} if statement else None
    return SettleResponse(
        success=True,
        payer=_KEYS[2].address,
        transaction="",
        network=offer.network,
        amount=offer.amount,
        extensions=extensions,
    )


def test_client_reuses_refused_and_unpaid_slices(client: ChannelClientScheme) -> None:
    offer = _client_offer()
    client.settled(client.sign(offer, _challenge(offer)), _settled(offer))  # P: open
    refused = client.sign(offer, _challenge(offer))
    client.refused(refused, Reason.REQUIREMENTS_MISMATCH)  # 2P was not taken
    again = client.sign(offer, _challenge(offer))
    assert again.payload["cumulativeAmount"] == str(2 * P)
    (record,) = client.channels()
    statement = {
        "channelId": record.channel_id,
        "payer": record.payer,
        "payee": PAYEE,
        "asset": TOKEN,
        "deposit": str(50 * P),
        "highest": str(4 * P),
        "served": str(3 * P),
        "claimed": "0",
        "status": "open",
        "unpaid": [[str(P), str(2 * P)]],
    }
    client.settled(again, _settled(offer, statement))  # the server says (P, 2P] is unpaid
    assert record.unpaid == [[P, 2 * P]]
    assert record.top == 4 * P
    filled = client.sign(offer, _challenge(offer)).payload
    assert filled["cumulativeAmount"] == str(2 * P)


def test_an_older_statement_answered_last_does_not_bring_back_a_paid_slice(
    client: ChannelClientScheme,
) -> None:
    """Two reads at once: the server takes 3P (B) before 2P (A), so B's statement reports
    (P, 2P] unpaid; A's answer, which paid it, reaches the client first."""
    offer = _client_offer()
    client.settled(client.sign(offer, _challenge(offer)), _settled(offer))  # P: open
    a = client.sign(offer, _challenge(offer))
    b = client.sign(offer, _challenge(offer))
    assert (a.payload["cumulativeAmount"], b.payload["cumulativeAmount"]) == (
        str(2 * P),
        str(3 * P),
    )
    (record,) = client.channels()

    def statement(served: int, unpaid: list[list[str]]) -> dict[str, Any]:
        return {
            "channelId": record.channel_id,
            "deposit": str(50 * P),
            "highest": str(3 * P),
            "served": str(served),
            "status": "open",
            "unpaid": unpaid,
        }

    client.settled(a, _settled(offer, statement(3 * P, [])))
    client.settled(b, _settled(offer, statement(2 * P, [[str(P), str(2 * P)]])))

    assert record.unpaid == []
    assert client.sign(offer, _challenge(offer)).payload["cumulativeAmount"] == str(4 * P)


def test_client_store_survives_a_restart(tmp_path: Path, client: ChannelClientScheme) -> None:
    offer = _client_offer()
    for _ in range(3):
        client.sign(offer, _challenge(offer))
    back = ClientChannelStore(tmp_path / "channels")
    (record,) = list(back)
    assert isinstance(record, ChannelRecord)
    assert record.top == 3 * P
    assert record.open_payload is not None
    assert not list((tmp_path / "channels").glob(".tmp-*"))


def test_range_helpers() -> None:
    assert merge([[5, 6], [1, 3], [3, 4], [8, 8]]) == [[1, 4], [5, 6]]
    assert subtract([[0, 10]], [(2, 3), (5, 12)]) == [[0, 2], [3, 5]]


def test_the_channels_command_parses(tmp_path: Path) -> None:
    import argparse

    from agent_pay.cli.channels import register

    parser = argparse.ArgumentParser(prog="agent-pay")
    register(parser.add_subparsers(dest="command"))
    channel = "0x" + "ab" * 32
    args = parser.parse_args(["channels", "withdraw", channel, "--channels-dir", str(tmp_path)])
    assert (args.channels_action, args.channel_id, args.channels_dir) == (
        "withdraw",
        channel,
        tmp_path,
    )
    assert callable(args.run)


def test_the_exact_fallback_draws_its_nonces_from_the_factory_given() -> None:
    policy = SpendingPolicy.per_token([_ASSET], max_per_payment="1", budget="1")
    scheme = ChannelClientScheme(_KEYS[2], policy, None, ChannelPolicy(min_expected_reads=3))
    nonce = bytes(range(32))
    auth = scheme.payment_auth(nonce_factory=lambda: nonce)
    exact = _client_offer().model_copy(
        update={"scheme": "exact", "extra": {"name": "Agent Dollar", "version": "1"}}
    )
    payment = auth.sign(exact, _challenge(exact))
    assert payment.exact_evm().authorization.nonce == "0x" + nonce.hex()
