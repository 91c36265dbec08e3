"""The contract compiler: memo, disk cache, invalidation, corruption, and the ABI we promise."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from eth_utils.abi import function_signature_to_4byte_selector

from agent_pay.chain import compiler
from agent_pay.chain.compiler import CompiledContract, compile_contract, default_source_dir
from agent_pay.errors import ConfigurationError

# USDC (FiatTokenV2) EIP-3009 functions and their well-known selectors.
_AUTHORIZATION = "address,address,uint256,uint256,uint256,bytes32,uint8,bytes32,bytes32"
USDC_SELECTORS = {
    f"transferWithAuthorization({_AUTHORIZATION})": "e3ee160e",
    f"receiveWithAuthorization({_AUTHORIZATION})": "ef55bec6",
    "cancelAuthorization(address,bytes32,uint8,bytes32,bytes32)": "5a049a70",
    "authorizationState(address,bytes32)": "e94a0102",
}


@pytest.fixture(autouse=True)
def fresh_memo(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts as a new process would: nothing memoised."""
    monkeypatch.setattr(compiler, "_memo", {})


@pytest.fixture(scope="module")
def seed_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One real compile of the shipped contract, shared so that the suite compiles little."""
    cache_dir = tmp_path_factory.mktemp("seed-cache")
    compile_contract(cache_dir=cache_dir)
    compiler._memo.clear()
    return cache_dir


@pytest.fixture
def cache_dir(tmp_path: Path, seed_cache: Path) -> Path:
    """A cache dir already holding the shipped contract's compiled output."""
    target = tmp_path / "cache"
    shutil.copytree(seed_cache, target)
    return target


