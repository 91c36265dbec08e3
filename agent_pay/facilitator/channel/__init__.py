"""agent-pay's "channel" scheme on EVM, as the facilitator runs it: one module per concept.

- `scheme` — `ChannelEvmScheme`, the `SchemeHandler` (verify, settle) that composes the rest;
- `vouchers` — the fast path: a voucher checked and accepted with no chain and no wait;
- `book` — `ChannelAccount`, one channel as the payee sees it, and the acceptance rule;
- `accounts` — every account, by channel and by payer, and the chain read of a new one;
- `records` — what an account hands out: acceptances, paid reads, refusals;
- `snapshot` — an account's persisted form; `store` — the write-behind SQLite file;
- `watch` — the cached on-chain view; `settler` — claims in batches; `deposit_checks` and
  `deposits` — opens and top-ups, checked and submitted; `lifecycle` — starting and stopping
  the background parts;
- `local` — the in-process `ChannelFacilitator` (the content server's seam);
- `endpoints` and `remote` — the same seam over HTTP, served and called.

The package imports none of them itself (a server importing `records` pulls in no chain code);
`ChannelEvmScheme`, `parse_payload` and `DEFAULT_REPLAY_WINDOW` are still found here.
"""

from __future__ import annotations

from typing import Any

__all__ = ["DEFAULT_REPLAY_WINDOW", "ChannelEvmScheme", "parse_payload"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from agent_pay.facilitator.channel import scheme

        return getattr(scheme, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
