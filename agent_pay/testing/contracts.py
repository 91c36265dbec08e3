"""A harness for contract tests on the embedded chain.

    bench = ContractBench.create()                 # the chain's clock stands still at T0
    alice = bench.party(eth=True, tokens=1_000)    # a fresh key with gas money and tokens
    receipt = bench.token.contract.transact(alice.tx, "transfer", bob, 5_000, gas=..., check=False)
    assert reverted(receipt, "erc20: transfer amount exceeds balance")
    bench.clock.now += 3600                        # the next block is an hour later

A test module subclasses `ContractBench` to add the contracts it deploys (a field with
`field(init=False)`, set after `create()`), and shares one bench per module: fresh random keys
per test keep tests apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Self

from eth_account import Account
from eth_account.signers.local import LocalAccount

from agent_pay.chain.base import Receipt
from agent_pay.chain.contract import Transactor
from agent_pay.chain.devkeys import dev_signer
from agent_pay.chain.embedded import EmbeddedChain
from agent_pay.chain.stablecoin import DEFAULT_STABLECOINS, Stablecoin
from agent_pay.signing import LocalSigner, TokenDomain
from agent_pay.testing.clock import FakeClock

__all__ = ["T0", "ContractBench", "Party", "reverted"]

T0 = 1_700_000_000  # where a bench's clock starts
MINT_GAS = 100_000


@dataclass
class Party:
    """A fresh key: it signs (authorizations, vouchers) and, given ETH, sends transactions."""

    account: LocalAccount
    signer: LocalSigner
    tx: Transactor

    @property
    def address(self) -> str:
        return self.signer.address


@dataclass
class ContractBench:
    """An embedded chain on a fake clock, the first stock stablecoin, and the dev accounts that
    deploy, relay and pay gas."""

    chain: EmbeddedChain
    clock: FakeClock
    token: Stablecoin
    token_domain: TokenDomain  # the token's EIP-712 domain, for its signed authorizations
    owner: Transactor  # dev key 0: deployed the token, and mints
    relayer: Transactor  # dev key 1: submits what others signed, as a facilitator does
    bank: Transactor  # dev key 2: pays gas money to fresh keys

    @classmethod
    def create(cls, start: float = T0) -> Self:
        """A fresh chain whose clock stands at `start` until a test moves it."""
        clock = FakeClock(start)
        chain = EmbeddedChain(clock=clock)
        owner = Transactor(chain, dev_signer(0))
        token = Stablecoin.deploy(owner, DEFAULT_STABLECOINS[0])
        asset = token.asset
        domain = TokenDomain(asset.eip712_name, asset.eip712_version, chain.chain_id, token.address)
        relayer, bank = Transactor(chain, dev_signer(1)), Transactor(chain, dev_signer(2))
        return cls(chain, clock, token, domain, owner, relayer, bank)

    def party(
        self, *, eth: bool = False, tokens: int = 0, token: Stablecoin | None = None
    ) -> Party:
        """A fresh random key, given 1 ETH for gas if `eth`, and `tokens` freshly minted (of
        the bench's token unless another is named)."""
        account: LocalAccount = Account.create()
        party = Party(account, LocalSigner(account), Transactor(self.chain, LocalSigner(account)))
        hashes = []
        if eth:
            hashes.append(self.bank.send(party.address, b"", gas=21_000, value=10**18))
        if tokens:
            coin = token or self.token
            data = coin.contract.encode("mint", party.address, tokens)
            hashes.append(self.owner.send(coin.address, data, gas=MINT_GAS))
        for receipt in (self.chain.wait_for_receipt(h) for h in hashes):
            assert receipt.status
        return party

    def now(self) -> int:
        """The timestamp the next block will carry."""
        return self.chain.next_timestamp()

    def balance(self, who: Party | str, token: Stablecoin | None = None) -> int:
        return (token or self.token).balance_of(who.address if isinstance(who, Party) else who)


def reverted(receipt: Receipt, reason: str) -> bool:
    """Assert that `receipt`'s transaction reverted with `reason`; True, to read as a check."""
    assert not receipt.status, "the transaction succeeded"
    assert receipt.revert_reason == reason, (
        f"reverted with {receipt.revert_reason!r}, not {reason!r}"
    )
    return True
