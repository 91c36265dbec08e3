"""The Vyper stablecoin on the embedded chain: every external function, once as it should work and
once as it must refuse, plus a property test that settlements conserve supply.

One token per module (deployed once) and fresh random keys per test keep tests independent; the
chain's clock is fake and stands still, so `block.timestamp` is known and expiry is exact.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import pytest
from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_utils import to_checksum_address
from hypothesis import given, settings
from hypothesis import strategies as st

from agent_pay.chain.base import ContractRevertError, Receipt
from agent_pay.chain.contract import Transactor
from agent_pay.chain.devkeys import dev_account
from agent_pay.chain.stablecoin import (
    TRANSFER_WITH_AUTHORIZATION_GAS,
    Stablecoin,
    StablecoinSpec,
)
from agent_pay.signing import (
    SECP256K1_N,
    CancelAuthorization,
    LocalSigner,
    Permit,
    TokenDomain,
    TransferAuthorization,
    cancel_authorization_typed_data,
    permit_typed_data,
    random_nonce,
    receive_with_authorization_typed_data,
    sign_transfer_authorization,
    transfer_with_authorization_typed_data,
)
from agent_pay.testing import ContractBench, Party, reverted

T0 = 1_700_000_000  # the fake clock's start: every block is mined at this second unless moved
ZERO_ADDRESS = "0x" + "00" * 20
GAS = 150_000  # explicit gas for every call: no estimation, and reverts still get mined
HOUR = 3600

NOT_OWNER = "Stablecoin: caller is not the owner"
INVALID_SIGNATURE = "Stablecoin: invalid signature"
USED_OR_CANCELED = "Stablecoin: authorization is used or canceled"
NOT_YET_VALID = "Stablecoin: authorization is not yet valid"
EXPIRED = "Stablecoin: authorization is expired"
NOT_PAYEE = "Stablecoin: caller must be the payee"
EXCEEDS_BALANCE = "erc20: transfer amount exceeds balance"


@dataclass
class Env(ContractBench):
    """The bench's token is the one under test."""

    def transact(self, sender: Transactor, fn: str, *args: Any) -> Receipt:
        return self.token.contract.transact(sender, fn, *args, gas=GAS, check=False)


@pytest.fixture(scope="module")
def env() -> Env:
    return Env.create(T0)


def vrs(signature: bytes) -> tuple[int, bytes, bytes]:
    return signature[64], signature[:32], signature[32:64]


def authorization(
    env: Env,
    payer: Party,
    payee: Party | str,
    value: int,
    *,
    valid_after: int | None = None,
    valid_before: int | None = None,
    nonce: bytes | None = None,
) -> TransferAuthorization:
    now = env.now()
    return TransferAuthorization(
        payer.address,
        payee.address if isinstance(payee, Party) else payee,
        value,
        now - HOUR if valid_after is None else valid_after,
        now + HOUR if valid_before is None else valid_before,
        random_nonce() if nonce is None else nonce,
    )


def args(auth: TransferAuthorization, signature: bytes) -> tuple[Any, ...]:
    """The arguments of transferWithAuthorization / receiveWithAuthorization."""
    return (
        auth.from_,
        auth.to,
        auth.value,
        auth.valid_after,
        auth.valid_before,
        auth.nonce,
        *vrs(signature),
    )


def transfer_with(env: Env, auth: TransferAuthorization, signature: bytes) -> Receipt:
    return env.transact(env.relayer, "transferWithAuthorization", *args(auth, signature))


def sign_receive(env: Env, signer: LocalSigner, auth: TransferAuthorization) -> bytes:
    return signer.sign_typed_data(receive_with_authorization_typed_data(env.token_domain, auth))


def sign_cancel(env: Env, signer: LocalSigner, authorizer: str, nonce: bytes) -> bytes:
    message = cancel_authorization_typed_data(
        env.token_domain, CancelAuthorization(authorizer, nonce)
    )
    return signer.sign_typed_data(message)


def cancel(env: Env, authorizer: str, nonce: bytes, signature: bytes) -> Receipt:
    return env.transact(env.relayer, "cancelAuthorization", authorizer, nonce, *vrs(signature))


# -- metadata and the EIP-712 domain ------------------------------------------------------------


