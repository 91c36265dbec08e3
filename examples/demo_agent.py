"""A reading agent in about 60 lines, through agent-pay's public API.

Stands up the whole system on 127.0.0.1 (embedded EVM chain, two stablecoins, content server on
a free port), gives a fresh agent 1 USDX, and lets it read: free preview first, then it buys the
articles its rule likes, within its spending policy. Run it with:

    .venv/bin/python examples/demo_agent.py
"""

from agent_pay import (
    InterestRule,
    LocalSigner,
    PaymentAuth,
    PolicyViolationError,
    Reader,
    SpendingPolicy,
    Stack,
)


def main() -> None:
    stack = Stack.embedded()  # py-evm in this process, USDX + CNYX deployed, sample articles
    usdx = stack.tokens["USDX"].asset

    agent = LocalSigner.random()  # a throwaway key, made for this run
    stack.fund(agent.address, "USDX", "1")  # mint 1 USDX to it (local chains only)
    print(f"agent {agent.address} holds {usdx.format(stack.balance(agent.address))}")

    policy = SpendingPolicy.per_token([usdx], max_per_payment="0.2", budget="0.5")
    auth = PaymentAuth(agent, policy)
    likes = InterestRule.of(["economics", "agents", "http"], max_price="0.2", tokens=["USDX"])

    with stack.serve() as url, Reader(url, auth) as reader:
        for entry in reader.articles():
            preview = reader.preview(entry["slug"])  # 402: the free first third, nothing paid
            verdict = likes(entry, preview.content)
            print(f"\n{entry['title']}\n  {'BUY ' if verdict.buy else 'skip'} {verdict.why}")
            if not verdict.buy:
                continue
            try:
                page = reader.buy(entry["slug"])  # 402 → sign EIP-3009 → retry → 200
            except PolicyViolationError as refused:  # over budget: nothing was signed
                print(f"  refused by policy: {refused.message}")
                continue
            settlement = page.settlement
            assert settlement is not None
            print(f"  paid in tx {settlement.transaction[:18]}…, read {len(page.content)} chars")

    spent, left = auth.spending.spent(usdx), stack.balance(agent.address)
    print(f"\nspent {usdx.format(spent)}; agent now holds {usdx.format(left)}")


if __name__ == "__main__":
    main()
