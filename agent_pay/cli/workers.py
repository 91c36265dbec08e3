"""`agent-pay serve --workers N`: N server processes on one port.

The supervisor reserves the port (bound with `SO_REUSEPORT`, never listening) and starts N
copies of the same command as workers (`--as-worker`), each listening on that port with
`SO_REUSEPORT` too: the kernel spreads the connections evenly across them (one socket shared
by all would leave most connections to whichever worker happens to accept first). Each
worker opens the shared store itself (`--store postgresql://...`: one SQLite file takes one
process), and every worker signs receipts with the one receipt key (made here, before they
start, when `server_dir` has none yet). A worker that exits while the server runs is started
again; Ctrl-C or SIGTERM stops them all, each finishing its requests in flight.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Any, Final

from agent_pay.cli._common import say
from agent_pay.errors import ConfigurationError
from agent_pay.settings import Settings
from agent_pay.store.open import is_postgres
from agent_pay.wallet import server_receipt_key

__all__ = ["listen_shared", "supervise"]

_STOP_TIMEOUT: Final = 30.0  # seconds a worker has to finish its requests, then it is killed
_RESTART_PAUSE: Final = 1.0  # seconds before a worker that exited is started again


def supervise(settings: Settings) -> int:
    """Run `settings.workers` workers of this very command until Ctrl-C or SIGTERM.

    Raises:
        ConfigurationError: the store is not shared (SQLite), or the port is taken.
    """
    if not is_postgres(settings.store):
        raise ConfigurationError(
            f"--workers {settings.workers} needs a shared store: --store postgresql://... "
            "(AGENT_PAY_STORE); a SQLite ledger takes one server process per data directory"
        )
    server_receipt_key(settings)  # every worker reads the one made now, if none was set
    reserved = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        reserved.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        reserved.bind((settings.host, settings.port))
    except OSError as exc:
        reserved.close()
        raise ConfigurationError(
            f"cannot listen on {settings.host}:{settings.port}: {exc}"
        ) from None
    port = reserved.getsockname()[1]
    command = [sys.executable, "-m", "agent_pay.cli", *sys.argv[1:], "--port", str(port)]
    command.append("--as-worker")
    stop = threading.Event()

    def handler(_signum: int, _frame: Any) -> None:
        stop.set()

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    workers: list[subprocess.Popen[bytes]] = []
    try:
        workers = [_start(command) for _ in range(settings.workers)]
        # Announced once it takes requests; workers that all exit first never would (a wrong
        # setting: each printed why), so they are not started again and again.
        if not _answering(settings.host, port, workers, stop):
            if stop.is_set():
                return 0
            say("agent-pay serve: every worker exited before listening (see above)")
            return 1
        url = f"http://{settings.host}:{port}"
        say(f"agent-pay content server on {url}: {settings.workers} workers")
        while not stop.wait(0.5):
            for n, worker in enumerate(workers):
                if worker.poll() is not None and not stop.is_set():
                    say(f"worker      {worker.pid} exited ({worker.returncode}): starting another")
                    time.sleep(_RESTART_PAUSE)
                    workers[n] = _start(command)
        say("stopping    (Ctrl-C or SIGTERM): the workers finish the requests in flight")
    finally:
        _stop(workers)
        reserved.close()
        for sig, old in previous.items():
            signal.signal(sig, old)
    say("agent-pay serve: stopped")
    return 0


def _answering(
    host: str, port: int, workers: list[subprocess.Popen[bytes]], stop: threading.Event
) -> bool:
    """Wait until a worker accepts connections on the port; False if every worker exited or
    we were told to stop first (a worker builds its app before it opens its socket)."""
    while not stop.is_set():
        try:
            with socket.create_connection((host, port), timeout=1):
                return True
        except OSError:
            if all(w.poll() is not None for w in workers):
                return False
            stop.wait(0.1)
    return False


def listen_shared(host: str, port: int) -> socket.socket:
    """A worker's listening socket on the supervisor's port (`SO_REUSEPORT`)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(2048)
    return sock


def _start(command: list[str]) -> subprocess.Popen[bytes]:
    # The worker's arguments are this process's own, plus the port and `--as-worker`: no shell.
    return subprocess.Popen(command)  # noqa: S603


def _stop(workers: list[subprocess.Popen[bytes]]) -> None:
    for worker in workers:
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + _STOP_TIMEOUT
    for worker in workers:
        try:
            worker.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