def test_metadata(env: Env) -> None:
    contract = env.token.contract
    assert contract.call("name") == "Agent Dollar"
    assert contract.call("symbol") == "USDX"
    assert contract.call("decimals") == 6
    # Contract.call hands addresses back lower-case (as eth-abi decodes them).
    assert to_checksum_address(contract.call("owner")) == dev_account(0).address


def test_eip712_domain_matches_what_we_sign_with(env: Env) -> None:
    fields, name, version, chain_id, verifying, salt, extensions = env.token.contract.call(
        "eip712Domain"
    )
    assert fields == b"\x0f"  # name, version, chainId, verifyingContract; no salt, no extensions
    assert (name, version, chain_id) == ("Agent Dollar", "1", 31337)
    assert to_checksum_address(verifying) == env.token.address
    assert (salt, extensions) == (b"\x00" * 32, ())
    any_message = transfer_with_authorization_typed_data(
        env.token_domain, TransferAuthorization(ZERO_ADDRESS, ZERO_ADDRESS, 0, 0, 0, bytes(32))
    )
    signed_domain = encode_typed_data(full_message=any_message).header  # the domain separator
    assert env.token.contract.call("DOMAIN_SEPARATOR") == signed_domain


@pytest.mark.parametrize(
    "wrong",
    [
        {"name": "Agent Yuan"},
        {"version": "2"},
        {"chain_id": 1},
        {"verifying_contract": "0x" + "11" * 20},
    ],
    ids=["name", "version", "chain_id", "verifying_contract"],
)
def test_signature_under_another_domain_is_rejected(env: Env, wrong: dict[str, Any]) -> None:
    payer, payee = env.party(tokens=100), env.party()
    domain = replace(env.token_domain, **wrong)
    auth = authorization(env, payer, payee, 100)

    signature = sign_transfer_authorization(payer.signer, domain, auth)

    assert reverted(transfer_with(env, auth, signature), INVALID_SIGNATURE)
    assert env.balance(payer) == 100
    assert not env.token.authorization_state(payer.address, auth.nonce)


# -- mint -------------------------------------------------------------------------------------


def test_owner_mints(env: Env) -> None:
    holder = env.party()
    supply = env.token.total_supply()

    receipt = env.token.mint(env.owner, holder.address, 1_000_000)

    assert receipt.status
    assert env.token.transfers(receipt) == [
        {"event": "Transfer", "sender": ZERO_ADDRESS, "receiver": holder.address, "value": 10**6}
    ]
    assert env.balance(holder) == 1_000_000
    assert env.token.total_supply() == supply + 1_000_000


def test_non_owner_cannot_mint(env: Env) -> None:
    minter = env.party(eth=True)
    supply = env.token.total_supply()

    receipt = env.transact(minter.tx, "mint", minter.address, 1_000_000)

    assert reverted(receipt, NOT_OWNER)
    assert env.balance(minter) == 0
    assert env.token.total_supply() == supply


def test_mint_to_the_zero_address_reverts(env: Env) -> None:
    assert reverted(
        env.transact(env.owner, "mint", ZERO_ADDRESS, 1), "erc20: mint to the zero address"
    )


# -- transfer, approve, transferFrom --------------------------------------------------------


def test_transfer(env: Env) -> None:
    sender, receiver = env.party(eth=True, tokens=500), env.party()

    receipt = env.transact(sender.tx, "transfer", receiver.address, 200)

    assert receipt.status
    assert env.token.transfers(receipt) == [
        {"event": "Transfer", "sender": sender.address, "receiver": receiver.address, "value": 200}
    ]
    assert (env.balance(sender), env.balance(receiver)) == (300, 200)


def test_transfer_more_than_the_balance_reverts(env: Env) -> None:
    sender, receiver = env.party(eth=True, tokens=500), env.party()

    assert reverted(env.transact(sender.tx, "transfer", receiver.address, 501), EXCEEDS_BALANCE)
    assert (env.balance(sender), env.balance(receiver)) == (500, 0)


def test_approve(env: Env) -> None:
    owner, spender = env.party(eth=True), env.party()

    receipt = env.transact(owner.tx, "approve", spender.address, 700)

    assert receipt.status
    assert env.token.contract.events(receipt, "Approval") == [
        {"event": "Approval", "owner": owner.address, "spender": spender.address, "value": 700}
    ]
    assert env.token.contract.call("allowance", owner.address, spender.address) == 700


