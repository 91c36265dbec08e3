"""How fast the embedded chain settles: pre-signed transferWithAuthorization transactions, mined;
and what each step of verifying and settling one payment costs on it.

Measured on a fresh chain in the benchmark's own process (the server's chain is busy serving):
a batch of settlements submitted together and mined by one group commit, as concurrent
settlements are mined, and the same transactions mined one block each, as a lone settlement is.
Only mining is timed; signing and submitting the transactions are timed apart.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from agent_pay.chain.contract import Transactor
from agent_pay.chain.devkeys import dev_signer
from agent_pay.chain.embedded import EmbeddedChain
from agent_pay.chain.stablecoin import TRANSFER_WITH_AUTHORIZATION_GAS, Stablecoin
from agent_pay.signing import (
    LocalSigner,
    TokenDomain,
    TransferAuthorization,
    random_nonce,
    sign_transfer_authorization,
)
from agent_pay.stack import FACILITATOR_INDEX, Stack

__all__ = ["MiningResult", "measure_mining", "measure_step_costs"]

_PAYERS = 50
_PAYEE = "0x000000000000000000000000000000000000dEaD"


@dataclass(frozen=True, slots=True)
class MiningResult:
    batch_size: int
    batch_seconds: float
    single_count: int
    single_seconds: float
    submit_per_second: float  # facilitator-side: sign + submit a settlement transaction
    gas_per_settlement: float

    @property
    def batch_tx_per_second(self) -> float:
        return self.batch_size / self.batch_seconds if self.batch_seconds else 0.0

    @property
    def single_tx_per_second(self) -> float:
        return self.single_count / self.single_seconds if self.single_seconds else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "batch_size": self.batch_size,
            "batch_seconds": round(self.batch_seconds, 4),
            "batch_tx_per_second": round(self.batch_tx_per_second, 1),
            "one_per_block_count": self.single_count,
            "one_per_block_seconds": round(self.single_seconds, 4),
            "one_per_block_tx_per_second": round(self.single_tx_per_second, 1),
            "submit_per_second": round(self.submit_per_second, 1),
            "gas_per_settlement": round(self.gas_per_settlement, 1),
        }


def _settlements(stack: Stack, payers: list[LocalSigner], count: int) -> list[bytes]:
    """Calldata of `count` valid, distinct transferWithAuthorization calls."""
    token: Stablecoin = stack.tokens["USDX"]
    asset = token.asset
    domain = TokenDomain(asset.eip712_name, asset.eip712_version, asset.chain_id, asset.address)
    now = stack.chain.next_timestamp()
    calls = []
    for i in range(count):
        payer = payers[i % len(payers)]
        auth = TransferAuthorization(payer.address, _PAYEE, 1, 0, now + 3600, random_nonce())
        signature = sign_transfer_authorization(payer, domain, auth)
        calls.append(
            token.transfer_with_authorization_data(
                auth.from_, auth.to, auth.value, auth.valid_after, auth.valid_before,
                auth.nonce, signature,
            )
        )  # fmt: skip
    return calls


def measure_mining(
    batch: int, singles: int, *, progress: Callable[[str], None] | None = None
) -> MiningResult:
    """Mine `batch` settlements in one block, then `singles` settlements one block each."""
    chain = EmbeddedChain()
    fits = int(chain.evm.header.gas_limit) // TRANSFER_WITH_AUTHORIZATION_GAS
    if not 1 <= batch <= fits:
        raise ValueError(
            f"a block holds at most {fits} settlements (gas limit "
            f"{int(chain.evm.header.gas_limit):,} / {TRANSFER_WITH_AUTHORIZATION_GAS:,} each)"
        )
    stack = Stack.embedded(chain=chain)
    payers = [LocalSigner.random() for _ in range(min(_PAYERS, max(1, batch)))]
    stack.fund_many([p.address for p in payers], {"USDX": "1000"})
    stack.fund(_PAYEE, "USDX", "1")  # an existing holder: every settlement costs the same gas
    token = stack.tokens["USDX"]
    facilitator = Transactor(chain, dev_signer(FACILITATOR_INDEX))
    calls = _settlements(stack, payers, batch + singles)
    if progress:
        progress(f"signed {len(calls)} settlement transactions")

    def submit(data: bytes) -> bytes:
        return facilitator.send(token.address, data, gas=TRANSFER_WITH_AUTHORIZATION_GAS)

    started = time.perf_counter()
    hashes = [submit(data) for data in calls[:batch]]
    submit_seconds = time.perf_counter() - started
    started = time.perf_counter()
    mined = chain.mine()
    batch_seconds = time.perf_counter() - started
    if mined != batch:
        raise RuntimeError(f"mined {mined} of {batch} settlements in the batch")
    single_seconds = 0.0
    for data in calls[batch:]:
        hashes.append(submit(data))
        started = time.perf_counter()
        chain.mine()
        single_seconds += time.perf_counter() - started
    receipts = [chain.get_receipt(h) for h in hashes]
    failed = [r for r in receipts if r is None or not r.status]
    if failed:
        raise RuntimeError(f"{len(failed)} settlement(s) failed in the mining benchmark")
    gas = sum(r.gas_used for r in receipts if r is not None) / len(receipts)
    return MiningResult(
        batch_size=batch,
        batch_seconds=batch_seconds,
        single_count=singles,
        single_seconds=single_seconds,
        submit_per_second=batch / submit_seconds if submit_seconds else 0.0,
        gas_per_settlement=gas,
    )


def measure_step_costs(count: int = 200) -> dict[str, float]:
    """Milliseconds per call of the steps a paid exact read goes through, one at a time on a
    fresh chain: recover the signer, read the balance and the authorization state (storage
    reads where the token's layout is known, `eth_call` otherwise), sign and submit the
    settlement transaction. Mining is measured by `measure_mining`."""
    from agent_pay.signing import recover_transfer_authorizer

    stack = Stack.embedded()
    token = stack.tokens["USDX"]
    asset = token.asset
    payers = [LocalSigner.random() for _ in range(min(count, _PAYERS))]
    stack.fund_many([p.address for p in payers], {"USDX": "1000"})
    domain = TokenDomain(asset.eip712_name, asset.eip712_version, asset.chain_id, asset.address)
    now = stack.chain.next_timestamp()
    signed = []
    started = time.perf_counter()
    for i in range(count):
        payer = payers[i % len(payers)]
        auth = TransferAuthorization(payer.address, _PAYEE, 1, 0, now + 3600, random_nonce())
        signed.append((auth, sign_transfer_authorization(payer, domain, auth)))
    costs = {"client_sign_authorization": (time.perf_counter() - started) / count}

    def timed(name: str, step: Callable[[int], object]) -> None:
        started = time.perf_counter()
        for i in range(count):
            step(i)
        costs[name] = (time.perf_counter() - started) / count

    timed("recover_signer", lambda i: recover_transfer_authorizer(domain, *signed[i]))
    timed("read_balance", lambda i: token.balance_of(signed[i][0].from_))
    timed(
        "read_authorization_state",
        lambda i: token.authorization_state(signed[i][0].from_, signed[i][0].nonce),
    )
    facilitator = Transactor(stack.chain, dev_signer(FACILITATOR_INDEX))
    calls = [
        token.transfer_with_authorization_data(
            a.from_, a.to, a.value, a.valid_after, a.valid_before, a.nonce, sig
        )
        for a, sig in signed
    ]
    timed(
        "sign_and_submit_settlement",
        lambda i: facilitator.send(token.address, calls[i], gas=TRANSFER_WITH_AUTHORIZATION_GAS),
    )
    return {name: round(seconds * 1000, 4) for name, seconds in costs.items()}
