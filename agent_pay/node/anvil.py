"""anvil (Foundry's local node) as a child process: find it, start it on a free port, stop it.

The tests run the chain and end-to-end suites against a real node this way, and so can anyone's
experiments. anvil comes from npm (`npm ci` in the repository installs `@foundry-rs/anvil` into
`node_modules`), or from a Foundry install on PATH.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path

import httpx

__all__ = [
    "AnvilNotFoundError",
    "find_anvil",
    "free_port",
    "run_anvil",
    "stop_process",
    "wait_for_rpc",
]

ANVIL_VARIABLE = "AGENT_PAY_ANVIL"


class AnvilNotFoundError(FileNotFoundError):
    """No anvil binary was found (see `find_anvil` for where it is looked for)."""


def find_anvil(root: Path | None = None, environ: Mapping[str, str] | None = None) -> Path:
    """The anvil binary to run.

    Looked for, in order: the path in `environ["AGENT_PAY_ANVIL"]` (the caller passes
    `os.environ` at the edge); the platform binary npm put under
    `<root>/node_modules/@foundry-rs/anvil-<platform>/bin/anvil` (run directly: one process,
    signals reach it); the npm wrapper `<root>/node_modules/.bin/anvil`; `anvil` on PATH.
    `root` defaults to the source tree this package lives in.
    """
    given = (environ or {}).get(ANVIL_VARIABLE)
    if given:
        path = Path(given)
        if not path.is_file():
            raise AnvilNotFoundError(f"${ANVIL_VARIABLE} names {given}, which does not exist")
        return path
    root = root or Path(__file__).resolve().parents[2]
    modules = root / "node_modules"
    candidates = [*sorted(modules.glob("@foundry-rs/anvil-*/bin/anvil")), modules / ".bin/anvil"]
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    on_path = shutil.which("anvil")
    if on_path:
        return Path(on_path)
    raise AnvilNotFoundError(
        f"anvil not found: run `npm ci` in {root} (installs @foundry-rs/anvil), "
        f"put anvil on PATH, or set ${ANVIL_VARIABLE}"
    )


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on `host` right now (another process could still take it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_for_rpc(
    url: str, *, timeout: float = 15.0, process: subprocess.Popen[bytes] | None = None
) -> None:
    """Block until `url` answers `eth_chainId`; raise RuntimeError after `timeout` seconds or
    as soon as `process` (the node being started) exits."""
    deadline = time.monotonic() + timeout
    body = {"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []}
    with httpx.Client(timeout=1.0) as client:
        while True:
            if process is not None and process.poll() is not None:
                raise RuntimeError(f"the node exited with status {process.returncode}")
            try:
                if "result" in client.post(url, json=body).json():
                    return
            except (httpx.HTTPError, ValueError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"no JSON-RPC answer from {url} after {timeout} s")
            time.sleep(0.02)


@contextmanager
def run_anvil(
    *,
    binary: Path | None = None,
    host: str = "127.0.0.1",
    chain_id: int = 31337,
    extra_args: Sequence[str] = (),
    attempts: int = 3,
) -> Iterator[str]:
    """Start anvil on a free port of `host` (automine, the public dev accounts funded); yield
    its URL; stop it when the block exits."""
    binary = binary or find_anvil()
    for attempt in range(attempts):
        port = free_port(host)
        args = [str(binary), "--host", host, "--port", str(port), "--chain-id", str(chain_id)]
        with tempfile.TemporaryFile() as errors:
            process = subprocess.Popen(  # noqa: S603 - our own binary and arguments
                [*args, "--quiet", *extra_args],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=errors,
                start_new_session=True,  # the npm wrapper's child goes down with it
            )
            url = f"http://{host}:{port}"
            try:
                wait_for_rpc(url, process=process)
            except RuntimeError as exc:
                stop_process(process)
                if attempt + 1 < attempts:
                    continue  # most likely the port was taken meanwhile
                errors.seek(0)
                stderr = errors.read().decode(errors="replace")
                raise RuntimeError(f"anvil did not start: {exc}: {stderr[-500:]}") from exc
            try:
                yield url
            finally:
                stop_process(process)
            return


def stop_process(process: subprocess.Popen[bytes], timeout: float = 5.0) -> None:
    """Terminate `process` and its process group (it must lead one), killing after `timeout`."""
    if process.poll() is None:
        with suppress(ProcessLookupError):
            os.killpg(process.pid, 15)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            with suppress(ProcessLookupError):
                os.killpg(process.pid, 9)
            process.wait(timeout)
    for stream in (process.stdout, process.stderr):
        if stream is not None:
            stream.close()
