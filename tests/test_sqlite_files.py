"""The client's SQLite files are shared by a user's processes: opening one new file from many
processes at once must not fail (switching a new file to WAL takes a lock SQLite's busy handler
does not wait for)."""

from __future__ import annotations

import multiprocessing
import sqlite3
from multiprocessing.synchronize import Event
from pathlib import Path

import pytest

from agent_pay.client.receipts import ReceiptStore
from agent_pay.client.spending_ledger import SpendingFile
from agent_pay.client.sqlite_files import connect_shared

OPENERS = 10
ROUNDS = 40  # before the fix, about one round in twenty lost an opener to "database is locked"


def _open(directory: str, index: int, start: Event) -> None:
    """What `agent-pay read` does first: open the receipts and its payer's spending tally."""
    start.wait()
    ReceiptStore.open(directory).close()
    SpendingFile.open(directory, f"0x{index:040x}").close()


@pytest.mark.slow
def test_many_processes_open_new_files_at_once(tmp_path: Path) -> None:
    context = multiprocessing.get_context("fork")
    for round_ in range(ROUNDS):
        directory = tmp_path / str(round_)
        directory.mkdir()
        start = context.Event()
        openers = [
            context.Process(target=_open, args=(str(directory), i, start)) for i in range(OPENERS)
        ]
        for process in openers:
            process.start()
        start.set()
        for process in openers:
            process.join(30)
        assert [p.exitcode for p in openers] == [0] * OPENERS, f"round {round_}"


def test_a_shared_connection_is_wal_and_full(tmp_path: Path) -> None:
    connection = connect_shared(tmp_path / "x.sqlite")
    assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert connection.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    connection.close()


def test_a_file_that_is_not_a_database_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "x.sqlite"
    path.write_bytes(b"not a database" * 100)
    with pytest.raises(sqlite3.DatabaseError):
        connect_shared(path)
