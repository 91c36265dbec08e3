"""Money checks for the reliability tests: balances, supply, and the ledger against the chain."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from agent_pay.chain.base import Chain
from agent_pay.chain.stablecoin import Stablecoin
from agent_pay.server.ledger import Ledger, PaymentState

Books = dict[tuple[str, str], int]


def books(tokens: Mapping[str, Stablecoin], addresses: Iterable[str]) -> Books:
    """Every address's balance in every token, plus each token's total supply."""
    state = {(a, s): t.balance_of(a) for a in addresses for s, t in tokens.items()}
    state.update({("totalSupply", s): t.total_supply() for s, t in tokens.items()})
    return state


def delta(before: Books, after: Books) -> Books:
    """The entries that changed, as after - before."""
    return {k: after[k] - before[k] for k in before if after[k] != before[k]}


def assert_ledger_matches_chain(
    ledger: Ledger, chain: Chain, tokens: Mapping[str, Stablecoin]
) -> dict[PaymentState, int]:
    """Every entry is resolved and agrees with the chain: a paid entry's transaction is mined,
    succeeded and moved exactly its amount from payer to payee, and used its authorization;
    a failed entry's authorization is unused. Returns the count of entries per state."""
    by_address = {t.address: t for t in tokens.values()}
    counts = dict.fromkeys(PaymentState, 0)
    for entry in ledger.entries():
        counts[entry.state] += 1
        token = by_address[entry.asset]
        authorization = entry.payment.exact_evm().authorization
        used = token.authorization_state(entry.key.payer, bytes.fromhex(authorization.nonce[2:]))
        assert entry.state not in (PaymentState.VERIFIED, PaymentState.SETTLING), (
            f"{entry.key} left in flight: {entry.state}"
        )
        if entry.state is PaymentState.FAILED:
            assert not used, f"{entry.key} is failed in the ledger but used on chain"
            continue
        assert used, f"{entry.key} is paid in the ledger but unused on chain"
        assert entry.tx_hash is not None
        receipt = chain.get_receipt(bytes.fromhex(entry.tx_hash[2:]))
        assert receipt is not None, f"{entry.key}: {entry.tx_hash} is not mined"
        assert receipt.status, f"{entry.key}: {entry.tx_hash} reverted"
        moved = [(t["sender"], t["receiver"], t["value"]) for t in token.transfers(receipt)]
        assert (entry.key.payer, entry.pay_to, entry.amount) in moved
        signed = entry.receipt
        assert signed is not None, f"{entry.key} is paid without a receipt"
        assert signed.transaction == entry.tx_hash
    return counts
