"""The channel settler's batches of claims on the embedded chain (facilitator.channel.settler)."""

from __future__ import annotations

import time

import pytest

from agent_pay.chain.channel import ClaimSkipped, SkipReason
from agent_pay.facilitator.channel.book import ChannelAccount
from agent_pay.facilitator.channel.settler import ChannelSettler
from agent_pay.signing import LocalSigner
from agent_pay.signing.voucher import Voucher, sign_voucher
from agent_pay.signing.voucher_check import VoucherChecker
from tests._channel_parts import (
    Chain,
    P,
    _open_channel,
    accept,
    new_chain,
)


@pytest.fixture(scope="module")
def onchain() -> Chain:
    return new_chain()


# -- the settler, on the embedded chain --------------------------------------------------------


def _accounts_with_vouchers(
    env: Chain, count: int, reads: int, payees: list[str]
) -> dict[bytes, ChannelAccount]:
    accounts: dict[bytes, ChannelAccount] = {}
    for i in range(count):
        payer = LocalSigner.random()
        channel = _open_channel(env, payer, payees[i % len(payees)], 10 * P * reads)
        acct = ChannelAccount.from_chain(channel, env.manager.channel(channel))
        for n in range(1, reads + 1):
            signature = sign_voucher(payer, env.manager.domain, Voucher(channel, n * P))
            accept(acct, n * P, signature=signature, resource=f"/r{n}")
        accounts[channel] = acct
    return accounts


def test_settler_claims_many_channels_per_transaction(onchain: Chain) -> None:
    payees = [LocalSigner.random().address for _ in range(2)]
    accounts = _accounts_with_vouchers(onchain, 5, 3, payees)
    settler = ChannelSettler(onchain.manager, onchain.relayer, accounts, batch_size=2)
    before = [onchain.token.balance_of(p) for p in payees]

    outcome = settler.settle()

    assert (len(outcome.transactions), outcome.claimed, outcome.skipped) == (3, 5, [])
    assert outcome.amount == 5 * 3 * P
    after = [onchain.token.balance_of(p) for p in payees]
    assert [a - b for a, b in zip(after, before, strict=True)] == [3 * 3 * P, 2 * 3 * P]
    for channel, acct in accounts.items():
        assert acct.claimed == acct.highest == onchain.manager.channel(channel).claimed
    assert settler.settle().transactions == []  # nothing due any more


def test_settler_logs_skipped_claims_and_stays_consistent(onchain: Chain) -> None:
    accounts = _accounts_with_vouchers(onchain, 2, 2, [LocalSigner.random().address])
    first, second = accounts.values()
    # Someone redeems the first channel's voucher before the settler does.
    onchain.manager.claim(onchain.relayer, first.channel_id, first.highest, first.signature)
    settler = ChannelSettler(onchain.manager, onchain.relayer, accounts)

    outcome = settler.settle()

    assert outcome.skipped == [
        ClaimSkipped(first.channel_id, first.highest, SkipReason.NOT_ABOVE_CLAIMED)
    ]
    assert (first.claimed, second.claimed) == (first.highest, second.highest)
    assert settler.due() == []


def test_settler_wakes_every_n_vouchers(onchain: Chain) -> None:
    accounts = _accounts_with_vouchers(onchain, 1, 1, [LocalSigner.random().address])
    settler = ChannelSettler(
        onchain.manager, onchain.relayer, accounts, every_vouchers=3, every_seconds=3600
    )
    settler.start()
    try:
        for _ in range(3):
            settler.accepted()
        deadline = time.monotonic() + 10
        while not settler.rounds and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(settler.rounds) == 1
    finally:
        settler.close()


def test_settler_fixes_the_v_of_a_verified_voucher_before_claiming(onchain: Chain) -> None:
    payer = LocalSigner.random()
    channel = _open_channel(onchain, payer, LocalSigner.random().address, 10 * P)
    acct = ChannelAccount.from_chain(channel, onchain.manager.channel(channel))
    signature = sign_voucher(payer, onchain.manager.domain, Voucher(channel, P))
    accept(acct, P, signature=signature[:64] + bytes((55 - signature[64],)))  # the other v
    checker = VoucherChecker(onchain.manager.domain)
    settler = ChannelSettler(onchain.manager, onchain.relayer, {channel: acct}, checker=checker)
    outcome = settler.settle()
    assert (outcome.claimed, outcome.skipped) == (1, [])
    assert onchain.manager.channel(channel).claimed == P


def test_settler_never_claims_above_the_highest_voucher(onchain: Chain) -> None:
    accounts = _accounts_with_vouchers(onchain, 1, 4, [LocalSigner.random().address])
    (acct,) = accounts.values()
    settler = ChannelSettler(onchain.manager, onchain.relayer, accounts)
    settler.settle()
    state = onchain.manager.channel(acct.channel_id)
    assert state.claimed == acct.highest == 4 * P
    assert state.deposit - state.claimed == 10 * P * 4 - 4 * P
