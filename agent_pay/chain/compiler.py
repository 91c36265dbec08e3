"""Compile the project's Vyper contracts on first use, cached by a hash of everything that matters.

`compile_contract("Stablecoin")` returns the ABI, deploy code, runtime code and storage layout of
``contracts/Stablecoin.vy``, compiled with the pip-installed vyper for ``prague``. Three layers,
cheapest first:

1. an in-process memo, checked by `stat` of every file the contract was built from, so repeated
   calls cost microseconds and an edited source is still noticed;
2. a JSON file ``<cache_dir>/<name>-<source_hash>.json``, written atomically and checked on read
   (shape, name, key and a checksum of its content); a file that fails any check is recompiled
   and overwritten, never trusted;
3. the vyper compiler itself (about a second for the stablecoin).

The cache key (`CompiledContract.source_hash`) is a SHA-256 over vyper's own integrity sum -- a
hash of the contract and of every module and interface it imports, transitively, snekmate's
included -- the exact vyper version and the compiler settings. Resolving imports to compute it
parses the sources but does not compile them.

The storage layout lets a reader skip the EVM: `CompiledContract.storage_slot` finds where a
variable lives, `hashmap_slot` where one of its HashMap entries does, and `eth_getStorageAt`
reads the word there.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import re
import tempfile
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eth_utils import keccak

from agent_pay.errors import ConfigurationError

__all__ = [
    "EVM_VERSION",
    "CompiledContract",
    "compile_contract",
    "default_cache_dir",
    "default_source_dir",
    "hashmap_slot",
]

_log = logging.getLogger(__name__)

EVM_VERSION = "prague"
"""The EVM version every contract is compiled for (py-evm and anvil both run it)."""

_OPTIMIZE = "gas"
_CACHE_FORMAT = 2  # 2: the artifact carries the layout
_NAME_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class CompiledContract:
    """A compiled contract: what a chain backend needs to deploy it and to call it.

    The ABI list is shared between callers of `compile_contract`; treat it as read-only.
    """

    name: str
    abi: list[dict[str, Any]] = field(hash=False)
    bytecode: bytes
    """Deploy (init) code; append the ABI-encoded constructor arguments to deploy."""
    runtime_bytecode: bytes
    """The code that lives at the contract's address once deployed."""
    source_hash: str
    """SHA-256 hex of the sources, compiler version and settings: the cache key."""
    layout: dict[str, Any] = field(default_factory=dict, hash=False)
    """vyper's ``layout`` output (``storage_layout``, ``code_layout``, ...); empty when not
    known. Read-only, like the ABI."""

    def storage_slot(self, name: str, type_: str) -> int | None:
        """The storage slot of the variable `name`, if the layout holds exactly one variable of
        that name and of vyper type `type_` (e.g. ``"HashMap[address, uint256]"``); else None.

        Variables of imported modules are nested under the module's name (snekmate's
        ``erc20.balanceOf``); `name` may be the bare name or end with the module path, dotted.
        """
        want = tuple(name.split("."))
        found = [
            entry
            for path, entry in _storage_variables(self.layout.get("storage_layout", {}), ())
            if path[-len(want) :] == want
        ]
        if len(found) != 1 or found[0].get("type") != type_:
            return None
        slot = found[0].get("slot")
        return slot if isinstance(slot, int) and not isinstance(slot, bool) else None


def hashmap_slot(base: int, *keys: bytes) -> int:
    """Where vyper (0.4) stores ``m[keys[0]][keys[1]]...`` of a HashMap `m` at slot `base`.

    Each key is its 32-byte ABI word (an address left-padded, a bytes32 as is); each level is
    ``keccak256(slot ++ key)`` -- slot first, the reverse of Solidity's order.
    """
    slot = base
    for key in keys:
        if len(key) != 32:
            raise ValueError(f"a HashMap key is one 32-byte word, got {len(key)} bytes")
        slot = int.from_bytes(keccak(slot.to_bytes(32, "big") + key), "big")
    return slot


def _storage_variables(
    tree: Any, path: tuple[str, ...]
) -> Iterable[tuple[tuple[str, ...], dict[str, Any]]]:
    """(path, entry) of every variable in a vyper storage layout; modules nest as dicts."""
    if not isinstance(tree, dict):
        return
    for key, value in tree.items():
        if not isinstance(value, dict):
            continue
        if "slot" in value and "type" in value:
            yield (*path, str(key)), value
        else:
            yield from _storage_variables(value, (*path, str(key)))


