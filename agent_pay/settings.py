"""One settings object for every command, read once at the edge.

Sources, strongest first:

1. command-line flags (the CLI passes the ones the user gave);
2. environment variables `AGENT_PAY_<NAME>` (`AGENT_PAY_CHAIN_URL`, `AGENT_PAY_TOKENS`, ...);
3. a TOML config file: `--config FILE`, else `$AGENT_PAY_CONFIG`, else `./agent-pay.toml` if it
   exists; its keys are the field names below (`tokens` is a table);
4. the defaults below.

State (the wallet, receipts, channels, the node's chain, the server's ledger) lives under one
per-user home, wherever the shell is: `AGENT_PAY_HOME` (or `home` in the config file), else
the platform's user data directory (`~/.local/share/agent-pay` on Linux). Each path setting
left unset derives from it (`agent_pay_home(environ)` and `Settings.home`, for any command
that keeps state of its own).

Secrets (keys, passwords) have no default, are never accepted as flags (they would show in
`ps` and in shell history), come only from the environment or the config file, and never
appear in a message or a repr. Library code never reads the environment: the CLI calls
`load_settings(..., environ=os.environ)` once and hands the result down.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from agent_pay.errors import ConfigurationError

__all__ = [
    "ENV_PREFIX",
    "HOME_PATHS",
    "SCHEMES",
    "SECRET_FIELDS",
    "Settings",
    "agent_pay_home",
    "default_home",
    "load_settings",
]

ENV_PREFIX = "AGENT_PAY_"
SCHEMES = ("exact", "channel")
"""The payment schemes `serve` can offer."""
MAX_GRACE_PERIOD = 365 * 86_400  # the channel contract's limit
DEFAULT_CONFIG_FILE = Path("agent-pay.toml")
APP_NAME = "agent-pay"
HOME_PATHS: Mapping[str, str] = {
    "data_dir": "node",
    "server_dir": "server",
    "keystore": "wallet.json",
    "receipts_dir": "receipts",
    "channels_dir": "channels",
}
"""Each path setting's default, relative to the home."""


def default_home() -> Path:
    """The per-user data directory (platformdirs), used when `AGENT_PAY_HOME` is not set."""
    from platformdirs import user_data_path  # light, but only needed when no home is given

    return user_data_path(APP_NAME, appauthor=False)


def agent_pay_home(environ: Mapping[str, str]) -> Path:
    """Where agent-pay keeps state: `$AGENT_PAY_HOME`, else `default_home()`."""
    value = environ.get(ENV_PREFIX + "HOME")
    return Path(value).expanduser() if value else default_home()


