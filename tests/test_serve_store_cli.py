"""`agent-pay serve --store` and `--workers`: what is refused, at once and clearly."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent_pay.cli import main
from agent_pay.cli.servers import _schemes
from agent_pay.errors import ConfigurationError
from agent_pay.settings import load_settings


def test_several_workers_need_a_shared_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["serve", "--workers", "2", "--server-dir", str(tmp_path)])
    assert code == 1  # a configuration error, as a data directory in use is
    assert "--workers 2 needs a shared store: --store postgresql://" in capsys.readouterr().err


def test_serve_offers_in_process_channels_on_a_shared_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """No longer refused: it gets as far as the store (which this one is not)."""
    store, chain = "postgresql://agent@127.0.0.1:1/none", "http://127.0.0.1:1"
    args = ["--store", store, "--chain", chain, "--server-dir", str(tmp_path)]
    code = main(["serve", *args, "--schemes", "exact,channel"])
    assert code == 1
    err = capsys.readouterr().err
    assert "cannot open the store" in err
    assert "not in the shared store" not in err


def test_channels_are_offered_on_a_shared_store(tmp_path: Path) -> None:
    settings = load_settings({"schemes": "exact,channel", "home": str(tmp_path)})
    with pytest.raises(ConfigurationError, match="no channel contract"):
        _schemes(settings, None)
    settings = load_settings({"home": str(tmp_path)})
    assert _schemes(settings, None)[0] == ("exact",)  # as on SQLite: no contract, no channels


@pytest.mark.slow  # starts the workers as processes
def test_workers_that_all_fail_before_listening_stop_the_supervisor(tmp_path: Path) -> None:
    """A store no worker can reach: each says why and exits; the supervisor does not start
    them again and again, and exits 1 without announcing a URL."""
    store = "postgresql://agent@127.0.0.1:1/none"
    args = ["serve", "--workers", "2", "--store", store, "--server-dir", str(tmp_path)]
    started = time.monotonic()
    run = subprocess.run(  # noqa: S603 - our own command, no shell
        [sys.executable, "-m", "agent_pay.cli", *args, "--chain", "http://127.0.0.1:1"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "AGENT_PAY_HOME": str(tmp_path / "home")},
    )
    assert run.returncode == 1, run.stdout + run.stderr
    assert "every worker exited before listening" in run.stdout
    assert "content server on" not in run.stdout
    assert run.stderr.count("127.0.0.1:1") >= 2  # each worker named the store it could not reach
    assert time.monotonic() - started < 60