def test_approve_the_zero_address_reverts(env: Env) -> None:
    owner = env.party(eth=True)
    receipt = env.transact(owner.tx, "approve", ZERO_ADDRESS, 700)
    assert reverted(receipt, "erc20: approve to the zero address")


def test_transfer_from(env: Env) -> None:
    owner, spender, receiver = env.party(eth=True, tokens=1_000), env.party(eth=True), env.party()
    assert env.transact(owner.tx, "approve", spender.address, 600).status

    receipt = env.transact(spender.tx, "transferFrom", owner.address, receiver.address, 400)

    assert receipt.status
    assert (env.balance(owner), env.balance(receiver)) == (600, 400)
    assert env.token.contract.call("allowance", owner.address, spender.address) == 200


def test_transfer_from_beyond_the_allowance_reverts(env: Env) -> None:
    owner, spender, receiver = env.party(eth=True, tokens=1_000), env.party(eth=True), env.party()
    assert env.transact(owner.tx, "approve", spender.address, 300).status

    receipt = env.transact(spender.tx, "transferFrom", owner.address, receiver.address, 301)

    assert reverted(receipt, "erc20: insufficient allowance")
    assert env.balance(owner) == 1_000
    assert env.token.contract.call("allowance", owner.address, spender.address) == 300


def test_transfer_from_beyond_the_balance_reverts(env: Env) -> None:
    owner, spender, receiver = env.party(eth=True, tokens=100), env.party(eth=True), env.party()
    assert env.transact(owner.tx, "approve", spender.address, 1_000).status

    receipt = env.transact(spender.tx, "transferFrom", owner.address, receiver.address, 101)

    assert reverted(receipt, EXCEEDS_BALANCE)


# -- permit (EIP-2612) --------------------------------------------------------------------------


def sign_permit(env: Env, signer: LocalSigner, permit: Permit) -> bytes:
    return signer.sign_typed_data(permit_typed_data(env.token_domain, permit))


def submit_permit(env: Env, permit: Permit, signature: bytes) -> Receipt:
    return env.transact(
        env.relayer,
        "permit",
        permit.owner,
        permit.spender,
        permit.value,
        permit.deadline,
        *vrs(signature),
    )


def test_permit_sets_the_allowance_and_bumps_the_nonce(env: Env) -> None:
    owner, spender, receiver = env.party(tokens=1_000), env.party(eth=True), env.party()
    nonce = env.token.contract.call("nonces", owner.address)
    permit = Permit(owner.address, spender.address, 250, nonce, env.now())  # deadline inclusive

    receipt = submit_permit(env, permit, sign_permit(env, owner.signer, permit))

    assert receipt.status
    assert env.token.contract.call("allowance", owner.address, spender.address) == 250
    assert env.token.contract.call("nonces", owner.address) == nonce + 1
    moved = env.transact(spender.tx, "transferFrom", owner.address, receiver.address, 250)
    assert moved.status
    assert env.balance(receiver) == 250


def test_permit_past_its_deadline_reverts(env: Env) -> None:
    owner, spender = env.party(), env.party()
    permit = Permit(owner.address, spender.address, 250, 0, env.now() - 1)

    receipt = submit_permit(env, permit, sign_permit(env, owner.signer, permit))

    assert reverted(receipt, "erc20: expired deadline")
    assert env.token.contract.call("allowance", owner.address, spender.address) == 0


def test_permit_signed_by_another_key_reverts(env: Env) -> None:
    owner, spender, thief = env.party(), env.party(), env.party()
    permit = Permit(owner.address, spender.address, 250, 0, env.now() + HOUR)

    receipt = submit_permit(env, permit, sign_permit(env, thief.signer, permit))

    assert reverted(receipt, "erc20: invalid signature")
    assert env.token.contract.call("nonces", owner.address) == 0


