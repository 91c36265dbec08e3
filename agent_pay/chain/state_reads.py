"""Reading the embedded chain's state without mining: a storage slot straight from the state
trie (two trie lookups under a state root, as `eth_getProof` walks them, about twice as fast as
py-evm's state object, which also builds a VM and looks the account up three times), and a
call or gas estimate as a spoofed transaction."""

from __future__ import annotations

from typing import Any

import rlp
from eth.constants import BLANK_ROOT_HASH
from eth.rlp.accounts import Account
from eth.vm.spoof import SpoofTransaction
from eth_utils import keccak, to_canonical_address
from trie.hexary import HexaryTrie

__all__ = ["StorageReader", "spoofed"]


class StorageReader:
    """Reads storage slots under one state root at a time, remembering the storage roots of the
    accounts it read under the latest (an account's storage root under one state root never
    changes; the token's is read several times per settlement)."""

    def __init__(self) -> None:
        self._roots: dict[bytes, bytes] = {}  # b"" -> the state root they belong to

    def read(self, db: Any, state_root: bytes, address: str, slot: int) -> int:
        """The value at `slot` of `address`'s storage under `state_root` in `db` (a trie
        database whose nodes under that root are never changed); 0 for no such account."""
        if not 0 <= slot < 2**256:
            raise ValueError(f"storage slot out of range: {slot}")
        known = self._roots
        if known.get(b"") != state_root:
            known = self._roots = {b"": state_root}
        key = keccak(to_canonical_address(address))
        storage_root = known.get(key)
        if storage_root is None:
            encoded = HexaryTrie(db, state_root).get(key)
            if not encoded:
                return 0  # no such account
            storage_root = known[key] = rlp.decode(encoded, sedes=Account).storage_root
        if storage_root == BLANK_ROOT_HASH:
            return 0
        value = HexaryTrie(db, storage_root).get(keccak(slot.to_bytes(32, "big")))
        return int(rlp.decode(value, sedes=rlp.sedes.big_endian_int)) if value else 0


def spoofed(
    vm: Any, to: str | None, data: bytes, sender: str | None, *, value: int, gas: int
) -> SpoofTransaction:
    """An unsigned transaction from `sender` (the zero address if None) to `to` (a contract
    creation if None), at its next nonce under `vm`'s state, as if signed: for calls and gas
    estimates."""
    from_ = to_canonical_address(sender) if sender else b"\x00" * 20
    unsigned = vm.create_unsigned_transaction(
        nonce=vm.state.get_nonce(from_),
        gas_price=0,
        gas=gas,
        to=to_canonical_address(to) if to else b"",
        value=value,
        data=data,
    )
    return SpoofTransaction(unsigned, from_=from_)
