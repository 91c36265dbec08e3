"""Reading the stablecoin's storage instead of calling its getters.

`balance_of` and `authorization_state` read storage slots found from the compiler's layout when
the code at the token's address is ours, and call the getters otherwise. The storage answers
must equal the getters' for every holder and nonce; a slot computed the wrong way (keys in
Solidity's order, the wrong variable, another token's layout) must show up here as a mismatch.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from eth_abi import encode
from eth_abi.exceptions import EncodingError
from eth_account import Account
from eth_utils import keccak
from hypothesis import given, settings
from hypothesis import strategies as st

from agent_pay.chain import compiler
from agent_pay.chain.compiler import (
    CompiledContract,
    compile_contract,
    default_source_dir,
    hashmap_slot,
)
from agent_pay.chain.contract import Transactor, deploy_contract
from agent_pay.chain.devkeys import dev_signer
from agent_pay.chain.embedded import EmbeddedChain
from agent_pay.chain.stablecoin import (
    DEFAULT_STABLECOINS,
    Stablecoin,
    StablecoinSpec,
    StorageSlots,
)
from agent_pay.signing import (
    CancelAuthorization,
    LocalSigner,
    TokenDomain,
    TransferAuthorization,
    cancel_authorization_typed_data,
    random_nonce,
    sign_transfer_authorization,
)
from agent_pay.testing import FakeClock

T0 = 1_700_000_000
GAS = 150_000
ZERO_ADDRESS = "0x" + "00" * 20
BALANCES = "HashMap[address, uint256]"
AUTHORIZATIONS = "HashMap[address, HashMap[bytes32, bool]]"

MAPS = """
# pragma version ~=0.4.3

padding: uint256
balances: HashMap[address, uint256]
flags: HashMap[address, HashMap[bytes32, bool]]

@external
def put(holder: address, amount: uint256, nonce: bytes32):
    self.balances[holder] = amount
    self.flags[holder][nonce] = True
