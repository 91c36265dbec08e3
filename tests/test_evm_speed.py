"""The embedded chain's faster py-evm configuration (agent_pay.chain.evm_speed) changes nothing.

Three levels: the memoised JUMPDEST analysis against py-evm's own on arbitrary bytes; raw
bytecode (jumps into PUSH data, memory growth, running out of gas) run by both computations; and
a whole chain's worth of transactions — token, channel contract, reverts — mined with the fast VM
and replayed on stock Prague, block hash for block hash (state, receipts and bloom included).
"""

from __future__ import annotations

import random
from typing import Any

import pytest
from eth.vm.code_stream import CodeStream
from eth.vm.forks import PragueVM
from eth_account import Account
from hypothesis import given, settings
from hypothesis import strategies as st

from agent_pay.chain import dev_genesis
from agent_pay.chain.base import ContractRevertError, Receipt
from agent_pay.chain.channel import ChannelManager
from agent_pay.chain.contract import Transactor
from agent_pay.chain.devkeys import dev_account, dev_signer
from agent_pay.chain.embedded import EmbeddedChain, MinedBlock
from agent_pay.chain.evm_speed import (
    AnalysedCodeStream,
    FastPragueComputation,
    FastPragueVM,
    instruction_starts,
)
from agent_pay.chain.stablecoin import DEFAULT_STABLECOINS, Stablecoin
from agent_pay.signing import (
    LocalSigner,
    TokenDomain,
    TransferAuthorization,
    sign_transfer_authorization,
)

T0 = 1_700_000_000
CONTRACT = b"\x11" * 20
CALLER = b"\x22" * 20


class _PlainDevVM(PragueVM):  # type: ignore[misc]
    """Stock py-evm Prague with only the embedded chain's timestamp rule: the reference."""

    @classmethod
    def validate_header(cls, header: Any, parent_header: Any) -> None:
        if parent_header is not None and header.timestamp == parent_header.timestamp:
            parent_header = parent_header.copy(timestamp=header.timestamp - 1)
        super().validate_header(header, parent_header)


def _chain(plain: bool, on_block: Any = None) -> EmbeddedChain:
    saved = dev_genesis.DevPragueVM
    if plain:
        dev_genesis.DevPragueVM = _PlainDevVM  # type: ignore[misc]
    try:
        return EmbeddedChain(clock=lambda: T0, genesis_timestamp=T0, on_block=on_block)
    finally:
        dev_genesis.DevPragueVM = saved  # type: ignore[misc]


@pytest.fixture(scope="module")
def chains() -> tuple[EmbeddedChain, EmbeddedChain]:
    return _chain(plain=True), _chain(plain=False)


def test_the_embedded_chain_runs_the_fast_vm() -> None:
    vm = _chain(plain=False).evm.get_vm()
    assert isinstance(vm, FastPragueVM)
    assert vm.state.computation_class is FastPragueComputation


# -- JUMPDEST analysis ---------------------------------------------------------------------------


def _py_evm_valid(code: bytes, position: int) -> bool:
    return bool(CodeStream(code).is_valid_opcode(position))


PUSHY = st.binary(max_size=120).map(
    # Bias towards PUSH opcodes and JUMPDEST so that PUSH data overlaps often.
    lambda raw: bytes(0x5B if b % 5 == 0 else 0x60 + b % 32 if b % 2 else b for b in raw)
)


@settings(max_examples=400, deadline=None)
@given(code=st.one_of(st.binary(max_size=120), PUSHY))
def test_instruction_starts_agree_with_py_evm_everywhere(code: bytes) -> None:
    ours = AnalysedCodeStream(code)
    for position in range(len(code) + 40):
        assert ours.is_valid_opcode(position) == _py_evm_valid(code, position), position


@pytest.mark.parametrize(
    ("code", "position", "valid"),
    [
        ("605b", 1, False),  # PUSH1's data byte
        ("605b5b", 2, True),  # right after it
        ("7f" + "5b" * 32 + "5b", 32, False),  # PUSH32's last data byte
        ("7f" + "5b" * 32 + "5b", 33, True),
        ("617f5b5b", 2, False),  # 0x7f is PUSH2's data here, not a PUSH32 ...
        ("617f5b5b", 3, True),  # ... so it does not swallow the next byte
        ("7f5b", 1, False),  # data of a PUSH32 cut short by the end of code
        ("5b", 1, False),  # past the end
        ("", 0, False),
    ],
)
def test_instruction_starts_edge_cases(code: str, position: int, valid: bool) -> None:
    raw = bytes.fromhex(code)
    assert AnalysedCodeStream(raw).is_valid_opcode(position) is valid
    assert _py_evm_valid(raw, position) is valid


