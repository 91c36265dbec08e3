"""What the channel scheme's tests share: a price, fixed keys and addresses, a channel account
and the acceptance call, and a token and channel manager on an embedded chain."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import pytest

from agent_pay.chain.channel import ChannelManager, ChannelStatus
from agent_pay.chain.contract import Transactor
from agent_pay.chain.devkeys import dev_signer
from agent_pay.chain.embedded import EmbeddedChain
from agent_pay.chain.stablecoin import Stablecoin, deploy_stablecoins
from agent_pay.errors import Reason
from agent_pay.facilitator.channel.book import ChannelAccount, ChannelRefusedError
from agent_pay.signing import LocalSigner, receive_with_authorization_typed_data
from agent_pay.signing.typed_data import TokenDomain
from agent_pay.signing.voucher import open_authorization

P = 100  # the price of a read in these tests
PAYER = "0x" + "11" * 20
PAYEE = "0x" + "22" * 20
TOKEN = "0x" + "33" * 20
_KEYS = [LocalSigner.from_key("0x" + f"{i:02x}" * 32) for i in range(1, 4)]


def account(deposit: int = 10_000, **change: Any) -> ChannelAccount:
    fields: dict[str, Any] = {
        "channel_id": b"\x07" * 32,
        "payer": _KEYS[0].address,
        "payee": PAYEE,
        "token": TOKEN,
        "signer": None,
        "deposit": deposit,
        "claimed": 0,
        "status": ChannelStatus.OPEN,
    }
    fields.update(change)
    return ChannelAccount(**fields)


def accept(
    acct: ChannelAccount,
    cumulative: int,
    *,
    price: int = P,
    signature: bytes | None = None,
    resource: str = "/a",
    now: float = 1000.0,
) -> Any:
    sig = signature if signature is not None else cumulative.to_bytes(65, "big")
    return acct.accept(cumulative, price, sig, resource=resource, now=now, replay_window=300)


def refused(reason: Reason, call: Any, *args: Any, **kwargs: Any) -> ChannelRefusedError:
    with pytest.raises(ChannelRefusedError) as caught:
        call(*args, **kwargs)
    assert caught.value.reason == reason, caught.value.message
    return caught.value


def invariant(acct: ChannelAccount) -> None:
    unpaid = sum(b - a for a, b in acct.unpaid)
    assert acct.highest - acct.served == unpaid + acct.forfeited
    assert 0 <= acct.served <= acct.highest <= acct.deposit
    assert acct.unpaid == sorted(acct.unpaid)
    assert all(a < b <= acct.highest for a, b in acct.unpaid)


@dataclass
class Chain:
    chain: EmbeddedChain
    token: Stablecoin
    manager: ChannelManager
    owner: Transactor
    relayer: Transactor


def new_chain() -> Chain:
    """A fresh embedded chain with the stock tokens and a channel manager (grace 600 s)."""
    chain = EmbeddedChain()
    owner = Transactor(chain, dev_signer(0))
    tokens = deploy_stablecoins(owner)
    manager = ChannelManager.deploy(owner, 600)
    return Chain(chain, tokens["USDX"], manager, owner, Transactor(chain, dev_signer(1)))


def _open_channel(env: Chain, payer: LocalSigner, payee: str, deposit: int) -> bytes:
    env.token.mint(env.owner, payer.address, deposit)
    salt = random.randbytes(32)
    now = env.chain.next_timestamp()
    auth = open_authorization(
        payer=payer.address,
        payee=payee,
        token=env.token.address,
        amount=deposit,
        salt=salt,
        signer=None,
        valid_after=now - 600,
        valid_before=now + 600,
        manager=env.manager.address,
        chain_id=env.chain.chain_id,
    )
    asset = env.token.asset
    domain = TokenDomain(asset.eip712_name, asset.eip712_version, asset.chain_id, asset.address)
    signature = payer.sign_typed_data(receive_with_authorization_typed_data(domain, auth))
    env.manager.open_with_authorization(
        env.relayer, auth, signature, payee=payee, token=env.token.address, salt=salt, gas=300_000
    )
    return env.manager.channel_id(payer.address, payee, env.token.address, salt)
