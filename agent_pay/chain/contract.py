"""Calling contracts through the `Chain` interface: ABI encoding, transactions, events.

A deliberately small stand-in for web3's contract objects that works on any `Chain` backend and
skips per-transaction gas estimation when the caller knows the gas (settlement always does).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from eth_abi import decode as abi_decode
from eth_abi import encode as abi_encode
from eth_utils import (
    function_signature_to_4byte_selector,
    keccak,
    to_canonical_address,
    to_checksum_address,
)

from agent_pay.chain.base import (
    Chain,
    ContractRevertError,
    Log,
    Receipt,
    TransactionRejectedError,
)
from agent_pay.chain.txsign import sign_dynamic_fee_transaction
from agent_pay.signing.signer import HashSigner

__all__ = ["NONCE_RETRIES", "Contract", "Transactor", "deploy_contract", "is_nonce_clash"]

_GAS_MARGIN = 1.25  # estimates are exact for the estimated state; leave room for state drift

NONCE_RETRIES = 5
"""How often `Transactor.send` signs again with a fresh nonce when the node refuses ours."""

_NONCE_CLASH = ("nonce", "replacement transaction", "already imported")


def is_nonce_clash(exc: TransactionRejectedError) -> bool:
    """Whether the node refused a transaction for its nonce: another sender from the same
    account took it (geth, anvil: "nonce too low", "replacement transaction underpriced";
    `agent-pay node`: "nonce N is not the next nonce M")."""
    message = str(exc).lower()
    return any(fragment in message for fragment in _NONCE_CLASH)


def _types(params: Sequence[dict[str, Any]]) -> list[str]:
    """ABI type strings, structs spelled as tuples: `(address,uint256)[]` for `tuple[]`."""
    return [_type(p) for p in params]


def _type(param: dict[str, Any]) -> str:
    kind = str(param["type"])
    if kind.startswith("tuple"):
        return "(" + ",".join(_types(param["components"])) + ")" + kind[len("tuple") :]
    return kind


@dataclass(frozen=True, slots=True)
class _Function:
    name: str
    inputs: list[str]
    outputs: list[str]
    selector: bytes


@dataclass(frozen=True, slots=True)
class _Event:
    name: str
    topic: bytes
    params: list[dict[str, Any]]


class Transactor:
    """Signs and submits transactions from `signer`'s account, keeping its nonces locally.

    The key stays in the signer (a `LocalSigner`, say): a transaction is built here and its
    digest signed there. Holding the nonce here (rather than asking the node each time) lets
    many threads submit from one gas-paying account at once without nonce collisions.
    """

    def __init__(self, chain: Chain, signer: HashSigner) -> None:
        self.chain = chain
        self.signer = signer
        self._address = signer.address
        self._lock = threading.Lock()
        self._nonce: int | None = None

    @property
    def address(self) -> str:
        return self._address

    def __repr__(self) -> str:
        return f"Transactor({self.address})"

    def send(
        self,
        to: str | None,
        data: bytes,
        *,
        gas: int | None = None,
        value: int = 0,
        before_broadcast: Callable[[bytes], None] | None = None,
    ) -> bytes:
        """Sign and submit; return the transaction hash without waiting for it to be mined.

        `before_broadcast` is told the hash of each signed transaction just before it is
        handed to the node (a caller that must know whether money may move records it there).
        A nonce clash — another process sending from this account, so the node refuses our
        nonce — is resolved here: the nonce is read from the node again and the transaction
        signed anew, up to `NONCE_RETRIES` times, each new hash told to `before_broadcast`.
        """
        if gas is None:
            gas = int(self.chain.estimate_gas(to, data, self.address, value) * _GAS_MARGIN)
        max_fee, priority_fee = self.chain.fee_params()
        for attempt in range(NONCE_RETRIES + 1):
            with self._lock:
                nonce = self._nonce
                if nonce is None:
                    nonce = self.chain.get_nonce(self.address)
                signed = sign_dynamic_fee_transaction(
                    self.signer,
                    chain_id=self.chain.chain_id,
                    nonce=nonce,
                    max_priority_fee_per_gas=priority_fee,
                    max_fee_per_gas=max_fee,
                    gas=gas,
                    to=to_canonical_address(to) if to else b"",
                    value=value,
                    data=data,
                )
                if before_broadcast is not None:
                    before_broadcast(bytes(signed.hash))
                try:
                    tx_hash = self.chain.send_raw_transaction(bytes(signed.raw_transaction))
                except TransactionRejectedError as exc:
                    self._nonce = None  # re-read from the node next time
                    if attempt < NONCE_RETRIES and is_nonce_clash(exc):
                        continue
                    raise
                except Exception:
                    self._nonce = None
                    raise
                self._nonce = nonce + 1
                return tx_hash
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    def transact(
        self,
        to: str | None,
        data: bytes,
        *,
        gas: int | None = None,
        value: int = 0,
        timeout: float = 30.0,
    ) -> Receipt:
        """Send and wait for the receipt. Does not raise on revert: check `receipt.status`."""
        tx_hash = self.send(to, data, gas=gas, value=value)
        try:
            return self.chain.wait_for_receipt(tx_hash, timeout)
        except TransactionRejectedError:
            with self._lock:
                self._nonce = None  # the node dropped it: our next nonce is the node's again
            raise


class Contract:
    """A deployed contract: encode calls from its ABI, call, transact, decode events."""

    def __init__(self, chain: Chain, address: str, abi: list[dict[str, Any]]) -> None:
        self.chain = chain
        self.address = to_checksum_address(address)
        self.abi = abi
        self._functions: dict[str, _Function] = {}
        self._events: dict[str, _Event] = {}
        self._events_by_topic: dict[bytes, _Event] = {}
        for entry in abi:
            if entry.get("type") == "function":
                inputs = _types(entry["inputs"])
                signature = f"{entry['name']}({','.join(inputs)})"
                # Vyper default arguments produce overloads; keep the longest form by name.
                known = self._functions.get(entry["name"])
                if known is None or len(inputs) > len(known.inputs):
                    self._functions[entry["name"]] = _Function(
                        entry["name"],
                        inputs,
                        _types(entry.get("outputs", [])),
                        function_signature_to_4byte_selector(signature),
                    )
            elif entry.get("type") == "event":
                signature = f"{entry['name']}({','.join(_types(entry['inputs']))})"
                event = _Event(entry["name"], keccak(text=signature), entry["inputs"])
                self._events[event.name] = event
                self._events_by_topic[event.topic] = event

    def __repr__(self) -> str:
        return f"Contract({self.address})"

    def encode(self, fn_name: str, *args: Any) -> bytes:
        """Calldata for `fn_name(*args)`."""
        fn = self._function(fn_name)
        if len(args) != len(fn.inputs):
            raise TypeError(f"{fn_name} takes {len(fn.inputs)} arguments, got {len(args)}")
        return fn.selector + abi_encode(fn.inputs, list(args))

    def call(self, fn_name: str, *args: Any, sender: str | None = None) -> Any:
        """Read-only call; one output is returned bare, several as a tuple."""
        fn = self._function(fn_name)
        output = self.chain.call(self.address, self.encode(fn_name, *args), sender)
        values = tuple(
            to_checksum_address(v) if t == "address" else v
            for t, v in zip(fn.outputs, abi_decode(fn.outputs, output), strict=True)
        )
        return values[0] if len(values) == 1 else values

    def transact(
        self,
        sender: Transactor,
        fn_name: str,
        *args: Any,
        gas: int | None = None,
        check: bool = True,
    ) -> Receipt:
        """Send a transaction calling `fn_name`; with `check`, raise ContractRevertError if it
        reverts."""
        receipt = sender.transact(self.address, self.encode(fn_name, *args), gas=gas)
        if check and not receipt.status:
            raise ContractRevertError(receipt.revert_reason)
        return receipt

    def events(self, receipt: Receipt, name: str) -> list[dict[str, Any]]:
        """Decode the logs named `name` that this contract emitted in `receipt`."""
        event = self._events[name]
        return [
            self.decode_log(log)
            for log in receipt.logs
            if log.address == self.address and log.topics and log.topics[0] == event.topic
        ]

    def decode_log(self, log: Log) -> dict[str, Any]:
        """Decode one of this contract's logs into {"event": name, <arg>: value, ...}."""
        event = self._events_by_topic[log.topics[0]]
        indexed = [p for p in event.params if p.get("indexed")]
        plain = [p for p in event.params if not p.get("indexed")]
        out: dict[str, Any] = {"event": event.name}
        for param, topic in zip(indexed, log.topics[1:], strict=True):
            (out[param["name"]],) = abi_decode([param["type"]], topic)
        for param, value in zip(plain, abi_decode(_types(plain), log.data), strict=True):
            out[param["name"]] = value
        for param in event.params:  # eth-abi decodes addresses lower-case
            if param["type"] == "address":
                out[param["name"]] = to_checksum_address(out[param["name"]])
        return out

    def _function(self, name: str) -> _Function:
        try:
            return self._functions[name]
        except KeyError:
            raise AttributeError(f"contract has no function {name!r}") from None


def deploy_contract(
    sender: Transactor,
    abi: list[dict[str, Any]],
    bytecode: bytes,
    *args: Any,
    gas: int | None = None,
) -> Contract:
    """Deploy `bytecode` with constructor `args`; return the contract. Raises on revert."""
    constructor = next((e for e in abi if e.get("type") == "constructor"), None)
    ctor_types = _types(constructor["inputs"]) if constructor else []
    receipt = sender.transact(None, bytecode + abi_encode(ctor_types, list(args)), gas=gas)
    if not receipt.status or receipt.contract_address is None:
        raise ContractRevertError(receipt.revert_reason or "deployment failed")
    return Contract(sender.chain, receipt.contract_address, abi)
