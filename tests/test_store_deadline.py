"""The shared store's client-side deadline (`agent_pay.store.postgres.deadline`) on a plain
socket pair: a read that waits past the deadline is woken by its socket shut down; one that
returns in time is left alone."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from agent_pay.store.postgres.deadline import Deadlines


def test_a_wait_past_the_deadline_is_cut() -> None:
    deadlines = Deadlines(0.2)
    ours, theirs = socket.socketpair()
    try:
        started = time.monotonic()
        with deadlines.watch(ours.fileno()) as cut:
            assert ours.recv(1) == b""  # the peer never writes: woken by the shutdown
        assert cut.happened
        assert 0.15 < time.monotonic() - started < 2
        assert ours.fileno() != -1  # shut down, not closed: the descriptor is still its owner's
    finally:
        deadlines.close()
        ours.close()
        theirs.close()


def test_a_statement_in_time_is_not_cut() -> None:
    deadlines = Deadlines(0.3)
    ours, theirs = socket.socketpair()
    try:
        for _ in range(3):
            with deadlines.watch(ours.fileno()) as cut:
                theirs.sendall(b"x")
                assert ours.recv(1) == b"x"
            assert not cut.happened
        time.sleep(0.5)  # past the deadline, but no longer watched
        theirs.sendall(b"y")
        assert ours.recv(1) == b"y"
    finally:
        deadlines.close()
        ours.close()
        theirs.close()


def test_only_the_late_one_of_two_is_cut() -> None:
    deadlines = Deadlines(0.2)
    late, late_peer = socket.socketpair()
    quick, quick_peer = socket.socketpair()
    woke: list[bytes] = []

    def wait_late() -> None:
        with deadlines.watch(late.fileno()):
            woke.append(late.recv(1))

    try:
        thread = threading.Thread(target=wait_late)
        thread.start()
        for _ in range(10):
            with deadlines.watch(quick.fileno()) as cut:
                quick_peer.sendall(b"q")
                assert quick.recv(1) == b"q"
            assert not cut.happened
            time.sleep(0.05)
        thread.join(timeout=2)
        assert woke == [b""]
        quick_peer.sendall(b"still open")
        assert quick.recv(10) == b"still open"
    finally:
        deadlines.close()
        for sock in (late, late_peer, quick, quick_peer):
            sock.close()


def test_a_deadline_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        Deadlines(0)