def test_permit_cannot_be_replayed(env: Env) -> None:
    owner, spender = env.party(tokens=1_000), env.party(eth=True)
    permit = Permit(owner.address, spender.address, 250, 0, env.now() + HOUR)
    signature = sign_permit(env, owner.signer, permit)
    assert submit_permit(env, permit, signature).status
    # The spender uses part of the allowance; a replay would top it back up.
    assert env.transact(spender.tx, "transferFrom", owner.address, spender.address, 100).status

    assert reverted(submit_permit(env, permit, signature), "erc20: invalid signature")
    assert env.token.contract.call("nonces", owner.address) == 1
    assert env.token.contract.call("allowance", owner.address, spender.address) == 150


# -- transferWithAuthorization (EIP-3009) -------------------------------------------------------


def test_transfer_with_authorization(env: Env) -> None:
    payer, payee = env.party(tokens=1_000_000), env.party()
    auth = authorization(env, payer, payee, 250_000)
    signature = sign_transfer_authorization(payer.signer, env.token_domain, auth)
    assert not env.token.authorization_state(payer.address, auth.nonce)

    receipt = transfer_with(env, auth, signature)

    assert receipt.status
    assert receipt.sender == env.relayer.address  # anyone may submit; the relayer pays the gas
    events = [env.token.contract.decode_log(log) for log in receipt.logs]
    assert events == [
        {"event": "AuthorizationUsed", "authorizer": payer.address, "nonce": auth.nonce},
        {"event": "Transfer", "sender": payer.address, "receiver": payee.address, "value": 250_000},
    ]
    assert env.token.authorization_state(payer.address, auth.nonce)
    assert (env.balance(payer), env.balance(payee)) == (750_000, 250_000)


def test_transfer_with_authorization_calldata_helper_matches(env: Env) -> None:
    payer, payee = env.party(tokens=10), env.party()
    auth = authorization(env, payer, payee, 10)
    signature = sign_transfer_authorization(payer.signer, env.token_domain, auth)
    data = env.token.transfer_with_authorization_data(
        auth.from_, auth.to, auth.value, auth.valid_after, auth.valid_before, auth.nonce, signature
    )
    assert data == env.token.contract.encode("transferWithAuthorization", *args(auth, signature))

    receipt = env.relayer.transact(env.token.address, data, gas=TRANSFER_WITH_AUTHORIZATION_GAS)

    assert receipt.status
    assert env.balance(payee) == 10


@pytest.mark.parametrize("payee_is_new", [True, False], ids=["new-payee", "known-payee"])
def test_transfer_with_authorization_gas(env: Env, payee_is_new: bool) -> None:
    """A regression guard, not a benchmark: measured about 64.5k, and 81.5k to a new holder."""
    payer, payee = env.party(tokens=1_000), env.party(tokens=0 if payee_is_new else 1)
    auth = authorization(env, payer, payee, 100)

    receipt = transfer_with(
        env, auth, sign_transfer_authorization(payer.signer, env.token_domain, auth)
    )

    assert receipt.status
    assert 60_000 <= receipt.gas_used <= 90_000
    assert receipt.gas_used <= TRANSFER_WITH_AUTHORIZATION_GAS
    if not payee_is_new:
        assert receipt.gas_used <= 70_000


def test_authorization_at_the_window_edges(env: Env) -> None:
    """Valid strictly after validAfter and strictly before validBefore: the tightest window."""
    payer, payee = env.party(tokens=10), env.party()
    now = env.now()
    auth = authorization(env, payer, payee, 10, valid_after=now - 1, valid_before=now + 1)

    receipt = transfer_with(
        env, auth, sign_transfer_authorization(payer.signer, env.token_domain, auth)
    )

    assert receipt.status
    assert receipt.block_timestamp == now


@pytest.mark.parametrize("seconds_ago", [0, 1, HOUR])
def test_expired_authorization_reverts(env: Env, seconds_ago: int) -> None:
    """Expired when validBefore <= block.timestamp: at validBefore itself, too."""
    payer, payee = env.party(tokens=10), env.party()
    valid_before = env.now() - seconds_ago
    auth = authorization(env, payer, payee, 10, valid_after=0, valid_before=valid_before)

    receipt = transfer_with(
        env, auth, sign_transfer_authorization(payer.signer, env.token_domain, auth)
    )

    assert reverted(receipt, EXPIRED)
    assert env.balance(payer) == 10
    assert not env.token.authorization_state(payer.address, auth.nonce)


