"""A market of agents reading authors' articles, run through the real protocol in one process.

    run = simulate(MarketSpec(agents=1_000, articles=1_000, days=10, seed=1))
    report = summarize(run)          # revenue, spend, transactions, gas, cost, latency

`agent-pay simulate` (see `agent_pay.simulate.cli`) runs it from the command line and renders
plots and a self-contained HTML report (`agent_pay.report`).
"""
