"""Fault injection: stop the server at a chosen step of the payment path, to prove recovery.

A `FaultPlan` names one `FaultPoint`; when a paid read reaches it, the plan's action runs —
by default `SIGKILL` to this very process, the crash nothing can intercept or clean up after.
Configured only at the edge (`create_server(..., faults=...)`, a hidden `serve` flag); the
default plan does nothing and costs one comparison per step.

The points, in the order a paid read passes them::

    verify      the facilitator accepted the payment; nothing recorded yet
    verified    the ledger row is written (verified); content not produced
    settling    the write-ahead row says settling; nothing submitted
    submitted   the settlement transaction is sent, not yet mined
    confirmed   the facilitator reported success; the ledger does not know yet
    settled     the ledger says settled; the response is not built
    responding  the paid response (content, receipt) is built, not sent
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

__all__ = ["FaultPlan", "FaultPoint", "kill_this_process"]


class FaultPoint(StrEnum):
    """A step of the payment path where a fault can be injected (see the module docstring)."""

    VERIFY = "verify"
    VERIFIED = "verified"
    SETTLING = "settling"
    SUBMITTED = "submitted"
    CONFIRMED = "confirmed"
    SETTLED = "settled"
    RESPONDING = "responding"


def kill_this_process() -> None:
    """SIGKILL to ourselves: no finally blocks, no atexit, no flushing. Exactly a crash."""
    os.kill(os.getpid(), signal.SIGKILL)


@dataclass
class FaultPlan:
    """Run `action` the `nth` time a paid read reaches `point` (never, if `point` is None)."""

    point: FaultPoint | None = None
    nth: int = 1
    action: Callable[[], None] = kill_this_process
    _seen: int = field(default=0, repr=False)

    def hit(self, point: FaultPoint) -> None:
        """Called by the payment path at each step."""
        if self.point is None or point != self.point:
            return
        self._seen += 1
        if self._seen == self.nth:
            self.action()