def test_authorization_expires_when_the_clock_passes_valid_before(env: Env) -> None:
    payer, payee = env.party(tokens=10), env.party()
    auth = authorization(env, payer, payee, 10, valid_before=env.now() + 60)
    signature = sign_transfer_authorization(payer.signer, env.token_domain, auth)

    env.clock.now += 60  # the clock moves on before anyone submits

    assert env.now() == auth.valid_before
    assert reverted(transfer_with(env, auth, signature), EXPIRED)


@pytest.mark.parametrize("seconds_ahead", [0, 1, HOUR])
def test_not_yet_valid_authorization_reverts(env: Env, seconds_ahead: int) -> None:
    """Not yet valid when validAfter >= block.timestamp: at validAfter itself, too."""
    payer, payee = env.party(tokens=10), env.party()
    valid_after = env.now() + seconds_ahead
    auth = authorization(env, payer, payee, 10, valid_after=valid_after, valid_before=2**256 - 1)

    receipt = transfer_with(
        env, auth, sign_transfer_authorization(payer.signer, env.token_domain, auth)
    )

    assert reverted(receipt, NOT_YET_VALID)
    assert env.balance(payer) == 10


def test_authorization_becomes_valid_when_the_clock_passes_valid_after(env: Env) -> None:
    payer, payee = env.party(tokens=10), env.party()
    auth = authorization(env, payer, payee, 10, valid_after=env.now() + 30)
    signature = sign_transfer_authorization(payer.signer, env.token_domain, auth)
    assert reverted(transfer_with(env, auth, signature), NOT_YET_VALID)

    env.clock.now += 31

    assert transfer_with(env, auth, signature).status
    assert env.balance(payee) == 10


def test_reused_nonce_reverts(env: Env) -> None:
    payer, payee = env.party(tokens=100), env.party()
    auth = authorization(env, payer, payee, 10)
    signature = sign_transfer_authorization(payer.signer, env.token_domain, auth)
    assert transfer_with(env, auth, signature).status

    assert reverted(transfer_with(env, auth, signature), USED_OR_CANCELED)  # the same payment
    again = authorization(env, payer, payee, 20, nonce=auth.nonce)  # a new one, same nonce
    signature = sign_transfer_authorization(payer.signer, env.token_domain, again)
    assert reverted(transfer_with(env, again, signature), USED_OR_CANCELED)
    assert env.balance(payer) == 90


def test_authorization_signed_by_another_key_reverts(env: Env) -> None:
    payer, payee, thief = env.party(tokens=100), env.party(), env.party()
    auth = authorization(env, payer, payee, 100)
    # sign_transfer_authorization refuses to sign for someone else: go around it.
    signature = thief.signer.sign_typed_data(
        transfer_with_authorization_typed_data(env.token_domain, auth)
    )

    assert reverted(transfer_with(env, auth, signature), INVALID_SIGNATURE)
    assert env.balance(payer) == 100


@pytest.mark.parametrize(
    "mutate",
    [
        lambda a, other: {"value": a.value + 1},
        lambda a, other: {"to": other},
        lambda a, other: {"valid_after": a.valid_after - 1},
        lambda a, other: {"valid_before": a.valid_before + 1},
        lambda a, other: {"nonce": random_nonce()},
        lambda a, other: {"from_": other},
    ],
    ids=["value", "to", "valid_after", "valid_before", "nonce", "from"],
)
def test_signature_over_other_fields_reverts(
    env: Env, mutate: Callable[[TransferAuthorization, str], dict[str, Any]]
) -> None:
    payer, payee, other = env.party(tokens=1_000), env.party(), env.party(tokens=1_000)
    signed = authorization(env, payer, payee, 100)
    signature = sign_transfer_authorization(payer.signer, env.token_domain, signed)
    submitted = replace(signed, **mutate(signed, other.address))

    assert reverted(transfer_with(env, submitted, signature), INVALID_SIGNATURE)
    assert (env.balance(payer), env.balance(other), env.balance(payee)) == (1_000, 1_000, 0)


def test_cancelled_authorization_reverts(env: Env) -> None:
    payer, payee = env.party(tokens=100), env.party()
    auth = authorization(env, payer, payee, 100)
    signature = sign_transfer_authorization(payer.signer, env.token_domain, auth)
    assert cancel(
        env, payer.address, auth.nonce, sign_cancel(env, payer.signer, payer.address, auth.nonce)
    ).status

    assert reverted(transfer_with(env, auth, signature), USED_OR_CANCELED)
    assert env.balance(payer) == 100


