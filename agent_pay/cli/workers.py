"""`agent-pay serve --workers N`: N server processes accepting on one listening socket.

The supervisor binds the port once and starts N copies of the same command, each told the
socket's descriptor (`--worker-fd`): the kernel hands each connection to one of them. Each
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

__all__ = ["supervise"]

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
    try:
        listener = socket.create_server((settings.host, settings.port), backlog=2048)
    except OSError as exc:
        raise ConfigurationError(
            f"cannot listen on {settings.host}:{settings.port}: {exc}"
        ) from None
    listener.set_inheritable(True)
    command = [sys.executable, "-m", "agent_pay.cli", *sys.argv[1:]]
    command += ["--worker-fd", str(listener.fileno())]
    stop = threading.Event()

    def handler(_signum: int, _frame: Any) -> None:
        stop.set()

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    port = listener.getsockname()[1]
    say(f"agent-pay content server on http://{settings.host}:{port}: {settings.workers} workers")
    workers: list[subprocess.Popen[bytes]] = []
    try:
        workers = [_start(command, listener) for _ in range(settings.workers)]
        while not stop.wait(0.5):
            for n, worker in enumerate(workers):
                if worker.poll() is not None and not stop.is_set():
                    say(f"worker      {worker.pid} exited ({worker.returncode}): starting another")
                    time.sleep(_RESTART_PAUSE)
                    workers[n] = _start(command, listener)
        say("stopping    (Ctrl-C or SIGTERM): the workers finish the requests in flight")
    finally:
        _stop(workers)
        listener.close()
        for sig, old in previous.items():
            signal.signal(sig, old)
    say("agent-pay serve: stopped")
    return 0


def _start(command: list[str], listener: socket.socket) -> subprocess.Popen[bytes]:
    # The worker's arguments are this process's own, plus the descriptor: no shell.
    return subprocess.Popen(command, pass_fds=(listener.fileno(),))  # noqa: S603


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
