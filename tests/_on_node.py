"""Our node over JSON-RPC with our stack (facilitator + content server) on it, served over HTTP:
the ground the stock x402 SDK's tests stand on (tests/test_interop_x402.py, test_mcp_x402.py)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from agent_pay.chain.contract import Transactor
from agent_pay.chain.devkeys import dev_signer
from agent_pay.chain.rpc import JsonRpcChain
from agent_pay.node.deployment import find_stablecoins
from agent_pay.node.node import Node
from agent_pay.stack import FACILITATOR_INDEX, Stack


@dataclass
class OnNode:
    """Our node, and our stack (facilitator + content server) on it, served over HTTP."""

    node_url: str
    stack: Stack
    server_url: str

    def usdx(self, address: str) -> int:
        return self.stack.balance(address, "USDX")


@contextmanager
def stack_on_node() -> Iterator[OnNode]:
    """A fresh in-memory node, served on a free loopback port, with our stack served too."""
    with Node.open(None) as node, node.serve(port=0) as node_url, JsonRpcChain(node_url) as chain:
        stack = Stack.connect(
            chain, find_stablecoins(chain), Transactor(chain, dev_signer(FACILITATOR_INDEX))
        )
        with stack.serve() as server_url:
            yield OnNode(node_url, stack, server_url)
