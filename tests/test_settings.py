"""Settings: flags > environment > config file > defaults; secrets never leak."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from agent_pay.chain.channel import DEFAULT_GRACE_PERIOD
from agent_pay.errors import ConfigurationError
from agent_pay.settings import SECRET_FIELDS, Settings, load_settings

SECRET = "0x" + "ab" * 32


def test_defaults() -> None:
    settings = load_settings(environ={}, config_file=None)
    assert settings == Settings()
    assert settings.chain_url == "http://127.0.0.1:8545"
    assert settings.chain_id == 31337
    assert settings.tokens == {}
    assert settings.max_price is None
    assert settings.facilitator_key is None


def test_precedence_flags_then_environment_then_file_then_defaults(tmp_path: Path) -> None:
    config = tmp_path / "agent-pay.toml"
    config.write_text(
        'chain_url = "http://file:1"\nport = 1111\nbudget = "3"\n'
        '[tokens]\nUSDX = "0x5FbDB2315678afecb367f032d93F642f64180aa3"\n'
    )
    environ = {"AGENT_PAY_PORT": "2222", "AGENT_PAY_CHAIN_URL": "http://env:2"}

    settings = load_settings(
        {"chain_url": "http://flag:3", "host": None}, environ=environ, config_file=config
    )

    assert settings.chain_url == "http://flag:3"  # flag beats environment and file
    assert settings.port == 2222  # environment beats file
    assert settings.budget == Decimal("3")  # file beats default
    assert settings.host == "127.0.0.1"  # a flag left out (None) does not count
    assert settings.tokens == {"USDX": "0x5FbDB2315678afecb367f032d93F642f64180aa3"}


def test_the_config_file_can_come_from_the_environment(tmp_path: Path) -> None:
    config = tmp_path / "elsewhere.toml"
    config.write_text("node_port = 9999\n")
    settings = load_settings(environ={"AGENT_PAY_CONFIG": str(config)})
    assert settings.node_port == 9999


def test_token_lists_from_the_environment_and_from_flags() -> None:
    env = {"AGENT_PAY_TOKENS": "USDX=0xaa, CNYX=0xbb"}
    assert load_settings(environ=env).tokens == {"USDX": "0xaa", "CNYX": "0xbb"}
    assert load_settings({"tokens": "USDX=0xcc"}, environ=env).tokens == {"USDX": "0xcc"}
    with pytest.raises(ConfigurationError, match="SYMBOL=ADDRESS"):
        load_settings(environ={"AGENT_PAY_TOKENS": "USDX"})


def test_channel_settings() -> None:
    assert Settings().channel_grace_period == DEFAULT_GRACE_PERIOD  # the contract layer's
    assert Settings().schemes == ()  # serve decides from the chain
    env = {"AGENT_PAY_SCHEMES": "exact, channel", "AGENT_PAY_CHANNEL_DEPOSIT": "1.5"}
    settings = load_settings(environ=env)
    assert (settings.schemes, settings.channel_deposit) == (("exact", "channel"), Decimal("1.5"))
    assert load_settings({"schemes": "channel"}, environ=env).schemes == ("channel",)
    with pytest.raises(ConfigurationError, match="unknown scheme"):
        load_settings({"schemes": "exact,upto"})
    with pytest.raises(ConfigurationError, match="named twice"):
        load_settings({"schemes": "exact,exact"})
    with pytest.raises(ConfigurationError, match="channel_grace_period"):
        load_settings(environ={"AGENT_PAY_CHANNEL_GRACE_PERIOD": "0"})
    with pytest.raises(ConfigurationError, match="channel_deposit"):
        load_settings({"channel_deposit": "-1"})


def test_secrets_come_from_the_environment_and_never_show() -> None:
    settings = load_settings(environ={"AGENT_PAY_FACILITATOR_KEY": SECRET})
    assert settings.facilitator_key is not None
    assert settings.facilitator_key.get_secret_value() == SECRET
    assert SECRET not in repr(settings)
    assert SECRET not in str(settings.model_dump())
    assert {
        "facilitator_key",
        "owner_key",
        "private_key",
        "keystore_password",
        "receipt_key",
    } == SECRET_FIELDS


def test_secrets_are_refused_as_flags() -> None:
    with pytest.raises(ConfigurationError, match="not taken as flags") as caught:
        load_settings({"private_key": SECRET})
    assert SECRET not in str(caught.value)


def test_bad_values_name_the_setting_without_echoing_secrets(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="port") as caught:
        load_settings(environ={"AGENT_PAY_PORT": "eighty", "AGENT_PAY_OWNER_KEY": SECRET})
    assert SECRET not in str(caught.value)
    with pytest.raises(ConfigurationError, match="max_price"):
        load_settings({"max_price": "-1"})
    config = tmp_path / "agent-pay.toml"
    config.write_text("chian_url = 'typo'\n")
    with pytest.raises(ConfigurationError, match=r"unknown setting.*chian_url"):
        load_settings(config_file=config)
    config.write_text("not toml [")
    with pytest.raises(ConfigurationError, match="not valid TOML"):
        load_settings(config_file=config)
    with pytest.raises(ConfigurationError, match="cannot read config file"):
        load_settings(config_file=tmp_path / "missing.toml")


def test_unrelated_environment_is_ignored() -> None:
    settings = load_settings(environ={"AGENT_PAY_ANVIL": "/bin/true", "HOME": "/root"})
    assert settings == Settings()


def test_state_lives_under_one_home(tmp_path: Path) -> None:
    settings = load_settings(environ={"AGENT_PAY_HOME": str(tmp_path)})
    assert settings.home == tmp_path
    assert settings.keystore == tmp_path / "wallet.json"
    assert settings.receipts_dir == tmp_path / "receipts"
    assert settings.channels_dir == tmp_path / "channels"
    assert settings.data_dir == tmp_path / "node"
    assert settings.server_dir == tmp_path / "server"
    # A path given on its own is kept; the others still derive from the home.
    flagged = load_settings(
        {"keystore": tmp_path / "other.json"}, environ={"AGENT_PAY_HOME": str(tmp_path)}
    )
    assert flagged.keystore == tmp_path / "other.json"
    assert flagged.receipts_dir == tmp_path / "receipts"
    # Without AGENT_PAY_HOME: the platform's per-user data directory, never the shell's cwd.
    assert load_settings(environ={}).home.is_absolute()


def test_ports_and_ids_out_of_range_are_refused() -> None:
    for name, value in (("port", "99999"), ("node_port", "0"), ("chain_id", "0")):
        with pytest.raises(ConfigurationError, match=name):
            load_settings(environ={f"AGENT_PAY_{name.upper()}": value})