@dataclass(frozen=True)
class _MemoEntry:
    stamps: tuple[tuple[str, int, int], ...]
    contract: CompiledContract


_memo: dict[tuple[str, Path, Path], _MemoEntry] = {}
_lock = threading.Lock()


def default_source_dir() -> Path:
    """Where the contract sources live: inside the installed wheel, else the repository's."""
    packaged = Path(__file__).resolve().parents[1] / "_contracts"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[2] / "contracts"


def default_cache_dir() -> Path:
    """The per-user compile cache: ``~/.cache/agent-pay/contracts``."""
    return Path.home() / ".cache" / "agent-pay" / "contracts"


def compile_contract(
    name: str = "Stablecoin",
    *,
    source_dir: Path | None = None,
    cache_dir: Path | None = None,
) -> CompiledContract:
    """Return contract `name` compiled, from the memo, the disk cache or the compiler.

    Args:
        name: the contract's file name without ``.vy`` (``"Stablecoin"``).
        source_dir: the directory holding ``<name>.vy``; defaults to `default_source_dir()`.
            Imports of snekmate modules resolve against the installed snekmate package.
        cache_dir: where compiled outputs are kept; defaults to `default_cache_dir()`. It is
            created if missing; if it cannot be written, the result is still returned.

    Raises:
        ConfigurationError: `name` is not a plain identifier, the source is missing, snekmate is
            not installed, or the source does not compile (the vyper error is chained).
    """
    if not _NAME_PATTERN.fullmatch(name):
        raise ConfigurationError(f"contract name must be a plain identifier, got {name!r}")
    source_dir = (source_dir or default_source_dir()).resolve()
    cache_dir = (cache_dir or default_cache_dir()).resolve()
    memo_key = (name, source_dir, cache_dir)

    with _lock:
        entry = _memo.get(memo_key)
        if entry is not None and _stamp(path for path, _, _ in entry.stamps) == entry.stamps:
            return entry.contract

        source_path = source_dir / f"{name}.vy"
        if not source_path.is_file():
            raise ConfigurationError(f"no contract source {source_path}")
        data = _compiler_data(source_path, search_paths=[_snekmate_root().parent, source_dir])
        source_hash, files = _source_hash(data)
        stamps = _stamp(files)  # before compiling, so an edit made meanwhile is seen next call
        cache_path = cache_dir / f"{name}-{source_hash}.json"

        contract = _read_cache(cache_path, name=name, source_hash=source_hash)
        if contract is None:
            abi, bytecode, runtime = _compile_sources(data)
            layout = _layout(data)
            contract = CompiledContract(name, abi, bytecode, runtime, source_hash, layout)
            _write_cache(cache_path, contract)
        _memo[memo_key] = _MemoEntry(stamps, contract)
        return contract


# -- sources and the cache key -------------------------------------------------------------------


def _snekmate_root() -> Path:
    spec = importlib.util.find_spec("snekmate")
    locations = list(spec.submodule_search_locations or []) if spec else []
    if not locations:
        raise ConfigurationError("the snekmate package is not installed (pip install snekmate)")
    return Path(locations[0]).resolve()


def _compiler_data(source_path: Path, *, search_paths: Sequence[Path]) -> Any:
    """Vyper's compiler state for `source_path`; nothing is parsed or compiled yet."""
    from vyper.compiler.input_bundle import FilesystemInputBundle
    from vyper.compiler.phases import CompilerData
    from vyper.compiler.settings import OptimizationLevel, Settings

    # vyper gives the last search path the highest precedence.
    bundle = FilesystemInputBundle(list(search_paths))
    settings = Settings(evm_version=EVM_VERSION, optimize=OptimizationLevel.from_string(_OPTIMIZE))
    return CompilerData(bundle.load_file(source_path), bundle, settings=settings)


def _source_hash(data: Any) -> tuple[str, list[Path]]:
    """The cache key for `data`, and every file that went into it (the contract first)."""
    import vyper

    try:
        integrity_sum = data.integrity_sum  # parses the sources and resolves the imports
    except Exception as exc:  # vyper raises its own exception tree, rooted at Exception
        raise ConfigurationError(f"cannot read contract sources: {exc}") from exc
    files = [Path(data.file_input.resolved_path)]
    files += [Path(item.resolved_path) for item in data.resolved_imports.compiler_inputs]
    key = {
        "format": _CACHE_FORMAT,
        "integrity_sum": integrity_sum,
        "vyper": vyper.__long_version__,
        "evm_version": EVM_VERSION,
        "optimize": _OPTIMIZE,
    }
    return _sha256_json(key), list(dict.fromkeys(files))


