"""The channel scheme's parts, one at a time: the fast voucher digest and recovery, the payload
parser, the acceptance rule (orders, replays, concurrency), the server's write-behind store, the
settler's batches on the embedded chain, and the client's allocation, store and budget.

End to end through the app: tests/test_e2e_channel.py.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from eth_account.messages import encode_typed_data
from eth_utils import keccak
from hypothesis import given, settings
from hypothesis import strategies as st

from agent_pay.assets import Asset
from agent_pay.chain.channel import ChannelManager, ChannelStatus, ClaimSkipped, SkipReason
from agent_pay.chain.contract import Transactor
from agent_pay.chain.devkeys import dev_signer
from agent_pay.chain.embedded import EmbeddedChain
from agent_pay.chain.stablecoin import Stablecoin, deploy_stablecoins
from agent_pay.client.channel_store import ChannelRecord, ClientChannelStore
from agent_pay.client.channels import ChannelClientScheme, ChannelPolicy, _merge, _subtract
from agent_pay.client.policy import SpendingPolicy
from agent_pay.errors import MalformedPaymentError, PaymentRejectedError, Reason
from agent_pay.facilitator.channel.book import (
    MAX_UNPAID_RANGES,
    ChannelAccount,
    ChannelRefusedError,
)
from agent_pay.facilitator.channel.scheme import ChannelEvmScheme, parse_payload
from agent_pay.facilitator.channel.settler import ChannelSettler
from agent_pay.facilitator.channel.snapshot import checkpoint, restore, snapshot
from agent_pay.facilitator.channel.store import ChannelStore
from agent_pay.protocol import PaymentPayload, PaymentRequired, PaymentRequirements, ResourceInfo
from agent_pay.protocol.channel import ChannelPayload, ChannelStatement
from agent_pay.signing import LocalSigner, receive_with_authorization_typed_data
from agent_pay.signing.typed_data import TokenDomain
from agent_pay.signing.voucher import (
    Voucher,
    open_authorization,
    recover_voucher_signer,
    sign_voucher,
    voucher_digest,
    voucher_domain,
    voucher_typed_data,
)
from agent_pay.signing.voucher_check import VoucherChecker

P = 100  # the price of a read in these tests
PAYER = "0x" + "11" * 20
PAYEE = "0x" + "22" * 20
TOKEN = "0x" + "33" * 20
_KEYS = [LocalSigner.from_key("0x" + f"{i:02x}" * 32) for i in range(1, 4)]


def account(deposit: int = 10_000, **change: Any) -> ChannelAccount:
    fields: dict[str, Any] = {
        "channel_id": b"\x07" * 32,
        "payer": _KEYS[0].address,
        "payee": PAYEE,
        "token": TOKEN,
        "signer": None,
        "deposit": deposit,
        "claimed": 0,
        "status": ChannelStatus.OPEN,
    }
    fields.update(change)
    return ChannelAccount(**fields)


def accept(
    acct: ChannelAccount,
    cumulative: int,
    *,
    price: int = P,
    signature: bytes | None = None,
    resource: str = "/a",
    now: float = 1000.0,
) -> Any:
    sig = signature if signature is not None else cumulative.to_bytes(65, "big")
    return acct.accept(cumulative, price, sig, resource=resource, now=now, replay_window=300)


def refused(reason: Reason, call: Any, *args: Any, **kwargs: Any) -> ChannelRefusedError:
    with pytest.raises(ChannelRefusedError) as caught:
        call(*args, **kwargs)
    assert caught.value.reason == reason, caught.value.message
    return caught.value


def invariant(acct: ChannelAccount) -> None:
    unpaid = sum(b - a for a, b in acct.unpaid)
    assert acct.highest - acct.served == unpaid + acct.forfeited
    assert 0 <= acct.served <= acct.highest <= acct.deposit
    assert acct.unpaid == sorted(acct.unpaid)
    assert all(a < b <= acct.highest for a, b in acct.unpaid)


# -- the fast digest and recovery --------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    channel=st.binary(min_size=32, max_size=32),
    cumulative=st.integers(0, 2**256 - 1),
    chain_id=st.integers(1, 2**64),
    manager=st.binary(min_size=20, max_size=20),
)
def test_fast_digest_is_eth_accounts_eip712_hash(
    channel: bytes, cumulative: int, chain_id: int, manager: bytes
) -> None:
    domain = voucher_domain(chain_id, "0x" + manager.hex())
    voucher = Voucher(channel, cumulative)
    signable = encode_typed_data(full_message=voucher_typed_data(domain, voucher))
    expected = keccak(b"\x19" + signable.version + signable.header + signable.body)
    assert VoucherChecker(domain).digest(channel, cumulative) == expected
    assert voucher_digest(domain, voucher) == expected


@settings(max_examples=30, deadline=None)
@given(
    key=st.sampled_from(_KEYS),
    channel=st.binary(min_size=32, max_size=32),
    cumulative=st.integers(0, 2**256 - 1),
)
def test_fast_recovery_agrees_with_eth_account(
    key: LocalSigner, channel: bytes, cumulative: int
) -> None:
    domain = voucher_domain(31337, "0x" + "ab" * 20)
    voucher = Voucher(channel, cumulative)
    signature = sign_voucher(key, domain, voucher)
    checker = VoucherChecker(domain)
    assert checker.recover_checksum(channel, cumulative, signature) == key.address
    assert recover_voucher_signer(domain, voucher, signature) == key.address
    other = (cumulative + 1) % 2**256
    assert checker.recover_checksum(channel, other, signature) != key.address


@settings(max_examples=20, deadline=None)
@given(channel=st.binary(min_size=32, max_size=32), cumulative=st.integers(0, 2**256 - 1))
def test_verification_names_the_signer_and_normalized_fixes_v(
    channel: bytes, cumulative: int
) -> None:
    domain = voucher_domain(31337, "0x" + "ab" * 20)
    checker = VoucherChecker(domain)
    key, other = (bytes.fromhex(k.address[2:]) for k in _KEYS[:2])
    signature = sign_voucher(_KEYS[0], domain, Voucher(channel, cumulative))
    flipped = signature[:64] + bytes((55 - signature[64],))
    assert checker.signer_of(channel, cumulative, signature, (other, key)) == key  # recovers
    assert checker.signer_of(channel, cumulative, signature, (other, key)) == key  # verifies
    assert checker.signer_of(channel, cumulative, signature, (other,)) is None
    assert checker.signer_of(channel, cumulative + 1 if cumulative < 2**256 - 1 else 0,
                             signature, (key,)) is None  # fmt: skip
    # Verification ignores v: the flipped signature passes, and is fixed before a claim.
    assert checker.signer_of(channel, cumulative, flipped, (key,)) == key
    assert checker.recover(channel, cumulative, flipped) != key
    assert checker.normalized(channel, cumulative, flipped, (key,)) == signature
    assert checker.normalized(channel, cumulative, signature, (key,)) == signature


@pytest.mark.parametrize(
    ("mangle", "match"),
    [
        (lambda s: s[:64], "65 bytes"),
        (lambda s: s[:64] + b"\x1d", "v must be"),
        (lambda s: bytes(32) + s[32:], "r is out of range"),
        (lambda s: s[:32] + (2**256 - 1).to_bytes(32, "big") + s[64:], "s is zero or in the high"),
    ],
    ids=["short", "bad-v", "zero-r", "high-s"],
)
def test_fast_recovery_refuses_what_the_contract_refuses(mangle: Any, match: str) -> None:
    domain = voucher_domain(31337, "0x" + "ab" * 20)
    signature = sign_voucher(_KEYS[0], domain, Voucher(bytes(32), 5))
    with pytest.raises(ValueError, match=match):
        VoucherChecker(domain).recover(bytes(32), 5, mangle(signature))


_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


def _contract_accepts_format(signature: bytes) -> bool:
    """The contract's rule, on integers: 65 bytes, v 27 or 28, 0 < r < n, 0 < s <= n / 2."""
    r, s = int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:64], "big")
    return len(signature) == 65 and signature[64] in (27, 28) and 0 < r < _N and 0 < s <= _N // 2