@pytest.fixture
def compile_calls(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Counts real compiler runs (the expensive step) while still running them."""
    calls: list[Any] = []
    real: Callable[[Any], tuple[list[dict[str, Any]], bytes, bytes]] = compiler._compile_sources

    def counting(data: Any) -> tuple[list[dict[str, Any]], bytes, bytes]:
        calls.append(data)
        return real(data)

    monkeypatch.setattr(compiler, "_compile_sources", counting)
    return calls


@pytest.fixture
def fake_compile_calls(monkeypatch: pytest.MonkeyPatch, seed_cache: Path) -> list[Any]:
    """Counts compiler runs, answering each with the seed's output instead of compiling again."""
    (seed_file,) = seed_cache.iterdir()
    seed = json.loads(seed_file.read_text())
    calls: list[Any] = []

    def fake(data: Any) -> tuple[list[dict[str, Any]], bytes, bytes]:
        calls.append(data)
        return (
            seed["abi"],
            bytes.fromhex(seed["bytecode"][2:]),
            bytes.fromhex(seed["runtime_bytecode"][2:]),
        )

    monkeypatch.setattr(compiler, "_compile_sources", fake)
    return calls


def _selectors(contract: CompiledContract) -> dict[str, str]:
    signatures = [
        f"{item['name']}({','.join(arg['type'] for arg in item['inputs'])})"
        for item in contract.abi
        if item["type"] == "function"
    ]
    return {sig: function_signature_to_4byte_selector(sig).hex() for sig in signatures}


def test_compiles_and_writes_one_cache_file(tmp_path: Path, fake_compile_calls: list[Any]) -> None:
    contract = compile_contract(cache_dir=tmp_path)

    assert len(fake_compile_calls) == 1
    assert contract.name == "Stablecoin"
    assert contract.bytecode
    assert contract.runtime_bytecode
    assert len(contract.source_hash) == 64
    files = list(tmp_path.iterdir())
    assert [f.name for f in files] == [f"Stablecoin-{contract.source_hash}.json"]


def test_disk_cache_hit_does_not_compile(cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def must_not_compile(data: Any) -> None:
        raise AssertionError("the compiler ran on a cache hit")

    monkeypatch.setattr(compiler, "_compile_sources", must_not_compile)
    before = {f.name: f.stat().st_mtime_ns for f in cache_dir.iterdir()}

    contract = compile_contract(cache_dir=cache_dir)

    assert contract.bytecode
    assert {f.name: f.stat().st_mtime_ns for f in cache_dir.iterdir()} == before


def test_memo_returns_the_same_object(cache_dir: Path) -> None:
    first = compile_contract(cache_dir=cache_dir)
    assert compile_contract(cache_dir=cache_dir) is first


def test_source_change_invalidates_memo_and_disk_cache(
    tmp_path: Path, cache_dir: Path, compile_calls: list[Any]
) -> None:
    source_dir = tmp_path / "contracts"
    shutil.copytree(default_source_dir(), source_dir)
    original = compile_contract(source_dir=source_dir, cache_dir=cache_dir)
    assert compile_calls == []  # same sources as the seed: a disk hit

    with (source_dir / "Stablecoin.vy").open("a", encoding="utf-8") as f:
        f.write("\n# an edit, even a comment, is a new source\n")
    changed = compile_contract(source_dir=source_dir, cache_dir=cache_dir)

    assert len(compile_calls) == 1
    assert changed.source_hash != original.source_hash
    assert (cache_dir / f"Stablecoin-{changed.source_hash}.json").is_file()
    assert (cache_dir / f"Stablecoin-{original.source_hash}.json").is_file()


def _truncate(text: str) -> str:
    return text[: len(text) // 2]


def _tamper_bytecode(text: str) -> str:
    body = json.loads(text)
    body["runtime_bytecode"] = body["runtime_bytecode"][:-2] + "00"
    return json.dumps(body)


def _wrong_shape(text: str) -> str:
    return json.dumps(["not", "a", "cache", "entry"])


def _not_hex(text: str) -> str:
    body = json.loads(text)
    body["bytecode"] = "0xzz"
    body.pop("checksum")
    body["checksum"] = compiler._sha256_json(body)  # a consistent file that is still wrong
    return json.dumps(body)


def _binary(text: str) -> str:
    return "\udcff\udcfe"  # written with surrogateescape: bytes that are not UTF-8


@pytest.mark.parametrize("corrupt", [_truncate, _tamper_bytecode, _wrong_shape, _not_hex, _binary])
def test_corrupt_cache_file_is_recompiled(
    cache_dir: Path, fake_compile_calls: list[Any], corrupt: Callable[[str], str]
) -> None:
    (cache_file,) = cache_dir.iterdir()
    good = json.loads(cache_file.read_text())
    cache_file.write_text(corrupt(cache_file.read_text()), errors="surrogateescape")

    contract = compile_contract(cache_dir=cache_dir)

    assert len(fake_compile_calls) == 1
    assert contract.runtime_bytecode.hex() == good["runtime_bytecode"][2:]
    assert json.loads(cache_file.read_text()) == good  # rewritten


def test_unwritable_cache_still_returns_the_contract(
    tmp_path: Path, fake_compile_calls: list[Any], caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")

    contract = compile_contract(cache_dir=blocker / "cache")

    assert contract.bytecode
    assert "cannot write contract cache" in caplog.text


def test_abi_has_usdc_eip3009_selectors(cache_dir: Path) -> None:
    selectors = _selectors(compile_contract(cache_dir=cache_dir))
    for signature, selector in USDC_SELECTORS.items():
        assert selectors.get(signature) == selector


def test_abi_is_erc20_permit_ownable_and_nothing_more(cache_dir: Path) -> None:
    contract = compile_contract(cache_dir=cache_dir)
    functions = {item["name"] for item in contract.abi if item["type"] == "function"}

    assert functions == {
        # ERC-20
        "name", "symbol", "decimals", "totalSupply", "balanceOf", "allowance",
        "transfer", "transferFrom", "approve",
        # EIP-2612, EIP-712, EIP-5267
        "permit", "nonces", "DOMAIN_SEPARATOR", "eip712Domain",
        # ownership and owner-only minting
        "owner", "transfer_ownership", "renounce_ownership", "mint",
        # EIP-3009
        "transferWithAuthorization", "receiveWithAuthorization", "cancelAuthorization",
        "authorizationState",
    }  # fmt: skip
    (constructor,) = [item for item in contract.abi if item["type"] == "constructor"]
    assert [arg["type"] for arg in constructor["inputs"]] == [
        "string", "string", "uint8", "string", "string",
    ]  # fmt: skip


@pytest.mark.parametrize("name", ["../Stablecoin", "Stablecoin.vy", "", "a/b"])
def test_rejects_names_that_are_not_identifiers(tmp_path: Path, name: str) -> None:
    with pytest.raises(ConfigurationError, match="plain identifier"):
        compile_contract(name, cache_dir=tmp_path)


def test_missing_contract_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="no contract source"):
        compile_contract("NoSuchContract", cache_dir=tmp_path)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("@external\ndef f() -> uint256:\n", "cannot read contract sources"),  # does not parse
        ("@external\ndef f() -> uint256:\n    return -1\n", "cannot compile contract"),
    ],
)
def test_bad_source_is_a_configuration_error(tmp_path: Path, body: str, message: str) -> None:
    (tmp_path / "Broken.vy").write_text("# pragma version ~=0.4.3\n" + body)
    with pytest.raises(ConfigurationError, match=message):
        compile_contract("Broken", source_dir=tmp_path, cache_dir=tmp_path / "cache")
