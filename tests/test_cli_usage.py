"""The `agent-pay` command run as a subprocess, the way a user types it: every mistake gets one
line on stderr and the right exit code (2 for a usage error, 1 for a failure), never a
traceback; Ctrl-C gets one line and 130. No node is needed: the chain URL points nowhere."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent_pay.node.anvil import free_port

pytestmark = pytest.mark.slow  # every test here starts the command as a process

SCRIPT = Path(sys.executable).with_name("agent-pay")
COMMAND = [str(SCRIPT)] if SCRIPT.is_file() else [sys.executable, "-m", "agent_pay.cli"]
ADDRESS = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
URL = "http://127.0.0.1:9/articles/why-micropayments-failed"
PAY = ["--max-price", "0.2", "--budget", "1"]


@pytest.fixture
def environ(tmp_path: Path) -> dict[str, str]:
    """No AGENT_PAY_* from outside; a fresh home; a chain URL where nothing answers."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("AGENT_PAY_")}
    return {
        **clean,
        "AGENT_PAY_HOME": str(tmp_path / "home"),
        "AGENT_PAY_CHAIN_URL": f"http://127.0.0.1:{free_port()}",
    }


def agent_pay(
    args: list[str], environ: dict[str, str], cwd: Path, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - our own command
        [*COMMAND, *args],
        env=environ,
        cwd=cwd,
        input=stdin,
        stdin=None if stdin is not None else subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


MISTAKES = [
    # (argv, exit code, what the one line says)
    (["nope"], 2, "invalid choice: 'nope'"),
    (["read"], 2, "the following arguments are required: URL"),
    (["wallet"], 2, "the following arguments are required: ACTION"),
    (["receipts", "--payer", "0xdead"], 2, "--payer: not an address"),
    (["read", URL, "--timeout", "-1", *PAY], 2, "--timeout: must be more than 0"),
    (["read", URL, "--timeout", "soon", *PAY], 2, "--timeout: expected a number"),
    (["read", URL], 2, "say what you will pay: --max-price"),
    (["read", URL, "--max-price", "lots", "--budget", "1"], 2, "--max-price: expected an amount"),
    (["read", URL, "--max-price", "-1", "--budget", "1"], 2, "must be a non-negative amount"),
    (["read", URL, *PAY, "--channel-deposit", "5"], 2, "--channel-deposit 5 is more than"),
    (["node", "--chain-id", "0"], 2, "--chain-id: must be at least 1"),
    (["node", "--port", "99999"], 2, "--port: a port is 1-65535, got 99999"),
    (["serve", "--port", "99999"], 2, "--port: a port is 1-65535, got 99999"),
    (["serve", "--port", "0"], 2, "a port is 1-65535, got 0"),
    (["facilitator", "--port", "-5"], 2, "a port is 1-65535"),
    (["serve", "--max-timeout-seconds", "0"], 2, "--max-timeout-seconds: must be at least 1"),
    (["serve", "--max-timeout-seconds", "9999999"], 2, "at most 604800 (7 days)"),
    (["serve", "--schemes", "exact,bogus"], 2, "unknown scheme(s) bogus"),
    (["node", "--channel-grace-period", "0"], 2, "--channel-grace-period: must be at least 1"),
    (["demo", "--max-reads", "-1"], 2, "--max-reads: must be 0 or more"),
    (["bench", "--slug", "nope"], 2, "--slug: no article 'nope'"),
    (["bench", "--phase-seconds", "-1"], 2, "--phase-seconds: must be more than 0"),
    (["bench", "--concurrency", "0"], 2, "--concurrency: must be at least 1"),
    (["simulate", "--out", "/proc/nope"], 2, "--out: cannot write to /proc/nope"),
    (["simulate", "--agents", "0"], 2, "--agents: must be at least 1"),
    (["simulate", "--reads-per-day", "-3"], 2, "--reads-per-day: must be more than 0"),
    (["fund", "0xnope", "1", "--token", "USDX"], 2, "not an address"),
    (["fund", ADDRESS, "-1", "--token", "USDX"], 2, "must be a non-negative amount"),
    (["wallet", "balance", "0x1234"], 2, "not an address"),
    (["channels", "close", "0x12"], 2, "a channel id is 0x and 64 hex digits"),
    (["verify-receipt", "{}", "--signer", "0x12"], 2, "--signer: not an address"),
    (["--config", "/nonexistent/agent-pay.toml", "receipts"], 2, "cannot read config file"),
    (["read", URL, *PAY, "--chain", "http://[::1"], 2, "chain_url: Value error, not a URL"),
    (["read", URL, *PAY, "--chain", "http://127.0.0.1:99999"], 2, "Port out of range"),
    (["fund", ADDRESS, "1", "--token", "USDX", "--chain", "127.0.0.1:8545"], 2, "http://"),
    # failures, not usage: exit 1
    (["wallet", "address"], 1, "no keystore at"),
    (["wallet", "balance", ADDRESS], 1, "no node answers at"),
    (["read", URL, *PAY], 1, "no node answers at"),
    (["channels", "list"], 1, "no node answers at"),
    (["verify-receipt", "missing.json", "--signer", ADDRESS], 1, "no such file: missing.json"),
    (["verify-receipt", "{}", "--signer", ADDRESS], 2, "INVALID: not a receipt"),
]


@pytest.mark.parametrize(
    ("argv", "code", "message"), MISTAKES, ids=[" ".join(m[0]) for m in MISTAKES]
)
def test_a_mistake_is_one_line_and_an_exit_code(
    argv: list[str], code: int, message: str, environ: dict[str, str], tmp_path: Path
) -> None:
    done = agent_pay(argv, environ, tmp_path)
    said = (done.stderr + done.stdout).strip()
    assert done.returncode == code, said
    assert "Traceback" not in done.stderr
    assert message in said
    assert len(done.stderr.strip().splitlines()) <= 1, done.stderr


def test_environment_settings_are_checked_too(environ: dict[str, str], tmp_path: Path) -> None:
    done = agent_pay(["serve"], {**environ, "AGENT_PAY_PORT": "99999"}, tmp_path)
    assert done.returncode == 2
    assert "port: Value error, a port is 1-65535" in done.stderr
    assert "Traceback" not in done.stderr


def test_the_node_hint_when_nothing_answers_at_the_default_url(
    environ: dict[str, str], tmp_path: Path
) -> None:
    # The default URL is the user's own 8545: only its wording is checked when nothing is there.
    environ.pop("AGENT_PAY_CHAIN_URL")
    done = agent_pay(["wallet", "balance", ADDRESS], environ, tmp_path)
    if done.returncode == 0:
        pytest.skip("a node answers on 127.0.0.1:8545 here")
    assert "start one with `agent-pay node`" in done.stderr


def test_state_lives_in_the_home_wherever_the_shell_is(
    environ: dict[str, str], tmp_path: Path
) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    two.mkdir()
    environ["AGENT_PAY_KEYSTORE_PASSWORD"] = "correct horse battery"
    created = agent_pay(["wallet", "new"], environ, one)
    assert created.returncode == 0, created.stderr
    address = created.stdout.split()[-1]
    assert (Path(environ["AGENT_PAY_HOME"]) / "wallet.json").is_file()
    assert not (one / ".agent-pay").exists()
    # Another terminal, elsewhere: the same wallet, and `wallet new` will not make a second.
    del environ["AGENT_PAY_KEYSTORE_PASSWORD"]  # the address is public: no password asked
    assert agent_pay(["wallet", "address"], environ, two).stdout.strip() == address
    again = agent_pay(["wallet", "new"], environ, two)
    assert again.returncode == 1
    assert "exists already: not overwriting a key" in again.stderr
    listed = agent_pay(["receipts"], environ, two)
    assert listed.returncode == 0
    assert f"no receipts in {environ['AGENT_PAY_HOME']}/receipts" in listed.stdout


def test_help_is_quick_and_says_where_state_lives(environ: dict[str, str], tmp_path: Path) -> None:
    done = agent_pay(["--help"], environ, tmp_path)
    assert done.returncode == 0
    assert "AGENT_PAY_HOME" in done.stdout
    probe = (
        "import sys, agent_pay.cli; heavy = {'eth', 'web3', 'fastapi', 'uvicorn', 'vyper', "
        "'matplotlib', 'eth_account'} & set(sys.modules); print(sorted(heavy))"
    )
    loaded = subprocess.run(  # noqa: S603
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, env=environ
    )
    assert loaded.stdout.strip() == "[]"


def _interrupt(
    argv: list[str], environ: dict[str, str], cwd: Path, *, after: float | str
) -> subprocess.CompletedProcess[str]:
    """Start `agent-pay argv`, then Ctrl-C it (SIGINT to its process group, as a terminal
    does) `after` seconds, or once its stderr shows the text `after`."""
    child = subprocess.Popen(  # noqa: S603
        [*COMMAND, *argv],
        env=environ,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        if isinstance(after, str):
            assert child.stderr is not None
            seen = ""
            deadline = time.monotonic() + 120
            while after not in seen and time.monotonic() < deadline:
                line = child.stderr.readline()
                if not line:
                    break
                seen += line
            assert after in seen, seen
            time.sleep(0.5)
        else:
            time.sleep(after)
            seen = ""
        os.killpg(child.pid, signal.SIGINT)
        out, err = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
    return subprocess.CompletedProcess(child.args, child.returncode, out, seen + err)


@pytest.mark.parametrize("after", [0.08, 0.3, 1.0])
def test_ctrl_c_while_starting_or_running_is_one_line_and_130(
    after: float, environ: dict[str, str], tmp_path: Path
) -> None:
    done = _interrupt(["demo"], environ, tmp_path, after=after)
    if done.returncode == 0:
        pytest.skip("the demo finished before the Ctrl-C")
    assert done.returncode == 130, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().endswith("interrupted")


def test_ctrl_c_during_bench_stops_it_and_its_children_quietly(
    environ: dict[str, str], tmp_path: Path
) -> None:
    argv = ["bench", "--quick", "--no-stock", "--scheme", "exact"]
    done = _interrupt(argv, environ, tmp_path, after="free")
    assert done.returncode == 130, done.stderr
    assert "Traceback" not in done.stderr
    assert "KeyboardInterrupt" not in done.stderr
    assert done.stderr.strip().endswith("agent-pay bench: interrupted")
