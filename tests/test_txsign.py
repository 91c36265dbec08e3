"""The direct type-2 transaction signer, signing through a `LocalSigner`, is byte for byte
eth-account's."""

from __future__ import annotations

from eth_account import Account
from eth_utils import to_canonical_address, to_checksum_address
from hypothesis import given, settings
from hypothesis import strategies as st

from agent_pay.chain.txsign import sign_dynamic_fee_transaction
from agent_pay.signing import LocalSigner

_UINT64 = st.integers(min_value=0, max_value=2**64 - 1)


@settings(max_examples=60, deadline=None)
@given(
    key=st.binary(min_size=32, max_size=32).filter(
        lambda k: 0 < int.from_bytes(k, "big") < 2**256 - 2**128
    ),
    chain_id=st.integers(min_value=1, max_value=2**48),
    nonce=_UINT64,
    priority_fee=_UINT64,
    extra_fee=_UINT64,
    gas=st.integers(min_value=21_000, max_value=30_000_000),
    to=st.one_of(st.none(), st.binary(min_size=20, max_size=20)),
    value=st.integers(min_value=0, max_value=2**128),
    data=st.binary(max_size=400),
)
def test_same_bytes_as_eth_account(
    key: bytes,
    chain_id: int,
    nonce: int,
    priority_fee: int,
    extra_fee: int,
    gas: int,
    to: bytes | None,
    value: int,
    data: bytes,
) -> None:
    account = Account.from_key(key)
    tx: dict[str, object] = {
        "type": 2,
        "chainId": chain_id,
        "nonce": nonce,
        "value": value,
        "data": data,
        "gas": gas,
        "maxFeePerGas": priority_fee + extra_fee,
        "maxPriorityFeePerGas": priority_fee,
    }
    if to is not None:
        tx["to"] = to_checksum_address(to)
    expected = account.sign_transaction(tx)
    signed = sign_dynamic_fee_transaction(
        LocalSigner(account),
        chain_id=chain_id,
        nonce=nonce,
        max_priority_fee_per_gas=priority_fee,
        max_fee_per_gas=priority_fee + extra_fee,
        gas=gas,
        to=to_canonical_address(to) if to is not None else b"",
        value=value,
        data=data,
    )
    assert signed.raw_transaction == bytes(expected.raw_transaction)
    assert signed.hash == bytes(expected.hash)
