"""The content server's receipt key: made once, kept owner-only, the same after a restart."""

from __future__ import annotations

import stat
from pathlib import Path

from agent_pay.settings import Settings
from agent_pay.wallet.receipt_key import RECEIPT_KEY_FILE, server_receipt_key


def test_the_receipt_key_is_made_once_kept_owner_only_and_read_back(tmp_path: Path) -> None:
    settings = Settings(server_dir=tmp_path / "server")
    first = server_receipt_key(settings)
    path = tmp_path / "server" / RECEIPT_KEY_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert server_receipt_key(settings).address == first.address  # after a restart
    assert len(path.read_text(encoding="ascii").strip()) == 66  # 0x and 64 hex digits
