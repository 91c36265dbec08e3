"""`agent-pay serve --store` and `--workers`: what is refused, at once and clearly."""

from __future__ import annotations

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


def test_channels_are_refused_on_a_shared_store(tmp_path: Path) -> None:
    settings = load_settings({"schemes": "channel", "home": str(tmp_path)})
    with pytest.raises(ConfigurationError, match="not in the shared store"):
        _schemes(settings, None, shared=True)
    settings = load_settings({"home": str(tmp_path)})
    assert _schemes(settings, None, shared=True) == (
        ("exact",),
        "channels are not kept in the shared store yet",
    )
