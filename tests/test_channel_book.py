"""A channel's account book (facilitator.channel.book): the acceptance rule (orders, replays,
concurrency), unpaid ranges, snapshots and checkpoints."""

from __future__ import annotations

import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent_pay.chain.channel import ChannelStatus
from agent_pay.errors import Reason
from agent_pay.facilitator.channel.book import (
    MAX_UNPAID_RANGES,
    ChannelRefusedError,
)
from agent_pay.facilitator.channel.snapshot import checkpoint, restore, snapshot
from agent_pay.protocol.channel import ChannelStatement
from tests._channel_parts import _KEYS, P, accept, account, invariant, refused

# -- the acceptance rule ----------------------------------------------------------------------


def test_reads_in_order_each_pay_the_next_price() -> None:
    acct = account()
    for n in range(1, 6):
        done = accept(acct, n * P)
        assert not done.replayed
        assert (acct.highest, acct.served) == (n * P, n * P)
    assert done.statement["served"] == str(5 * P)
    ChannelStatement.from_wire(done.statement)  # the wire's shape
    invariant(acct)


def test_out_of_order_vouchers_of_concurrent_reads_are_all_served() -> None:
    acct = account()
    accept(acct, 3 * P)  # the third read's voucher arrives first
    assert acct.unpaid == [[0, 2 * P]]
    accept(acct, P)
    accept(acct, 2 * P)
    assert (acct.highest, acct.served, acct.unpaid) == (3 * P, 3 * P, [])
    invariant(acct)


def test_a_replayed_voucher_pays_for_nothing() -> None:
    acct = account()
    accept(acct, P, resource="/a")
    accept(acct, 2 * P, resource="/b")
    error = refused(Reason.CHANNEL_VOUCHER_USED, accept, acct, P, resource="/b")
    assert error.statement is not None
    assert error.statement["served"] == str(2 * P)
    # The same voucher for the same resource is the client retrying a read whose answer it
    # lost: served again, charged nothing, within the replay window only.
    again = accept(acct, P, resource="/a", now=1100)
    assert again.replayed
    assert acct.served == 2 * P
    refused(Reason.CHANNEL_VOUCHER_USED, accept, acct, P, resource="/a", now=1000 + 301)
    invariant(acct)


@pytest.mark.parametrize("how", ["claim sent", "claim mined"])
def test_a_voucher_a_claim_made_public_replays_nothing(how: str) -> None:
    """A claim puts the highest voucher on chain, where anyone can copy it: from the moment the
    claim is sent, a replay of it (or of any voucher below it) reads nothing, even within the
    replay window; a voucher above it still replays for its payer's lost answer."""
    acct = account()
    accept(acct, P, resource="/a")
    accept(acct, 2 * P, resource="/b")
    if how == "claim sent":
        acct.exposed = 2 * P  # what the settler marks before it sends the claim
    else:
        acct.claimed = 2 * P  # what the chain reports once mined
    for amount, resource in ((2 * P, "/b"), (P, "/a")):
        refused(Reason.CHANNEL_VOUCHER_USED, accept, acct, amount, resource=resource, now=1001)
    accept(acct, 3 * P, resource="/c")
    assert accept(acct, 3 * P, resource="/c", now=1002).replayed
    assert acct.served == 3 * P
    invariant(acct)


