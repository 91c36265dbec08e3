"""A throwaway PostgreSQL server for tests, benchmarks and trying the shared store out.

`local_postgres()` runs the machine's `initdb` and `pg_ctl` (from `/usr/lib/postgresql/*/bin`,
else the PATH) in a fresh temporary directory, on a free loopback port, and yields its
connection URL; the server and its directory are gone when the block exits. `stopped(url)`
stops such a server for a while (a database that goes away, then comes back). PostgreSQL refuses
to run as root, so under root it runs as the `postgres` user (or `nobody`) through `runuser`,
owning its directory.
"""

# The commands run are PostgreSQL's own programs, with arguments built here (no shell).
# ruff: noqa: S603

from __future__ import annotations

import os
import pwd
import shlex
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from agent_pay.errors import ConfigurationError

__all__ = ["PostgresNotFoundError", "find_postgres_bin", "local_postgres", "stopped"]


class PostgresNotFoundError(ConfigurationError):
    """No PostgreSQL server binaries (initdb, pg_ctl) on this machine."""


def find_postgres_bin() -> Path:
    """The directory holding `initdb` and `pg_ctl`: the newest `/usr/lib/postgresql/*/bin`,
    else wherever the PATH finds `initdb`.

    Raises:
        PostgresNotFoundError: neither has them (install the `postgresql` package).
    """
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: _version(p.parent.name)
    )
    for candidate in reversed(versions):
        if (candidate / "initdb").is_file() and (candidate / "pg_ctl").is_file():
            return candidate
    found = shutil.which("initdb")
    if found is not None and shutil.which("pg_ctl", path=str(Path(found).parent)):
        return Path(found).resolve().parent
    raise PostgresNotFoundError(
        "no PostgreSQL server binaries (initdb, pg_ctl): install PostgreSQL "
        "(Debian/Ubuntu: apt-get install postgresql)"
    )


def _version(name: str) -> tuple[int, ...]:
    return tuple(int(part) for part in name.split(".") if part.isdigit())


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _as_unprivileged() -> tuple[list[str], str | None]:
    """The command prefix that drops root, and the user it runs as (None: not root)."""
    if os.geteuid() != 0:
        return [], None
    for user in ("postgres", "nobody"):
        try:
            pwd.getpwnam(user)
        except KeyError:
            continue
        return ["runuser", "-u", user, "--"], user
    raise PostgresNotFoundError("running as root, and no unprivileged user to run PostgreSQL")


@contextmanager
def local_postgres(
    *, durable: bool = False, max_connections: int = 200, database: str = "agent_pay"
) -> Iterator[str]:
    """Run a fresh PostgreSQL server until the block exits; yield `postgresql://...` for a
    database `database` on it (trust authentication, loopback only).

    Args:
        durable: keep fsync on (benchmarks of the real thing); off by default, for tests.
        max_connections: the server's connection limit (each worker holds a pool).

    Raises:
        PostgresNotFoundError: PostgreSQL is not installed.
        OSError: it would not start (its log is in the message).
    """
    bin_dir = find_postgres_bin()
    prefix, user = _as_unprivileged()
    root = Path(tempfile.mkdtemp(prefix="agent-pay-pg-"))
    data, log = root / "data", root / "server.log"
    if user is not None:
        shutil.chown(root, user)
    try:
        _run([*prefix, str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", "agent"])
        options = [
            "-c listen_addresses=127.0.0.1",
            f"-c unix_socket_directories={root}",
            f"-c max_connections={max_connections}",
        ]
        if not durable:
            options += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
        port = _start(prefix, bin_dir, data, log, options)
        url = f"postgresql://agent@127.0.0.1:{port}"
        _run(
            [
                *prefix,
                str(bin_dir / "createdb"),
                "-h",
                "127.0.0.1",
                "-p",
                str(port),
                "-U",
                "agent",
                database,
            ]
        )
        try:
            yield f"{url}/{database}"
        finally:
            subprocess.run(
                [*prefix, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                capture_output=True,
                check=False,
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)


@contextmanager
def stopped(url: str) -> Iterator[None]:
    """Stop the server at `url` (one `local_postgres` runs) until the block exits, then start
    it again, on the same port with the same settings."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as connection:
        row = connection.execute("SHOW data_directory").fetchone()
    assert row is not None
    data = Path(row[0])
    # The server's command line, as pg_ctl recorded it: `postgres "-D" "<data>" <options>`.
    argv = shlex.split((data / "postmaster.opts").read_text())
    options = [a for i, a in enumerate(argv[1:], 1) if "-D" not in (a, argv[i - 1])]
    prefix, _ = _as_unprivileged()
    pg_ctl = str(find_postgres_bin() / "pg_ctl")
    _run([*prefix, pg_ctl, "-D", str(data), "-m", "fast", "-w", "stop"])
    try:
        yield
    finally:
        log = str(data.parent / "server.log")
        _run(
            [*prefix, pg_ctl, "-D", str(data), "-l", log, "-w", "-o", shlex.join(options), "start"]
        )


def _start(prefix: list[str], bin_dir: Path, data: Path, log: Path, options: list[str]) -> int:
    """Start the server on a free port (another free one if that one was taken meanwhile)."""
    for _ in range(5):
        port = _free_port()
        started = subprocess.run(
            [
                *prefix,
                str(bin_dir / "pg_ctl"),
                "-D",
                str(data),
                "-l",
                str(log),
                "-w",
                "-o",
                " ".join([*options, f"-c port={port}"]),
                "start",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if started.returncode == 0:
            return port
    text = log.read_text(errors="replace") if log.is_file() else started.stderr
    raise OSError(f"PostgreSQL would not start: {text[-2000:]}")


def _run(command: list[str]) -> None:
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise OSError(f"{' '.join(command)}: {done.stderr[-2000:]}")
