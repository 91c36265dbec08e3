"""Nodes: `agent-pay node` (the embedded py-evm chain served over Ethereum JSON-RPC, kept in a
data directory) and helpers to run anvil; where the stablecoins live on a node.

    node.py         Node: chain + background miner + data directory + JSON-RPC server
    methods.py      the eth_* methods, over the chain and its index
    jsonrpc.py      JSON-RPC 2.0 over HTTP (a Starlette app), parameter parsing, error objects
    index.py        mined blocks by number/hash, transactions by hash; their JSON shapes; logs
    datadir.py      genesis.json + blocks.jsonl: what a restart replays
    deployment.py   deploy / find the stablecoins (the dev-chain default addresses)
    anvil.py        find anvil, run it on a free port (the tests' real node)
"""

from agent_pay.node.datadir import DataDir, DataDirError
from agent_pay.node.node import Node, NodeStart

__all__ = ["DataDir", "DataDirError", "Node", "NodeStart"]