def test_a_voucher_below_what_was_paid_is_not_increasing() -> None:
    acct = account()
    accept(acct, 2 * P)
    accept(acct, P)
    other = b"\x01" * 65  # another signature of an already paid amount
    error = refused(Reason.CHANNEL_AMOUNT_NOT_INCREASING, accept, acct, 2 * P, signature=other)
    assert "sign 300" in error.message
    refused(Reason.CHANNEL_AMOUNT_NOT_INCREASING, accept, acct, P // 2, price=P)  # below price
    assert acct.served == 2 * P


def test_over_the_deposit_is_refused_with_a_way_out() -> None:
    acct = account(deposit=3 * P)
    accept(acct, 3 * P)
    error = refused(Reason.CHANNEL_OVER_DEPOSIT, accept, acct, 4 * P)
    assert "top up" in error.message
    assert acct.served == P  # a jump to the deposit paid one read


@pytest.mark.parametrize("status", [ChannelStatus.CLOSING, ChannelStatus.CLOSED])
def test_a_closing_or_closed_channel_takes_nothing(status: ChannelStatus) -> None:
    acct = account(status=status)
    refused(Reason.CHANNEL_CLOSED, accept, acct, P)
    stopping = account(stopping=True)
    refused(Reason.CHANNEL_CLOSED, accept, stopping, P)


def test_unpaid_ranges_are_filled_in_pieces_and_released_reads_pay_again() -> None:
    acct = account()
    accept(acct, 5 * P)
    assert acct.unpaid == [[0, 4 * P]]
    accept(acct, 2 * P)  # (P, 2P]
    assert acct.unpaid == [[0, P], [2 * P, 4 * P]]
    done = accept(acct, 4 * P)  # (3P, 4P]
    assert acct.unpaid == [[0, P], [2 * P, 3 * P]]
    acct.release(done.cumulative_amount, done.price)  # its content could not be produced
    assert acct.unpaid == [[0, P], [2 * P, 4 * P]]
    accept(acct, 4 * P)  # the same voucher again pays for the read
    invariant(acct)


def test_unpaid_ranges_are_bounded() -> None:
    acct = account(deposit=10**9)
    for n in range(MAX_UNPAID_RANGES + 5):
        accept(acct, (2 * n + 2) * P)  # skip one read each time
        invariant(acct)
    assert len(acct.unpaid) == MAX_UNPAID_RANGES
    assert acct.forfeited == 5 * P


@settings(max_examples=80, deadline=None)
@given(
    order=st.permutations(range(1, 25)),
    replays=st.lists(st.integers(1, 24), max_size=10),
)
def test_any_arrival_order_serves_every_read_once(order: list[int], replays: list[int]) -> None:
    acct = account()
    for n in order:
        accept(acct, n * P, resource=f"/r{n}")
        invariant(acct)
    assert (acct.highest, acct.served, acct.unpaid) == (24 * P, 24 * P, [])
    for n in replays:  # for another resource: a replay; never served twice
        refused(Reason.CHANNEL_VOUCHER_USED, accept, acct, n * P, resource="/other")
    assert acct.served == 24 * P


def test_concurrent_threads_on_one_channel_serve_each_slice_exactly_once() -> None:
    # Eight readers take the next total in turn and race to the server with it, then send
    # the same voucher again for another resource (a replay): arrival order is scrambled
    # within the reads in flight, as it is for a client with eight connections.
    acct = account(deposit=10**9)
    totals = iter(range(1, 801))
    take = threading.Lock()
    served: list[int] = []
    replays_served: list[int] = []
    reasons: set[str] = set()
    barrier = threading.Barrier(8)

    def work() -> None:
        barrier.wait()
        while True:
            with take:
                n = next(totals, None)
            if n is None:
                return
            for resource, into in ((f"/r{n}", served), ("/dup", replays_served)):
                try:
                    if not accept(acct, n * P, resource=resource).replayed:
                        into.append(n)
                except ChannelRefusedError as exc:
                    reasons.add(exc.reason)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(served) == list(range(1, 801))
    assert replays_served == []
    # A replay is refused as "voucher used" while the voucher is among the channel's recent
    # ones; a thread descheduled long enough finds it evicted, and then it is an old amount.
    assert Reason.CHANNEL_VOUCHER_USED in reasons
    assert reasons <= {Reason.CHANNEL_VOUCHER_USED, Reason.CHANNEL_AMOUNT_NOT_INCREASING}
    assert (acct.served, acct.highest, acct.unpaid) == (800 * P, 800 * P, [])


def test_account_snapshots_round_trip() -> None:
    acct = account(signer=_KEYS[1].address)
    for n in (3, 1, 7):
        accept(acct, n * P, resource=f"/r{n}")
    back = restore(snapshot(acct))
    assert snapshot(back) == snapshot(acct)
    assert back.accepts_signer(bytes.fromhex(_KEYS[1].address[2:]))
    accept(back, 2 * P)  # the unpaid range survived
    refused(Reason.CHANNEL_VOUCHER_USED, accept, back, 7 * P, resource="/x")  # and the replays


def test_a_checkpoint_encodes_the_snapshot() -> None:
    import json

    acct = account(signer=_KEYS[1].address)
    for n in range(1, 80):  # past the 64 recent vouchers kept: the oldest go
        accept(acct, n * P, resource=f'/r{n % 5}-\u00e9"', now=1.7e9 + n / 7)
        if n % 9 == 0:
            state, text, _ = checkpoint(acct)  # encodes the entries it has, and keeps them
            assert json.loads(text) == snapshot(acct)
            assert state == {k: v for k, v in snapshot(acct).items() if k != "recent"}
    back = restore(json.loads(checkpoint(acct)[1]))
    assert json.loads(checkpoint(back)[1]) == snapshot(acct)
