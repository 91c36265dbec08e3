"""`wrk` as the load generator, where it is installed: a load generator in C.

Our own load generator (`agent_pay.bench.loadgen`, Python on asyncio) costs 0.1-0.25 ms of CPU
per request. That is fine beside a server that spends milliseconds on a paid read, but not
beside a free preview or a voucher read (about 0.35 ms): on a 2-core machine the load generator
then takes a third of the CPU that two workers need, and it, not the servers, sets how far two
workers can go past one. `wrk` (Debian's `wrk` package; `apt-get install wrk`) costs a small
fraction of that per request. The same figures come out: rate, latency percentiles, and statuses
(counted by a Lua `response` hook per thread, summed at the end).

Two ways to load:

- `run_wrk(url, headers, ...)`: every request the same;
- `run_wrk_lanes(url, lanes, ...)`: one connection per lane (its own wrk thread), sending that
  lane's requests in order, one at a time: a channel's vouchers, in the order they were signed.
  A lane must hold more requests than its connection can send in the time given; one that runs
  out stops its thread and is counted (`exhausted`), so a run cut short shows as such.

    result = run_wrk(url, {"Header": "value"}, concurrency=32, seconds=6)
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from agent_pay.bench.loadgen import LatencySummary

__all__ = ["WrkResult", "run_wrk", "run_wrk_lanes", "wrk_available"]

_COUNT_STATUSES = r"""
local threads = {}
function setup(thread)
  thread:set("lane", #threads)
  table.insert(threads, thread)
end
statuses = {}
exhausted = 0
function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end
function done(summary, latency, requests)
  local counted, ran_out = {}, 0
  for _, thread in ipairs(threads) do
    for status, n in pairs(thread:get("statuses")) do
      counted[tostring(status)] = (counted[tostring(status)] or 0) + n
    end
    ran_out = ran_out + thread:get("exhausted")
  end
  local parts = {}
  for status, n in pairs(counted) do table.insert(parts, string.format('"%s": %d', status, n)) end
  local e = summary.errors
  io.write(string.format(
    '@@{"requests": %d, "duration_us": %d, "errors": %d, "exhausted": %d, "statuses": {%s}, '
    .. '"mean_us": %f, "p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d}\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, ran_out,
    table.concat(parts, ", "), latency.mean, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max))
end
"""

# Each thread reads its lane (one "Name: value" header per request, a line each) from the
# directory named in the script's arguments, and sends them in order. wrk calls thread 0's
# `request` once before any connection, to see whether requests are pipelined: that call is
# answered without taking a request from the lane. A lane that runs out stops its thread; the
# request wrk still sends then carries none of the lane's headers (a request no lane paid for,
# never a voucher sent twice).
_LANES = r"""
local requests, sent, probed = {}, 0, true
function init(args)
  probed = lane ~= 0
  local file = assert(io.open(args[1] .. "/" .. lane .. ".txt", "r"))
  for line in file:lines() do
    local name, value = line:match("^([^:]+): (.*)$")
    table.insert(requests, wrk.format(nil, nil, {[name] = value}))
  end
  file:close()
end
function request()
  if not probed then
    probed = true
    return requests[1]
  end
  sent = sent + 1
  if sent > #requests then
    exhausted = 1
    wrk.thread:stop()
    return wrk.format()
  end
  return requests[sent]
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
    exhausted: int = 0  # lanes that ran out of requests before the time was up

    @property
    def rate(self) -> float:
        return self.completed / self.seconds if self.seconds > 0 else 0.0


def wrk_available() -> bool:
    return shutil.which("wrk") is not None


def run_wrk(
    url: str, headers: dict[str, str], *, concurrency: int, seconds: float, threads: int = 1
) -> WrkResult:
    """Load `url` with `concurrency` keep-alive connections for `seconds`, every request with
    `headers`."""
    with tempfile.TemporaryDirectory(prefix="agent-pay-wrk-") as scratch:
        script = Path(scratch) / "statuses.lua"
        script.write_text(_COUNT_STATUSES, encoding="utf-8")
        options = [f"-t{threads}", f"-c{concurrency}", "-s", str(script)]
        for name, value in headers.items():
            options += ["-H", f"{name}: {value}"]
        return _run(options, url, seconds)


def run_wrk_lanes(url: str, lanes: Sequence[Sequence[dict[str, str]]], seconds: float) -> WrkResult:
    """Load `url` for `seconds` with one connection per lane, each sending its lane's requests
    (one header each) in order."""
    with tempfile.TemporaryDirectory(prefix="agent-pay-wrk-") as scratch:
        for i, lane in enumerate(lanes):
            lines = []
            for headers in lane:
                ((name, value),) = headers.items()  # one header a request
                if "\n" in value or "\n" in name:
                    raise ValueError(f"a header with a line break: {name}")
                lines.append(f"{name}: {value}\n")
            (Path(scratch) / f"{i}.txt").write_text("".join(lines), encoding="ascii")
        script = Path(scratch) / "lanes.lua"
        script.write_text(_COUNT_STATUSES + _LANES, encoding="utf-8")
        options = [f"-t{len(lanes)}", f"-c{len(lanes)}", "-s", str(script)]
        return _run(options, url, seconds, scratch)


def _run(options: list[str], url: str, seconds: float, *script_args: str) -> WrkResult:
    wrk = shutil.which("wrk")
    if wrk is None:
        raise FileNotFoundError("wrk is not installed (apt-get install wrk)")
    command = [wrk, *options, f"-d{max(1, round(seconds))}s", "--timeout", "10s", url]
    if script_args:
        command += ["--", *script_args]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as process:  # noqa: S603
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
        exhausted=int(figures["exhausted"]),
    )


def _wait(process: subprocess.Popen[str]) -> tuple[int, float]:
    """Wait for `process`; its exit status and the CPU seconds it used (user + system)."""
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    return process.returncode, usage.ru_utime + usage.ru_stime