def _stamp(paths: Iterable[str | Path]) -> tuple[tuple[str, int, int], ...]:
    """(path, mtime in ns, size) of each file; a vanished file gets (-1, -1)."""
    stamps = []
    for path in paths:
        try:
            info = os.stat(path)
        except OSError:
            stamps.append((str(path), -1, -1))
        else:
            stamps.append((str(path), info.st_mtime_ns, info.st_size))
    return tuple(stamps)


def _compile_sources(data: Any) -> tuple[list[dict[str, Any]], bytes, bytes]:
    """Run the vyper compiler: the ABI, deploy code and runtime code."""
    from vyper.compiler import outputs_from_compiler_data

    try:
        out = outputs_from_compiler_data(data, ["abi", "bytecode", "bytecode_runtime"])
    except Exception as exc:  # vyper raises its own exception tree, rooted at Exception
        raise ConfigurationError(f"cannot compile contract: {exc}") from exc
    abi: list[dict[str, Any]] = out["abi"]
    return abi, bytes.fromhex(out["bytecode"][2:]), bytes.fromhex(out["bytecode_runtime"][2:])


def _layout(data: Any) -> dict[str, Any]:
    """vyper's ``layout`` output: where each storage variable and immutable lives."""
    from vyper.compiler import outputs_from_compiler_data

    try:
        out = outputs_from_compiler_data(data, ["layout"])
    except Exception as exc:  # vyper raises its own exception tree, rooted at Exception
        raise ConfigurationError(f"cannot compile contract: {exc}") from exc
    layout: dict[str, Any] = out["layout"]
    return layout


# -- the disk cache ------------------------------------------------------------------------------


def _sha256_json(value: object) -> str:
    canonical = json.dumps(value, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _cache_body(contract: CompiledContract) -> dict[str, Any]:
    return {
        "format": _CACHE_FORMAT,
        "name": contract.name,
        "source_hash": contract.source_hash,
        "abi": contract.abi,
        "bytecode": "0x" + contract.bytecode.hex(),
        "runtime_bytecode": "0x" + contract.runtime_bytecode.hex(),
        "layout": contract.layout,
    }


def _read_cache(path: Path, *, name: str, source_hash: str) -> CompiledContract | None:
    """The cached contract at `path`, or None if it is missing or fails any check."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        _log.warning("cannot read contract cache %s (%s); recompiling", path, exc)
        return None
    try:
        body = json.loads(raw.decode("utf-8"))
        checksum = body.pop("checksum")
        abi = body["abi"]
        layout = body["layout"]
        if not (
            body.get("format") == _CACHE_FORMAT
            and body.get("name") == name
            and body.get("source_hash") == source_hash
            and checksum == _sha256_json(body)
            and isinstance(abi, list)
            and all(isinstance(item, dict) for item in abi)
            and isinstance(layout, dict)
            and body["bytecode"].startswith("0x")
            and body["runtime_bytecode"].startswith("0x")
        ):
            raise ValueError("contents do not match")
        contract = CompiledContract(
            name=name,
            abi=abi,
            bytecode=bytes.fromhex(body["bytecode"][2:]),
            runtime_bytecode=bytes.fromhex(body["runtime_bytecode"][2:]),
            source_hash=source_hash,
            layout=layout,
        )
        if not contract.bytecode or not contract.runtime_bytecode:
            raise ValueError("empty bytecode")
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        _log.warning("ignoring corrupt contract cache %s (%s); recompiling", path, exc)
        return None
    return contract


def _write_cache(path: Path, contract: CompiledContract) -> None:
    """Write the cache file atomically (temp file + rename); failures are logged, not raised."""
    body = _cache_body(contract)
    body["checksum"] = _sha256_json(body)
    tmp_name: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(
            "w",
            encoding="utf-8",
            dir=path.parent,
            prefix=f".{path.stem}-",
            suffix=".tmp",
            delete=False,
        ) as tmp:
            tmp_name = tmp.name
            json.dump(body, tmp, indent=1, sort_keys=True)
            tmp.flush()
            os.fsync(tmp.fileno())
        os.replace(tmp_name, path)
        tmp_name = None
    except OSError as exc:
        _log.warning("cannot write contract cache %s (%s)", path, exc)
    finally:
        if tmp_name is not None:
            Path(tmp_name).unlink(missing_ok=True)