class Settings(BaseModel):
    """Everything the commands can be told. Immutable; build it with `load_settings`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    home: Path = Field(default_factory=default_home)
    """Where state lives; every path below left unset is under it (see `HOME_PATHS`)."""

    # -- the chain
    chain_url: str = "http://127.0.0.1:8545"
    """JSON-RPC endpoint of the node every command but `node` talks to."""
    chain_id: int = 31337
    """The chain `agent-pay node` creates (a node found at `chain_url` says its own)."""
    rpc_timeout: float = 10.0
    tokens: dict[str, str] = {}
    """Where the stablecoins are: symbol -> address. Empty: the dev-chain default addresses."""

    # -- agent-pay node
    data_dir: Path
    """Default: `<home>/node`."""
    node_host: str = "127.0.0.1"
    node_port: int = 8545

    # -- the content server (agent-pay serve) and the facilitator service
    host: str = "127.0.0.1"
    port: int = 8402
    articles: Path | None = None
    facilitator_url: str | None = None
    """A remote x402 facilitator for `serve`; otherwise it settles itself."""
    facilitator_host: str = "127.0.0.1"
    facilitator_port: int = 8403
    max_timeout_seconds: int = 120
    server_dir: Path
    """The content server's own state: its payment ledger, its receipt key, and the channels
    paid to it (`<server_dir>/channels`)."""
    store: str | None = None
    """Where `serve` keeps payments: None for SQLite in `server_dir` (one server process),
    or a PostgreSQL URL (`postgresql://user@host/db`; the password from `PGPASSWORD` or
    `~/.pgpass` rather than the URL) shared by every worker and instance."""
    store_lease: float = Field(default=10.0, gt=0, le=3600)
    """Seconds without a heartbeat after which an instance on a shared store counts as stopped
    and another resolves the payments it left in flight."""
    workers: int = Field(default=1, ge=1, le=64)
    """Server processes `serve` runs on one port (more than one needs a PostgreSQL `store`)."""
    schemes: tuple[str, ...] = ()
    """What `serve` offers, in order ("exact", "channel"). Empty: both if the chain has a
    channel contract (and `serve` settles itself), else "exact"."""

    # -- the channel scheme
    channel_manager: str | None = None
    """Where the channel contract is. None: on a dev chain, the default address, if one is
    deployed there; elsewhere the channel scheme is off."""
    channel_grace_period: int = 86_400
    """Seconds a payer waits between asking to close a channel and withdrawing (the payee's
    time to claim); fixed when `node` or `deploy` deploys the channel contract."""

    # -- the paying side (agent-pay read, wallet)
    keystore: Path
    """Default: `<home>/wallet.json`."""
    receipts_dir: Path
    """Where `read` keeps the receipts that let it re-read what it bought, for free."""
    max_price: Decimal | None = None
    """Most `read` pays for one resource, in the token's units; no default: say it."""
    budget: Decimal | None = None
    """Most `read` pays in all, per token; no default: say it."""
    channel_deposit: Decimal | None = None
    """`read` pays by channel, opening one with this deposit (in the token's units) to a payee
    it has none with; it counts against `budget` until the channel is closed. None: "exact"."""
    channels_dir: Path
    """Where `read` and `channels` keep the payer's channels."""

    # -- secrets: environment or config file only
    keystore_password: SecretStr | None = None
    private_key: SecretStr | None = None
    """A hex key to pay with instead of the keystore."""
    facilitator_key: SecretStr | None = None
    """The key that pays settlement gas. Dev chains default to throwaway dev account #1."""
    owner_key: SecretStr | None = None
    """The tokens' owner, who deploys and mints. Dev chains default to throwaway account #0."""
    receipt_key: SecretStr | None = None
    """The key `serve` signs receipts with; by default one made on first start and kept
    (mode 0600) in `server_dir`."""

    @model_validator(mode="before")
    @classmethod
    def _paths_under_home(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        home = Path(data["home"]).expanduser() if data.get("home") else default_home()
        data["home"] = home
        for name, relative in HOME_PATHS.items():
            if data.get(name) is None:
                data[name] = home / relative
            else:
                data[name] = Path(data[name]).expanduser()
        return data

    @field_validator("tokens", mode="before")
    @classmethod
    def _parse_tokens(cls, value: Any) -> Any:
        # "USDX=0xabc,CNYX=0xdef" from the environment or a flag.
        if isinstance(value, str):
            return _pairs(value, "tokens")
        if isinstance(value, list):  # repeated --token flags
            return _pairs(",".join(value), "tokens")
        return value

    @field_validator("schemes", mode="before")
    @classmethod
    def _parse_schemes(cls, value: Any) -> Any:
        # "exact,channel" from the environment or a flag.
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if isinstance(value, list | tuple):
            unknown = sorted(set(value) - set(SCHEMES))
            if unknown:
                raise ValueError(f"unknown scheme(s) {', '.join(unknown)}: use exact, channel")
            if len(set(value)) != len(value):
                raise ValueError("a scheme is named twice")
        return value

    @field_validator("max_price", "budget", "channel_deposit")
    @classmethod
    def _non_negative(cls, value: Decimal | None) -> Decimal | None:
        if value is not None and (not value.is_finite() or value < 0):
            raise ValueError("must be a non-negative number")
        return value

    @field_validator("chain_url", "facilitator_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None:
            return value
        try:
            parts = urlsplit(value)
            _ = parts.port  # raises for a port that is not a number or out of range
        except ValueError as exc:
            raise ValueError(f"not a URL ({exc}): {value!r}") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"must be an http:// or https:// URL, got {value!r}")
        return value

    @field_validator("node_port", "port", "facilitator_port")
    @classmethod
    def _port_in_range(cls, value: int) -> int:
        if not 1 <= value <= 65535:
            raise ValueError(f"a port is 1-65535, got {value}")
        return value

    @field_validator("chain_id", "max_timeout_seconds")
    @classmethod
    def _positive(cls, value: int) -> int:
        if value < 1:
            raise ValueError(f"must be at least 1, got {value}")
        return value

    @field_validator("max_timeout_seconds")
    @classmethod
    def _signable(cls, value: int) -> int:
        from agent_pay.client.policy import MAX_AUTHORIZATION_SECONDS

        if value > MAX_AUTHORIZATION_SECONDS:
            raise ValueError(
                f"at most {MAX_AUTHORIZATION_SECONDS} (7 days): agent-pay's clients sign no "
                f"longer-lived authorization, got {value}"
            )
        return value

    @field_validator("rpc_timeout")
    @classmethod
    def _positive_seconds(cls, value: float) -> float:
        if not 0 < value < float("inf"):
            raise ValueError(f"must be more than 0 seconds, got {value}")
        return value

    @field_validator("channel_grace_period")
    @classmethod
    def _grace_in_range(cls, value: int) -> int:
        if not 0 < value <= MAX_GRACE_PERIOD:
            raise ValueError(f"must be between 1 and {MAX_GRACE_PERIOD} seconds (a year)")
        return value


SECRET_FIELDS = frozenset(
    name for name, field in Settings.model_fields.items() if "SecretStr" in str(field.annotation)
)


def _pairs(text: str, name: str) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise ValueError(f"{name}: expected SYMBOL=ADDRESS, got {item!r}")
        pairs[key.strip()] = value.strip()
    return pairs


def _from_environment(environ: Mapping[str, str]) -> dict[str, str]:
    found = {}
    for name in Settings.model_fields:
        value = environ.get(ENV_PREFIX + name.upper())
        if value is not None and value != "":
            found[name] = value
    return found


def _from_file(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as file:
            data = tomllib.load(file)
    except OSError as exc:
        raise ConfigurationError(f"cannot read config file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"config file {path} is not valid TOML: {exc}") from None
    unknown = sorted(set(data) - set(Settings.model_fields))
    if unknown:
        raise ConfigurationError(f"config file {path}: unknown setting(s) {', '.join(unknown)}")
    return data


def load_settings(
    flags: Mapping[str, Any] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    config_file: Path | None = None,
) -> Settings:
    """Merge the sources (flags > environment > config file > defaults) into `Settings`.

    `flags` holds only what the user gave: None values are ignored. Secrets in `flags` are
    refused. Raises ConfigurationError naming the bad setting, never echoing a secret.
    """
    flags = {k: v for k, v in (flags or {}).items() if v is not None}
    environ = environ or {}
    secret_flags = sorted(SECRET_FIELDS & set(flags))
    if secret_flags:
        raise ConfigurationError(
            f"secrets are not taken as flags: set {', '.join(secret_flags)} in the environment"
        )
    path = config_file
    if path is None and environ.get(ENV_PREFIX + "CONFIG"):
        path = Path(environ[ENV_PREFIX + "CONFIG"])
    merged: dict[str, Any] = {}
    if path is not None:
        merged.update(_from_file(path))
    elif DEFAULT_CONFIG_FILE.is_file():
        merged.update(_from_file(DEFAULT_CONFIG_FILE))
    merged.update(_from_environment(environ))
    merged.update(flags)
    try:
        return Settings.model_validate(merged)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error['loc'])}: {error['msg']}" for error in exc.errors()
        )
        raise ConfigurationError(f"bad setting: {problems}") from None