def test_the_analysis_is_shared_per_code() -> None:
    code = bytes.fromhex("60045660015b00")
    assert instruction_starts(code) is instruction_starts(bytes(bytearray(code)))


def test_the_cache_stays_bounded() -> None:
    for n in range(2_000):
        instruction_starts(n.to_bytes(4, "big"))
    from agent_pay.chain import evm_speed

    assert len(evm_speed._starts_cache) <= evm_speed._MAX_CACHED_CODES


# -- raw bytecode, both computations ------------------------------------------------------------

JUMPS = {
    "jump to a JUMPDEST": ("600456005b00", None),
    "jump into PUSH1 data": ("600456605b00", "InvalidInstruction"),
    "jumpi into PUSH2 data": ("6001600657615b5b00", "InvalidInstruction"),
    "jumpi not taken": ("6000600657615b5b00", None),
    "jump into PUSH32 data": ("601056" + "7f" + "5b" * 32 + "5b00", "InvalidInstruction"),
    "jump past PUSH32 data": ("602456" + "7f" + "5b" * 32 + "5b00", None),
    "jump to a 0x7f that is data": ("600556617f5b5b00", "InvalidInstruction"),
    "jump after a 0x7f that is data": ("600656617f5b5b00", None),
    "jump to a non-JUMPDEST": ("60035600", "InvalidJumpDestination"),
    "jump past the end": ("601056", "InvalidJumpDestination"),
}

MEMORY = {
    # MSTORE at 0x400 (grows), MLOAD 0, MSTORE8 at 0x500 (grows), MLOAD 0x410 (inside)
    "mstore, mload, mstore8": "602a610400526000515060ff610500536104105150",
    "return at a huge offset, size 0": "600064ffffffffff" + "f3",
    "return 32 bytes": "602a60005260206000f3",
    "mstore far out of gas": "6001640100000000" + "52",
    "mcopy": "602a60005260206000610200" + "5e" + "6020610200f3",
    "sha3": "602a600052604060002060005260206000f3",
    "calldatacopy, size 0, huge offset": "6000600064ffffffffff37",
    "codecopy then return": "600e6000600039600e6000f3",
}


def _run(chain: EmbeddedChain, code: bytes, gas: int) -> tuple[Any, ...]:
    vm = chain.evm.get_vm(chain.head)
    computation = vm.execute_bytecode(
        origin=None,
        gas_price=0,
        gas=gas,
        to=CONTRACT,
        sender=CALLER,
        value=0,
        data=b"\x01\x02",
        code=code,
    )
    error = type(computation.error).__name__ if computation.is_error else None
    return error, computation.get_gas_used(), computation.get_gas_remaining(), computation.output


@pytest.mark.parametrize(("code", "error"), list(JUMPS.values()), ids=list(JUMPS))
def test_jumps_fail_and_succeed_exactly_as_py_evm(
    chains: tuple[EmbeddedChain, EmbeddedChain], code: str, error: str | None
) -> None:
    plain, fast = chains
    expected = _run(plain, bytes.fromhex(code), 100_000)
    assert expected[0] == error
    assert _run(fast, bytes.fromhex(code), 100_000) == expected


@pytest.mark.parametrize("code", list(MEMORY.values()), ids=list(MEMORY))
@pytest.mark.parametrize("gas", [100_000, 30, 3])
def test_memory_and_gas_exactly_as_py_evm(
    chains: tuple[EmbeddedChain, EmbeddedChain], code: str, gas: int
) -> None:
    plain, fast = chains
    assert _run(fast, bytes.fromhex(code), gas) == _run(plain, bytes.fromhex(code), gas)


# Random code may hold SELFDESTRUCT, for which py-evm warns on every run (on both VMs alike).
@pytest.mark.filterwarnings("ignore:SELFDESTRUCT opcode present:DeprecationWarning")
@settings(max_examples=150, deadline=None)
@given(code=st.one_of(st.binary(max_size=64), PUSHY))
def test_arbitrary_bytecode_runs_identically(
    chains: tuple[EmbeddedChain, EmbeddedChain], code: bytes
) -> None:
    plain, fast = chains
    assert _run(fast, code, 50_000) == _run(plain, code, 50_000)