_EDGES = [0, 1, _N // 2 - 1, _N // 2, _N // 2 + 1, _N - 1, _N, 2**256 - 1]


@pytest.mark.parametrize("v", [27, 28, 0, 1, 29])
@pytest.mark.parametrize("s", _EDGES)
@pytest.mark.parametrize("r", _EDGES)
def test_signature_format_is_checked_as_the_contract_checks_it(r: int, s: int, v: int) -> None:
    from agent_pay.signing.voucher_check import _check_format

    signature = r.to_bytes(32, "big") + s.to_bytes(32, "big") + bytes((v,))
    try:
        _check_format(signature)
        accepted = True
    except ValueError:
        accepted = False
    assert accepted == _contract_accepts_format(signature)


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


# -- the server's store ------------------------------------------------------------------------


def test_store_writes_behind_and_reloads(tmp_path: Path) -> None:
    store = ChannelStore.open(tmp_path, flush_interval=0.01)
    store.start()
    acct = account()
    accept(acct, P)
    store.mark(acct)
    deadline = time.monotonic() + 5
    while store.writes == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert store.writes == 1
    accept(acct, 2 * P)
    store.mark(acct)
    store.close()  # flushes what is dirty
    (back,) = ChannelStore.open(tmp_path).load()
    assert snapshot(back) == snapshot(acct)


def test_store_moves_reads_out_of_a_file_of_the_earlier_layout(tmp_path: Path) -> None:
    import sqlite3

    # The layout stores had before `paid_reads`: reads keyed by channel, and a second index.
    with sqlite3.connect(tmp_path / "channels.sqlite") as db:
        db.executescript(
            """
            CREATE TABLE reads (
                channel_id TEXT NOT NULL, cumulative TEXT NOT NULL, payer TEXT NOT NULL,
                resource TEXT NOT NULL, url TEXT NOT NULL, price TEXT NOT NULL, at REAL NOT NULL,
                PRIMARY KEY (channel_id, cumulative)
            ) WITHOUT ROWID;
            CREATE INDEX reads_by_reader ON reads (payer, resource);
            """
        )
        db.execute(
            "INSERT INTO reads VALUES (?, ?, ?, ?, ?, ?, ?)",
            ("0x" + "07" * 32, str(2 * P), _KEYS[0].address, "/a", "http://h/a", str(P), 12.5),
        )
    store = ChannelStore.open(tmp_path)
    try:
        assert store.paid_read(_KEYS[0].address, "/a") == (
            b"\x07" * 32,
            2 * P,
            "http://h/a",
            P,
            12.5,
        )
        assert store.paid_read(_KEYS[0].address, "/b") is None
    finally:
        store.close()
    with sqlite3.connect(tmp_path / "channels.sqlite") as db:
        tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master")}
    assert "reads" not in tables
    assert "paid_reads" in tables


def test_an_undone_read_leaves_the_store(tmp_path: Path) -> None:
    store = ChannelStore.open(tmp_path)
    acct = account()
    accept(acct, P, resource="/a")
    accept(acct, 2 * P, resource="/b")
    store.mark(acct)
    store.flush()  # both written
    acct.release(2 * P, P)  # /b could not be served after all
    store.mark(acct)
    store.flush()
    try:
        assert store.paid_read(_KEYS[0].address, "/a") is not None
        assert store.paid_read(_KEYS[0].address, "/b") is None
    finally:
        store.close()


def test_store_never_overwrites_a_newer_snapshot(tmp_path: Path) -> None:
    store = ChannelStore.open(tmp_path)
    newer = account()
    for n in range(1, 4):
        accept(newer, n * P)
    older = restore(snapshot(newer))
    older.version = 1
    store.mark(newer)
    store.flush()
    store.mark(older)
    store.flush()
    (back,) = store.load()
    assert back.served == 3 * P
    store.close()


# -- the settler, on the embedded chain --------------------------------------------------------


@dataclass
class Chain:
    chain: EmbeddedChain
    token: Stablecoin
    manager: ChannelManager
    owner: Transactor
    relayer: Transactor


@pytest.fixture(scope="module")
def onchain() -> Chain:
    chain = EmbeddedChain()
    owner = Transactor(chain, dev_signer(0))
    tokens = deploy_stablecoins(owner)
    manager = ChannelManager.deploy(owner, 600)
    return Chain(chain, tokens["USDX"], manager, owner, Transactor(chain, dev_signer(1)))


def _open_channel(env: Chain, payer: LocalSigner, payee: str, deposit: int) -> bytes:
    env.token.mint(env.owner, payer.address, deposit)
    salt = random.randbytes(32)
    now = env.chain.next_timestamp()
    auth = open_authorization(
        payer=payer.address,
        payee=payee,
        token=env.token.address,
        amount=deposit,
        salt=salt,
        signer=None,
        valid_after=now - 600,
        valid_before=now + 600,
        manager=env.manager.address,
        chain_id=env.chain.chain_id,
    )
    asset = env.token.asset
    domain = TokenDomain(asset.eip712_name, asset.eip712_version, asset.chain_id, asset.address)
    signature = payer.sign_typed_data(receive_with_authorization_typed_data(domain, auth))
    env.manager.open_with_authorization(
        env.relayer, auth, signature, payee=payee, token=env.token.address, salt=salt, gas=300_000
    )
    return env.manager.channel_id(payer.address, payee, env.token.address, salt)


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


# -- the client --------------------------------------------------------------------------------

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
    assert _merge([[5, 6], [1, 3], [3, 4], [8, 8]]) == [[1, 4], [5, 6]]
    assert _subtract([[0, 10]], [(2, 3), (5, 12)]) == [[0, 2], [3, 5]]


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
