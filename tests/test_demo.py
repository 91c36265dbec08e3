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
    for step in ("preview: 402", "decision: buy", "offer: exact", "settled: block", "read: 200"):
        assert step in story
    # Full transaction hashes, for the user to copy.
    assert re.search(r"^\s+tx 0x[0-9a-f]{64}$", story, re.MULTILINE)
    # An agent that cannot fund a payment does not sign it, and says why.
    assert counts["refused"] == 0
    assert "cannot fund it: costs 0.25 USDX but holds 0.2 USDX" in story
    # Each purchase shows its gas and the server's own step timings.
    assert re.search(r"gas [\d,]+ \(verify [\d.]+ ms, render [\d.]+ ms, settle [\d.]+ ms\)", story)
    # What the agents lost, the authors gained: total supply is stated and unchanged by reads.
    assert "total supply USDX" in story
    assert f"{counts['bought']} articles bought" in story
    # No private key is ever printed (demo keys are random; dev keys are public but still kept out).
    assert not re.search(r"0x[0-9a-fA-F]{64}\b", re.sub(r"tx 0x[0-9a-f]{64}", "", story))


def test_the_verbose_demo_shows_the_x402_headers_decoded() -> None:
    out = io.StringIO()
    run_demo(out, max_reads=1, verbose=True)
    story = out.getvalue()
    for header in ("PAYMENT-REQUIRED", "PAYMENT-SIGNATURE", "PAYMENT-RESPONSE"):
        assert f"{header} (base64 JSON on the wire, decoded):" in story
    assert '"x402Version": 2' in story
    assert '"transferWithAuthorization"' not in story  # the payload, not a call
    assert "ac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80" not in story


def test_example_agent_runs(capsys: pytest.CaptureFixture[str]) -> None:
    runpy.run_path(str(EXAMPLE), run_name="__main__")
    out = capsys.readouterr().out
    assert "paid in tx 0x" in out
    assert re.search(r"spent 0\.[1-5] USDX", out)
