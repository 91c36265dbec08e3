"""The demo and the example agent run end to end over real HTTP on 127.0.0.1."""

import io
import re
import runpy
from pathlib import Path

import pytest

from agent_pay.demo import run_demo

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "demo_agent.py"


def test_demo_tells_the_story_and_balances_add_up() -> None:
    out = io.StringIO()
    counts = run_demo(out)
    story = out.getvalue()
    assert counts["bought"] >= 3
    assert counts["gas"] > 0
    for step in ("preview: 402", "decision: buy", "offer: exact", "settled: tx 0x", "read: 200"):
        assert step in story
    # Each purchase shows its gas and the server's own step timings.
    assert re.search(r"gas [\d,]+ \(verify [\d.]+ ms, render [\d.]+ ms, settle [\d.]+ ms\)", story)
    # What the agents lost, the authors gained: total supply is stated and unchanged by reads.
    assert "total supply USDX" in story
    assert f"{counts['bought']} articles bought" in story
    # No private key is ever printed (demo keys are random; dev keys are public but still kept out).
    assert not re.search(r"0x[0-9a-fA-F]{64}\b(?!…)", story.replace("settled: tx", ""))


def test_example_agent_runs(capsys: pytest.CaptureFixture[str]) -> None:
    runpy.run_path(str(EXAMPLE), run_name="__main__")
    out = capsys.readouterr().out
    assert "paid in tx 0x" in out
    assert re.search(r"spent 0\.[1-5] USDX", out)