def _initcode(runtime: bytes) -> bytes:
    """Init code returning `runtime` (at most 32 bytes) as the contract's code."""
    assert len(runtime) <= 32
    return (
        bytes([0x60 + len(runtime) - 1])
        + runtime
        + bytes([0x60, 0x00, 0x52])  # MSTORE at 0, right-aligned in the word
        + bytes([0x60, len(runtime), 0x60, 32 - len(runtime), 0xF3])  # RETURN the tail
    )


def test_a_deployed_contract_cannot_jump_into_push_data() -> None:
    chain = _chain(plain=False)
    deployer = Transactor(chain, dev_signer(0))
    good = deployer.transact(None, _initcode(bytes.fromhex("600456005b00")), gas=100_000)
    bad = deployer.transact(None, _initcode(bytes.fromhex("600456605b00")), gas=100_000)
    assert good.contract_address
    assert bad.contract_address

    assert chain.call(good.contract_address, b"") == b""
    with pytest.raises(ContractRevertError) as refused:
        chain.call(bad.contract_address, b"")
    assert refused.value.reason == "InvalidInstruction"

    ok = deployer.transact(good.contract_address, b"", gas=60_000)
    failed = deployer.transact(bad.contract_address, b"", gas=60_000)
    assert ok.status
    assert not failed.status
    assert failed.revert_reason == "InvalidInstruction"
    assert failed.gas_used == 60_000  # an invalid jump burns all the gas


# -- a chain's worth of transactions, mined both ways --------------------------------------------


def _workload(chain: EmbeddedChain) -> None:
    """Deployments, mints, EIP-3009 settlements (some refused), plain transfers, raw code."""
    owner = Transactor(chain, dev_signer(0))
    relayer = Transactor(chain, dev_signer(1))
    token = Stablecoin.deploy(owner, DEFAULT_STABLECOINS[0])
    ChannelManager.deploy(owner, 3600)
    domain = TokenDomain(
        token.asset.eip712_name, token.asset.eip712_version, chain.chain_id, token.address
    )
    rng = random.Random(7)
    payers = [Account.from_key(rng.randbytes(32)) for _ in range(6)]
    token.mint_many(owner, [(p.address, 10**9) for p in payers])
    hashes = []
    for i in range(40):
        payer = payers[i % len(payers)]
        auth = TransferAuthorization(
            payer.address, dev_account(3).address, 1_000 + i, 0, T0 + 3600, rng.randbytes(32)
        )
        signature = sign_transfer_authorization(LocalSigner(payer), domain, auth)
        if i % 9 == 4:  # a forged signature: reverts
            signature = signature[:10] + bytes([signature[10] ^ 1]) + signature[11:]
        data = token.transfer_with_authorization_data(
            auth.from_,
            auth.to,
            auth.value,
            auth.valid_after,
            auth.valid_before,
            auth.nonce,
            signature,
        )
        hashes.append(relayer.send(token.address, data, gas=150_000))
        if i % 13 == 0:
            hashes.append(owner.send(dev_account(4).address, b"", gas=21_000, value=i + 1))
        if i % 16 == 15:
            chain.mine()
    for code in ("600456605b00", "600456005b00", MEMORY["sha3"], MEMORY["mcopy"]):
        hashes.append(owner.send(None, _initcode(bytes.fromhex(code)), gas=100_000))
    for receipt in [chain.wait_for_receipt(h) for h in hashes]:
        if receipt.contract_address:
            hashes.append(relayer.send(receipt.contract_address, b"\x01", gas=40_000))
    for h in hashes:
        chain.wait_for_receipt(h)


def test_a_chain_mined_fast_replays_identically_on_stock_prague() -> None:
    mined: list[MinedBlock] = []
    fast = _chain(plain=False, on_block=mined.append)
    _workload(fast)
    statuses = [r.status for block in mined for r in block.receipts]
    assert statuses.count(False) >= 5  # forged signatures and invalid jumps were exercised

    plain = _chain(plain=True)
    for block in mined:
        replayed = plain.replay_block(block.timestamp, block.raw_transactions())
        assert replayed.hash == block.hash  # state root, receipts root, bloom, gas used
        assert replayed.receipts == block.receipts
        assert [r.encode() for r in replayed.evm_receipts] == [
            r.encode() for r in block.evm_receipts
        ]
    assert plain.head.hash == fast.head.hash
    receipts: list[Receipt] = [r for block in mined for r in block.receipts]
    assert sum(r.gas_used for r in receipts) == sum(int(b.block.header.gas_used) for b in mined)
