"""Test helpers for agent-pay and for experiments built on it.

- `Testbed` (`bed`): chain, tokens, facilitator, server and funded agents in one process.
- `ContractBench` (`contracts`): a contract under test on the embedded chain, with fresh parties.
- `TINY_CONTRACT` and friends (`chain`): a tiny contract and raw transactions for chain backends.
- `FakeClock` (`clock`): time that moves only when a test moves it.
"""

from agent_pay.testing.bed import SyncASGITransport, TestAgent, Testbed, sample_articles_dir
from agent_pay.testing.chain import TINY_CONTRACT, CompiledContract, compile_tiny, signed_transfer
from agent_pay.testing.clock import FakeClock
from agent_pay.testing.contracts import ContractBench, Party, reverted

__all__ = [
    "TINY_CONTRACT",
    "CompiledContract",
    "ContractBench",
    "FakeClock",
    "Party",
    "SyncASGITransport",
    "TestAgent",
    "Testbed",
    "compile_tiny",
    "reverted",
    "sample_articles_dir",
    "signed_transfer",
]
