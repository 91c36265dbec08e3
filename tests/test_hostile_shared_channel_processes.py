"""A real `agent-pay serve` keeping channels on a PostgreSQL store that goes away: a channel's
statement is a 503 `ledger_unavailable` meanwhile, and a stop while it is away is a clean
stop (exit 0, the ledger closed), its channels' leases left to expire."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import httpx
import pytest

from agent_pay.errors import Reason
from agent_pay.node.anvil import free_port, wait_for_rpc
from agent_pay.store.local_postgres import stopped
from tests.test_hostile_store import own_postgres
from tests.test_many_processes import Processes, processes
from tests.test_shared_store_channel_leases import _serve

__all__ = ["own_postgres", "processes"]  # the fixtures


@pytest.mark.slow
def test_a_server_stopped_while_its_store_is_away_stops_cleanly(
    processes: Processes, own_postgres: str, tmp_path: Path
) -> None:
    node_port = free_port()
    node_url = f"http://127.0.0.1:{node_port}"
    node = processes.start(["node", "--port", str(node_port)])
    wait_for_rpc(node_url, timeout=30, process=node)
    base = _serve(processes, node_url, own_postgres, tmp_path / "a", "0x" + os.urandom(32).hex())
    server = processes.children[-1]
    unknown = f"{base}/channels/0x{os.urandom(32).hex()}"
    assert httpx.get(unknown, timeout=30).status_code == 404
    with stopped(own_postgres):
        away = httpx.get(unknown, timeout=30)
        assert away.status_code == 503, away.text
        assert away.json()["error"] == Reason.LEDGER_UNAVAILABLE
        server.send_signal(signal.SIGTERM)
        out, err = server.communicate(timeout=60)
    assert server.returncode == 0, err.decode()[-3000:]
    assert b"agent-pay serve: stopped" in out, out.decode()[-3000:]
    assert b"Traceback" not in err, err.decode()[-3000:]