def test_authorization_beyond_the_balance_reverts_and_leaves_the_nonce_unused(env: Env) -> None:
    payer, payee = env.party(tokens=99), env.party()
    auth = authorization(env, payer, payee, 100)
    signature = sign_transfer_authorization(payer.signer, env.token_domain, auth)

    assert reverted(transfer_with(env, auth, signature), EXCEEDS_BALANCE)
    assert not env.token.authorization_state(payer.address, auth.nonce)
    # Topped up, the very same signature now settles: the failed attempt spent nothing.
    env.token.mint(env.owner, payer.address, 1)
    assert transfer_with(env, auth, signature).status
    assert env.balance(payee) == 100


def test_high_s_signature_is_rejected(env: Env) -> None:
    payer, payee = env.party(tokens=100), env.party()
    auth = authorization(env, payer, payee, 100)
    v, r, s = vrs(sign_transfer_authorization(payer.signer, env.token_domain, auth))
    # (r, n - s) with the other v is the same signature spelt differently (it recovers the same
    # key), which the token must refuse so that one payment has one spelling.
    high_s = (SECP256K1_N - int.from_bytes(s, "big")).to_bytes(32, "big")
    malleated = r + high_s + bytes([55 - v])
    signable = encode_typed_data(
        full_message=transfer_with_authorization_typed_data(env.token_domain, auth)
    )
    assert Account.recover_message(signable, vrs=(55 - v, r, high_s)) == payer.address

    assert reverted(transfer_with(env, auth, malleated), "ecdsa: invalid signature `s` value")
    assert not env.token.authorization_state(payer.address, auth.nonce)


def test_garbage_signature_is_rejected(env: Env) -> None:
    payer, payee = env.party(tokens=100), env.party()
    auth = authorization(env, payer, payee, 100)

    receipt = transfer_with(env, auth, b"\x00" * 64 + b"\x1b")  # r = s = 0 recovers no key

    assert reverted(receipt, "ecdsa: invalid signature")


# -- receiveWithAuthorization ------------------------------------------------------------------


def test_payee_receives_with_authorization(env: Env) -> None:
    payer, payee = env.party(tokens=1_000), env.party(eth=True)
    auth = authorization(env, payer, payee, 600)

    receipt = env.transact(
        payee.tx, "receiveWithAuthorization", *args(auth, sign_receive(env, payer.signer, auth))
    )

    assert receipt.status
    assert [e["event"] for e in map(env.token.contract.decode_log, receipt.logs)] == [
        "AuthorizationUsed",
        "Transfer",
    ]
    assert (env.balance(payer), env.balance(payee)) == (400, 600)
    assert env.token.authorization_state(payer.address, auth.nonce)


def test_receive_with_authorization_by_anyone_but_the_payee_reverts(env: Env) -> None:
    payer, payee = env.party(tokens=1_000), env.party()
    auth = authorization(env, payer, payee, 600)

    receipt = env.transact(
        env.relayer, "receiveWithAuthorization", *args(auth, sign_receive(env, payer.signer, auth))
    )

    assert reverted(receipt, NOT_PAYEE)
    assert env.balance(payer) == 1_000


def test_receive_signature_cannot_be_used_as_transfer(env: Env) -> None:
    payer, payee = env.party(tokens=1_000), env.party()
    auth = authorization(env, payer, payee, 600)

    receipt = transfer_with(env, auth, sign_receive(env, payer.signer, auth))

    assert reverted(receipt, INVALID_SIGNATURE)


def test_transfer_signature_cannot_be_used_as_receive(env: Env) -> None:
    payer, payee = env.party(tokens=1_000), env.party(eth=True)
    auth = authorization(env, payer, payee, 600)
    signature = sign_transfer_authorization(payer.signer, env.token_domain, auth)

    receipt = env.transact(payee.tx, "receiveWithAuthorization", *args(auth, signature))

    assert reverted(receipt, INVALID_SIGNATURE)
    assert env.balance(payee) == 0


