"""A content server for the fault-injection tests, run as its own process:

    python tests/fault_server.py --chain URL --data-dir DIR --port PORT [--kill-at STEP]

It is what `agent-pay serve` runs — `Stack.connect` on a JSON-RPC node, the ledger in a data
directory, a fixed receipt key — plus a `FaultPlan` that SIGKILLs this process when a paid read
reaches STEP. (Once `serve` grows the hidden `--fault-kill-at` flag, the tests can run that.)
"""

from __future__ import annotations

import argparse
import logging

import uvicorn

from agent_pay.chain.contract import Transactor
from agent_pay.chain.devkeys import dev_signer
from agent_pay.chain.rpc import JsonRpcChain
from agent_pay.node.deployment import find_stablecoins
from agent_pay.server.faults import FaultPlan, FaultPoint
from agent_pay.server.ledger import Ledger
from agent_pay.signing import LocalSigner
from agent_pay.stack import Stack


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--chain", required=True)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--receipt-key", required=True)
    parser.add_argument("--facilitator-index", type=int, default=1)
    parser.add_argument("--kill-at", choices=[str(p) for p in FaultPoint])
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    chain = JsonRpcChain(args.chain, timeout=3.0)
    tokens = find_stablecoins(chain)
    faults = FaultPlan(FaultPoint(args.kill_at)) if args.kill_at else None
    stack = Stack.connect(
        chain,
        tokens,
        Transactor(chain, dev_signer(args.facilitator_index)),
        ledger=Ledger.open(args.data_dir),
        receipt_signer=LocalSigner.from_key(args.receipt_key),
        faults=faults,
    )
    stack.scheme.receipt_timeout = 5.0  # a stopped node must not hold a read for 30 s
    uvicorn.run(stack.app, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
