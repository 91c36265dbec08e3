"""`agent-pay demo --mcp`: the scripted model, `agent-pay mcp` over stdio, the whole story."""

from __future__ import annotations

import io

import pytest

pytest.importorskip("mcp")

from agent_pay.mcp.demo import ScriptedModel, run_mcp_demo


def test_the_rule_is_visible_and_deterministic() -> None:
    model = ScriptedModel()
    article = {"title": "Why Micropayments Failed", "summary": ""}
    assert model.decide(article, [{"price": "0.1 USDX"}]) == (
        True,
        "about micropayments, and 0.1 USDX is within my cap",
    )
    assert model.decide(article, [{"price": "0.7 CNYX"}])[0] is False
    assert model.decide({"title": "Gardening"}, [{"price": "0.1 USDX"}])[0] is False


@pytest.mark.slow
def test_the_demo_tells_the_conversation() -> None:
    out = io.StringIO()
    counts = run_mcp_demo(out)
    text = out.getvalue()
    # Two bought within the budget of 0.25; one over the cap and one over the budget refused;
    # the model's two concurrent retries of a purchase cost nothing.
    assert counts == {"bought": 2, "skipped": 4, "refused": 2, "rereads": 2}  # 8 articles
    assert "→ buy_article(" in text
    assert "exceeds the per-payment cap of 0.2 USDX" in text
    assert "exceeds the remaining budget of 0.05 USDX" in text
    assert "cost 0: re-read free by key proof" in text
    assert "spent 0.2 USDX of 0.25 USDX" in text
    assert "the model's wallet       1 USDX → 0.8 USDX" in text