def test_receive_and_transfer_share_the_nonce_space(env: Env) -> None:
    payer, payee = env.party(tokens=1_000), env.party(eth=True)
    auth = authorization(env, payer, payee, 100)
    assert transfer_with(
        env, auth, sign_transfer_authorization(payer.signer, env.token_domain, auth)
    ).status

    receipt = env.transact(
        payee.tx, "receiveWithAuthorization", *args(auth, sign_receive(env, payer.signer, auth))
    )

    assert reverted(receipt, USED_OR_CANCELED)


# -- cancelAuthorization and authorizationState ------------------------------------------------


def test_cancel_authorization(env: Env) -> None:
    payer = env.party()
    nonce = random_nonce()

    receipt = cancel(
        env, payer.address, nonce, sign_cancel(env, payer.signer, payer.address, nonce)
    )

    assert receipt.status
    assert env.token.contract.events(receipt, "AuthorizationCanceled") == [
        {"event": "AuthorizationCanceled", "authorizer": payer.address, "nonce": nonce}
    ]
    assert env.token.authorization_state(payer.address, nonce)


def test_cancel_authorization_signed_by_another_key_reverts(env: Env) -> None:
    payer, griefer = env.party(), env.party()
    nonce = random_nonce()

    receipt = cancel(
        env, payer.address, nonce, sign_cancel(env, griefer.signer, payer.address, nonce)
    )

    assert reverted(receipt, INVALID_SIGNATURE)
    assert not env.token.authorization_state(payer.address, nonce)


def test_used_authorization_cannot_be_cancelled(env: Env) -> None:
    payer, payee = env.party(tokens=100), env.party()
    auth = authorization(env, payer, payee, 100)
    assert transfer_with(
        env, auth, sign_transfer_authorization(payer.signer, env.token_domain, auth)
    ).status
    cancellation = sign_cancel(env, payer.signer, payer.address, auth.nonce)

    receipt = cancel(env, payer.address, auth.nonce, cancellation)

    assert reverted(receipt, USED_OR_CANCELED)
    assert env.token.contract.events(receipt, "AuthorizationCanceled") == []


def test_cancellation_cannot_be_replayed(env: Env) -> None:
    payer = env.party()
    nonce = random_nonce()
    signature = sign_cancel(env, payer.signer, payer.address, nonce)
    assert cancel(env, payer.address, nonce, signature).status

    assert reverted(cancel(env, payer.address, nonce, signature), USED_OR_CANCELED)


def test_authorization_state_is_per_authorizer_and_nonce(env: Env) -> None:
    payer, payee, bystander = env.party(tokens=100), env.party(), env.party()
    auth = authorization(env, payer, payee, 100)
    other_nonce = random_nonce()
    assert transfer_with(
        env, auth, sign_transfer_authorization(payer.signer, env.token_domain, auth)
    ).status

    assert env.token.authorization_state(payer.address, auth.nonce)
    assert not env.token.authorization_state(payer.address, other_nonce)
    assert not env.token.authorization_state(bystander.address, auth.nonce)
    assert not env.token.authorization_state(payee.address, auth.nonce)


# -- ownership ---------------------------------------------------------------------------------


@pytest.fixture
def own_token(env: Env) -> Stablecoin:
    """A token of its own: these tests hand ownership away."""
    return Stablecoin.deploy(env.owner, StablecoinSpec("Owned Dollar", "OWND"))


def test_owner_transfers_ownership(env: Env, own_token: Stablecoin) -> None:
    new_owner, holder = env.party(eth=True), env.party()

    receipt = own_token.contract.transact(
        env.owner, "transfer_ownership", new_owner.address, gas=GAS
    )

    assert own_token.contract.events(receipt, "OwnershipTransferred") == [
        {
            "event": "OwnershipTransferred",
            "previous_owner": env.owner.address,
            "new_owner": new_owner.address,
        }
    ]
    assert to_checksum_address(own_token.contract.call("owner")) == new_owner.address
    assert own_token.mint(new_owner.tx, holder.address, 5).status
    old = own_token.contract.transact(env.owner, "mint", holder.address, 5, gas=GAS, check=False)
    assert reverted(old, NOT_OWNER)
    assert own_token.balance_of(holder.address) == 5


