"""The paying client loads no chain, no server: importing it pulls in neither py-evm (`eth`)
nor FastAPI, Starlette or uvicorn (nor vyper or web3). Each import runs in a fresh interpreter,
so what other tests loaded does not count."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow  # each test starts a fresh interpreter

HEAVY = ("eth", "fastapi", "starlette", "uvicorn", "vyper", "web3")

CLIENT_IMPORTS = [
    "import agent_pay",
    "import agent_pay.client",
    "from agent_pay import LocalSigner, PaymentAuth, Reader, SpendingPolicy",
    "import agent_pay.client.auth, agent_pay.client.reader, agent_pay.client.receipts",
    "import agent_pay.client.channels, agent_pay.client.channel_policy",
]


@pytest.mark.parametrize("statement", CLIENT_IMPORTS)
def test_the_client_loads_no_chain_and_no_server(statement: str) -> None:
    probe = (
        f"import sys; {statement}; "
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & {set(HEAVY)!r}))"
    )
    loaded = subprocess.run(  # noqa: S603
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )
    assert loaded.stdout.strip() == "[]"


def test_the_probe_sees_a_heavy_import() -> None:
    probe = "import sys, agent_pay.stack; print('eth' in sys.modules and 'fastapi' in sys.modules)"
    loaded = subprocess.run(  # noqa: S603
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )
    assert loaded.stdout.strip() == "True"
