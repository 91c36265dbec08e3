"""`wrk` as the load generator, where it is installed: a load generator in C.

Our own load generator (`agent_pay.bench.loadgen`, Python on asyncio) costs about 0.1 ms of CPU
per request. That is fine beside a server that spends milliseconds on a paid read, but not
beside a free preview (about 0.35 ms): on a 2-core machine the load generator then takes a
quarter of the CPU that two workers need, and it, not the servers, sets how far two workers can
go past one. `wrk` (Debian's `wrk` package; `apt-get install wrk`) costs a small fraction of
that per request. The same figures come out: rate, latency percentiles, statuses (counted by a
Lua `response` hook, per thread, summed at the end).

    result = run_wrk(url, {"Header": "value"}, concurrency=32, seconds=6)
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from agent_pay.bench.loadgen import LatencySummary

__all__ = ["WrkResult", "run_wrk", "wrk_available"]

_SCRIPT = r"""
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) statuses = {} end
function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end
function done(summary, latency, requests)
  local counted = {}
  for _, thread in ipairs(threads) do
    for status, n in pairs(thread:get("statuses")) do
      counted[tostring(status)] = (counted[tostring(status)] or 0) + n
    end
  end
  local parts = {}
  for status, n in pairs(counted) do table.insert(parts, string.format('"%s": %d', status, n)) end
  local e = summary.errors
  io.write(string.format(
    '@@{"requests": %d, "duration_us": %d, "errors": %d, "statuses": {%s}, '
    .. '"mean_us": %f, "p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d}\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout,
    table.concat(parts, ", "), latency.mean, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max))
end
"""


@dataclass(frozen=True, slots=True)
class WrkResult:
    """What one `wrk` run measured."""

    seconds: float
    completed: int
    statuses: dict[int, int]
    errors: int
    latency: LatencySummary
    cpu_seconds: float  # the wrk process's own CPU (user + system), from its rusage

    @property
    def rate(self) -> float:
        return self.completed / self.seconds if self.seconds > 0 else 0.0


def wrk_available() -> bool:
    return shutil.which("wrk") is not None


def run_wrk(
    url: str, headers: dict[str, str], *, concurrency: int, seconds: float, threads: int = 1
) -> WrkResult:
    """Load `url` with `concurrency` keep-alive connections for `seconds`."""
    wrk = shutil.which("wrk")
    if wrk is None:
        raise FileNotFoundError("wrk is not installed (apt-get install wrk)")
    with tempfile.TemporaryDirectory(prefix="agent-pay-wrk-") as scratch:
        script = Path(scratch) / "statuses.lua"
        script.write_text(_SCRIPT, encoding="utf-8")
        command = [wrk, f"-t{threads}", f"-c{concurrency}", f"-d{max(1, round(seconds))}s"]
        command += ["--timeout", "10s", "-s", str(script)]
        for name, value in headers.items():
            command += ["-H", f"{name}: {value}"]
        with subprocess.Popen([*command, url], stdout=subprocess.PIPE, text=True) as process:  # noqa: S603
            assert process.stdout is not None
            output = process.stdout.read()  # to its end: wrk has exited or is exiting
            status, usage = _wait(process)
    if status != 0:
        raise RuntimeError(f"wrk exited with {status}: {output[-500:]}")
    line = next((ln for ln in output.splitlines() if ln.startswith("@@")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no figures: {output[-500:]}")
    figures = json.loads(line[2:])
    completed = int(figures["requests"])
    latency = LatencySummary(
        completed,
        figures["mean_us"] / 1000,
        figures["p50_us"] / 1000,
        figures["p90_us"] / 1000,
        figures["p99_us"] / 1000,
        figures["max_us"] / 1000,
    )
    return WrkResult(
        seconds=figures["duration_us"] / 1e6,
        completed=completed,
        statuses={int(k): v for k, v in figures["statuses"].items()},
        errors=int(figures["errors"]),
        latency=latency,
        cpu_seconds=usage,
    )


def _wait(process: subprocess.Popen[str]) -> tuple[int, float]:
    """Wait for `process`; its exit status and the CPU seconds it used (user + system)."""
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    return process.returncode, usage.ru_utime + usage.ru_stime