def test_non_owner_cannot_transfer_ownership(env: Env, own_token: Stablecoin) -> None:
    usurper = env.party(eth=True)

    receipt = own_token.contract.transact(
        usurper.tx, "transfer_ownership", usurper.address, gas=GAS, check=False
    )

    assert reverted(receipt, "ownable: caller is not the owner")
    assert to_checksum_address(own_token.contract.call("owner")) == env.owner.address


def test_ownership_cannot_go_to_the_zero_address(env: Env, own_token: Stablecoin) -> None:
    receipt = own_token.contract.transact(
        env.owner, "transfer_ownership", ZERO_ADDRESS, gas=GAS, check=False
    )
    assert reverted(receipt, "erc20: new owner is the zero address")


def test_renounced_ownership_ends_minting(env: Env, own_token: Stablecoin) -> None:
    assert own_token.contract.transact(env.owner, "renounce_ownership", gas=GAS).status

    assert to_checksum_address(own_token.contract.call("owner")) == ZERO_ADDRESS
    with pytest.raises(ContractRevertError, match=NOT_OWNER):
        own_token.mint(env.owner, env.owner.address, 1)


# -- property: settlements conserve supply -----------------------------------------------------

HOLDERS = 3

_holder = st.integers(0, HOLDERS - 1)
_amount = st.integers(0, 2_000)
_operation = st.one_of(
    st.tuples(st.just("mint"), _holder, _amount),
    st.tuples(st.just("transfer"), _holder, _holder, _amount),
    st.tuples(
        st.just("authorized"),
        _holder,
        _holder,
        _amount,
        st.sampled_from(["ok", "ok", "wrong-signer", "replay", "expired", "tampered"]),
    ),
)


@pytest.fixture(scope="module")
def holders(env: Env) -> list[Party]:
    """Keys with gas money, reused across examples: each example deploys a token of its own."""
    return [env.party(eth=True) for _ in range(HOLDERS)]


@pytest.mark.slow
@settings(max_examples=25, deadline=None)
@given(operations=st.lists(_operation, max_size=12))
def test_supply_is_conserved(
    env: Env, holders: list[Party], operations: list[tuple[Any, ...]]
) -> None:
    token = Stablecoin.deploy(env.owner, StablecoinSpec("Property Dollar", "PROP"))
    domain = TokenDomain("Property Dollar", "1", env.chain.chain_id, token.address)
    contract = token.contract
    balances = [0] * HOLDERS
    minted = 0
    used: list[tuple[TransferAuthorization, bytes]] = []
    now = env.now()

    for op in operations:
        if op[0] == "mint":
            _, to, amount = op
            receipt = contract.transact(env.owner, "mint", holders[to].address, amount, gas=GAS)
            balances[to] += amount
            minted += amount
            continue
        if op[0] == "transfer":
            _, src, dst, amount = op
            receipt = contract.transact(
                holders[src].tx, "transfer", holders[dst].address, amount, gas=GAS, check=False
            )
            expected = balances[src] >= amount
        else:
            _, src, dst, amount, mode = op
            payer, payee = holders[src], holders[dst]
            auth = TransferAuthorization(
                payer.address,
                payee.address,
                amount,
                0,
                now if mode == "expired" else now + HOUR,
                random_nonce(),
            )
            signer = holders[(src + 1) % HOLDERS] if mode == "wrong-signer" else payer
            signature = signer.signer.sign_typed_data(
                transfer_with_authorization_typed_data(domain, auth)
            )
            if mode == "replay" and used:
                auth, signature = used[-1]
            if mode == "tampered":
                auth = replace(auth, value=auth.value + 1)
            receipt = contract.transact(
                env.relayer,
                "transferWithAuthorization",
                *args(auth, signature),
                gas=GAS,
                check=False,
            )
            src = holders.index(next(h for h in holders if h.address == auth.from_))
            dst = holders.index(next(h for h in holders if h.address == auth.to))
            amount = auth.value
            expected = (
                mode in ("ok", "replay")
                and (auth, signature) not in used
                and balances[src] >= amount
            )
            if expected:
                used.append((auth, signature))
        assert receipt.status == expected, (op, receipt.revert_reason)
        if expected:
            balances[src] -= amount
            balances[dst] += amount

        supply = token.total_supply()
        assert supply == minted
        assert sum(token.balance_of(h.address) for h in holders) == supply

    assert [token.balance_of(h.address) for h in holders] == balances
