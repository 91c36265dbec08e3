"""Child processes that leave Ctrl-C to their parent.

A Ctrl-C in a terminal reaches the whole foreground process group: the benchmark's server and
load generator as well as the `agent-pay` process. Each child would print its own traceback;
instead, children start with SIGINT ignored (inherited across exec, and Python then installs no
KeyboardInterrupt handler of its own), and the parent, interrupted, stops them.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["sigint_ignored"]


@contextmanager
def sigint_ignored() -> Iterator[None]:
    """Ignore SIGINT while starting a child process (main thread only; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