"""


def word(address: str) -> bytes:
    return encode(["address"], [address])


def swapped(base: int, key: bytes) -> int:
    """Solidity's mapping rule, keccak256(key ++ slot): not vyper's."""
    return int.from_bytes(keccak(key + base.to_bytes(32, "big")), "big")


# -- the HashMap rule and the layout, on a contract of our own ----------------------------------


@pytest.fixture(scope="module")
def maps_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("maps")
    (path / "Maps.vy").write_text(MAPS)
    return path


def test_vyper_keys_a_hashmap_by_keccak_of_slot_then_key(maps_dir: Path) -> None:
    compiled = compile_contract("Maps", source_dir=maps_dir, cache_dir=maps_dir / "cache")
    balances = compiled.storage_slot("balances", BALANCES)
    flags = compiled.storage_slot("flags", AUTHORIZATIONS)
    assert (balances, flags) == (1, 2)  # after `padding`: nothing here assumes slot 0
    chain = EmbeddedChain()
    sender = Transactor(chain, dev_signer(0))
    maps = deploy_contract(sender, compiled.abi, compiled.bytecode)

    for index in range(5):
        holder, nonce = Account.create().address, random_nonce()
        maps.transact(sender, "put", holder, 1000 + index, nonce, gas=GAS)

        assert (
            chain.get_storage_at(maps.address, hashmap_slot(balances, word(holder))) == 1000 + index
        )
        assert chain.get_storage_at(maps.address, hashmap_slot(flags, word(holder), nonce)) == 1
        assert chain.get_storage_at(maps.address, swapped(balances, word(holder))) == 0
        outer = hashmap_slot(flags, word(holder))
        assert chain.get_storage_at(maps.address, swapped(outer, nonce)) == 0
        assert chain.get_storage_at(maps.address, hashmap_slot(flags, nonce, word(holder))) == 0


def test_the_layout_is_cached_with_the_code(
    maps_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    first = compile_contract("Maps", source_dir=maps_dir, cache_dir=cache)
    monkeypatch.setattr(compiler, "_memo", {})
    monkeypatch.setattr(compiler, "_compile_sources", pytest.fail)  # a disk hit, no compiling

    again = compile_contract("Maps", source_dir=maps_dir, cache_dir=cache)

    assert again is not first
    assert again.layout == first.layout
    assert again.layout["storage_layout"]["balances"] == {
        "type": BALANCES,
        "n_slots": 1,
        "slot": 1,
    }
    (cache_file,) = cache.iterdir()
    assert json.loads(cache_file.read_text())["layout"] == first.layout


def test_a_cache_file_without_a_layout_is_recompiled(maps_dir: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    first = compile_contract("Maps", source_dir=maps_dir, cache_dir=cache)
    (cache_file,) = cache.iterdir()
    body = json.loads(cache_file.read_text())
    del body["layout"]
    body.pop("checksum")
    body["checksum"] = compiler._sha256_json(body)  # consistent, but from before layouts
    cache_file.write_text(json.dumps(body))

    assert compiler._read_cache(cache_file, name="Maps", source_hash=first.source_hash) is None


# -- finding variables in the stablecoin's layout ------------------------------------------------


def test_snekmate_variables_are_found_by_name_under_their_module() -> None:
    compiled = compile_contract("Stablecoin")
    storage = compiled.layout["storage_layout"]

    slot = compiled.storage_slot("balanceOf", BALANCES)

    assert slot == storage["erc20"]["balanceOf"]["slot"]
    assert compiled.storage_slot("erc20.balanceOf", BALANCES) == slot
    assert compiled.storage_slot("ownable.balanceOf", BALANCES) is None
    assert (
        compiled.storage_slot("_authorization_states", AUTHORIZATIONS)
        == (storage["_authorization_states"]["slot"])
    )
    assert compiled.storage_slot("balanceOf", "HashMap[address, uint8]") is None  # wrong type
    assert compiled.storage_slot("noSuchVariable", BALANCES) is None


def test_an_ambiguous_or_missing_layout_finds_nothing() -> None:
    entry = {"type": BALANCES, "n_slots": 1, "slot": 3}
    base = replace(compile_contract("Stablecoin"), layout={})
    twice = replace(
        base, layout={"storage_layout": {"a": {"balanceOf": entry}, "balanceOf": entry}}
    )

    assert base.storage_slot("balanceOf", BALANCES) is None
    assert twice.storage_slot("balanceOf", BALANCES) is None
    assert twice.storage_slot("a.balanceOf", BALANCES) == 3


# -- the stablecoin: storage answers equal the getters' ------------------------------------------


@dataclass
class Env:
    chain: EmbeddedChain
    token: Stablecoin  # reads storage
    by_call: Stablecoin  # the same token, read through its getters
    owner: Transactor
    domain: TokenDomain
    holders: list[str]
    used: list[tuple[str, bytes]]  # (authorizer, nonce) used or cancelled
    unused: list[tuple[str, bytes]]


def transfer(env: Env, signer: LocalSigner, to: str, value: int) -> bytes:
    now = env.chain.next_timestamp()
    auth = TransferAuthorization(signer.address, to, value, now - 60, now + 3600, random_nonce())
    signature = sign_transfer_authorization(signer, env.domain, auth)
    r, s, v = signature[:32], signature[32:64], signature[64]
    fields = (auth.from_, auth.to, auth.value, auth.valid_after, auth.valid_before, auth.nonce)
    receipt = env.token.contract.transact(
        env.owner, "transferWithAuthorization", *fields, v, r, s, gas=GAS
    )
    assert receipt.status
    return auth.nonce


def cancel(env: Env, signer: LocalSigner, nonce: bytes) -> None:
    message = cancel_authorization_typed_data(
        env.domain, CancelAuthorization(signer.address, nonce)
    )
    signature = signer.sign_typed_data(message)
    r, s, v = signature[:32], signature[32:64], signature[64]
    env.token.contract.transact(
        env.owner, "cancelAuthorization", signer.address, nonce, v, r, s, gas=GAS
    )


@pytest.fixture(scope="module")
def env() -> Env:
    chain = EmbeddedChain(clock=FakeClock(T0))
    owner = Transactor(chain, dev_signer(0))
    token = Stablecoin.deploy(owner, DEFAULT_STABLECOINS[0])
    asset = token.asset
    domain = TokenDomain(asset.eip712_name, asset.eip712_version, chain.chain_id, token.address)
    env = Env(chain, token, Stablecoin(token.contract, asset), owner, domain, [], [], [])
    payers = [LocalSigner(Account.create()) for _ in range(4)]
    token.mint_many(owner, [(p.address, 1_000_000 * (i + 1)) for i, p in enumerate(payers)])
    payees = [Account.create().address for _ in range(4)]
    for index, payer in enumerate(payers):
        for payee in payees[: index + 1]:
            env.used.append((payer.address, transfer(env, payer, payee, 1234 + index)))
        env.unused.append((payer.address, random_nonce()))
        cancelled = random_nonce()
        cancel(env, payer, cancelled)
        env.used.append((payer.address, cancelled))
    # One payer spends everything: a balance that went back to zero.
    emptied = payers[0]
    transfer(env, emptied, payees[0], token.balance_of(emptied.address))
    # Every used nonce, under another authorizer, is unused.
    env.unused += [(payees[0], nonce) for _, nonce in env.used]
    env.holders = [
        ZERO_ADDRESS,
        owner.address,
        token.address,
        *(p.address for p in payers),
        *payees,
        *(Account.create().address for _ in range(5)),
    ]
    return env


def test_a_token_we_compiled_reads_storage(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    assert env.token.slots is not None
    assert env.by_call.slots is None

    def no_calls(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a storage read called the contract")

    monkeypatch.setattr(env.token.contract, "call", no_calls)
    env.token.balance_of(env.holders[3])
    env.token.authorization_state(*env.used[0])


def test_balances_equal_the_getters(env: Env) -> None:
    balances = [env.token.balance_of(h) for h in env.holders]

    assert balances == [env.by_call.balance_of(h) for h in env.holders]
    assert balances[3] == 0  # the emptied payer
    assert sum(1 for b in balances if b) >= 7  # payers and payees: nonzero answers to compare
    assert sum(balances) == env.token.total_supply()


def test_authorization_states_equal_the_getters(env: Env) -> None:
    for authorizer, nonce in env.used:
        assert env.token.authorization_state(authorizer, nonce)
        assert env.by_call.authorization_state(authorizer, nonce)
    for authorizer, nonce in env.unused:
        assert not env.token.authorization_state(authorizer, nonce)
        assert not env.by_call.authorization_state(authorizer, nonce)
    authorizer, _ = env.used[0]
    for nonce in (bytes(32), b"\xff" * 32, b"short"):  # a short nonce is right-padded, as ABI
        assert env.token.authorization_state(authorizer, nonce) is (
            env.by_call.authorization_state(authorizer, nonce)
        )


@settings(max_examples=40, deadline=None)
@given(holder=st.binary(min_size=20, max_size=20), nonce=st.binary(min_size=32, max_size=32))
def test_any_holder_and_nonce_read_the_same(env: Env, holder: bytes, nonce: bytes) -> None:
    address = "0x" + holder.hex()
    assert env.token.balance_of(address) == env.by_call.balance_of(address)
    assert env.token.authorization_state(address, nonce) is (
        env.by_call.authorization_state(address, nonce)
    )


@pytest.mark.parametrize(
    "args",
    [
        ("0x1234",),
        ("0x" + "aB" * 20,),  # mixed case, a bad checksum: eth-abi accepts it
        ("0x1234", bytes(32)),
        (ZERO_ADDRESS, bytes(33)),
        (ZERO_ADDRESS, "0x" + "00" * 32),
    ],
)
def test_odd_arguments_fare_as_in_the_call(env: Env, args: tuple[Any, ...]) -> None:
    def outcome(token: Stablecoin) -> object:
        read = token.balance_of if len(args) == 1 else token.authorization_state
        try:
            return read(*args)
        except EncodingError as error:
            return type(error)

    assert outcome(env.token) == outcome(env.by_call)


# -- falling back to calls -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def other_token(tmp_path_factory: pytest.TempPathFactory) -> CompiledContract:
    """The stablecoin with one more variable ahead of `_authorization_states`: a token that is
    not ours, whose authorization states live one slot further on."""
    source_dir = tmp_path_factory.mktemp("other")
    shutil.copytree(default_source_dir(), source_dir, dirs_exist_ok=True)
    path = source_dir / "Stablecoin.vy"
    marker = "_authorization_states: HashMap[address, HashMap[bytes32, bool]]"
    text = path.read_text()
    assert text.count(marker) == 1
    path.write_text(text.replace(marker, "_shifted: uint256\n" + marker))
    return compile_contract(source_dir=source_dir, cache_dir=source_dir / "cache")


def test_a_token_we_did_not_compile_is_read_by_calls(
    env: Env, other_token: CompiledContract
) -> None:
    spec = StablecoinSpec("Other Dollar", "ODX")
    contract = deploy_contract(
        env.owner, other_token.abi, other_token.bytecode, spec.name, spec.symbol, 6, spec.name, "1"
    )
    payer = LocalSigner(Account.create())
    contract.transact(env.owner, "mint", payer.address, 500, gas=GAS)

    other = Stablecoin.at(env.chain, contract.address)
    domain = TokenDomain(spec.name, "1", env.chain.chain_id, contract.address)
    nonce = transfer(replace(env, token=other, domain=domain), payer, env.holders[-1], 200)

    assert other.slots is None
    assert other.balance_of(payer.address) == 300
    assert other.authorization_state(payer.address, nonce)
    # Our slots on its code would answer wrongly: what the code check is for.
    ours = StorageSlots.of(compile_contract("Stablecoin"), env.chain.get_code(env.token.address))
    assert ours is not None
    misread = Stablecoin(other.contract, other.asset, ours)
    assert not misread.authorization_state(payer.address, nonce)


def test_no_slots_without_our_code_or_a_layout(env: Env) -> None:
    compiled = compile_contract("Stablecoin")
    code = env.chain.get_code(env.token.address)

    assert StorageSlots.of(compiled, code) is not None
    assert StorageSlots.of(compiled, b"") is None
    assert StorageSlots.of(compiled, code[:100] + bytes([code[100] ^ 1]) + code[101:]) is None
    assert StorageSlots.of(replace(compiled, layout={}), code) is None


def test_storage_reads_are_cheaper_than_calls(env: Env) -> None:
    """Not a benchmark: a guard that the storage path did not become the slow one."""
    holder, (authorizer, nonce) = env.holders[4], env.used[0]

    def best(read: Any, rounds: int = 30) -> float:
        times = []
        for _ in range(rounds):
            start = time.perf_counter()
            read()
            times.append(time.perf_counter() - start)
        return min(times)

    assert best(lambda: env.token.balance_of(holder)) < best(lambda: env.by_call.balance_of(holder))
    assert best(lambda: env.token.authorization_state(authorizer, nonce)) < best(
        lambda: env.by_call.authorization_state(authorizer, nonce)
    )
