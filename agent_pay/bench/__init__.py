"""Benchmarks: how fast agent-pay serves free and paid reads, measured on this machine.

`run_bench(BenchConfig(...))` runs every phase and returns the figures; `agent-pay bench` (see
`agent_pay.bench.cli`) prints them and writes them as JSON. The load generator
(`agent_pay.bench.loadgen`) and the server process (`agent_pay.bench.server`) are usable alone.
"""
