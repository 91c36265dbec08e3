# pragma version ~=0.4.3
# pragma evm-version prague
# pragma nonreentrancy off
"""
@title Payment Channel Manager: Deposit Once, One Voucher per Read, Settle in Batches
@custom:contract-name Channel
@license GNU Affero General Public License v3.0 only
@notice One contract holds many unidirectional payment channels.
        A payer (an AI agent) deposits tokens into a channel to one
        payee (a publisher); for every read it signs an EIP-712
        `Voucher(bytes32 channelId,uint256 cumulativeAmount)` for
        the running total it owes. Vouchers cost nothing on-chain:
        the payee redeems only the highest one it holds, whenever
        it likes, and many channels at once with `claim_many`.

        Life of a channel:
        - open: `open` (after `approve`) or `open_with_authorization`
          (gasless for the payer: anyone submits the payer's EIP-3009
          `ReceiveWithAuthorization` to this contract);
        - top up: `top_up` or `top_up_with_authorization`;
        - claim: `claim` / `claim_many` pay `cumulative - claimed` to
          the payee, for a voucher with `claimed < cumulative <= deposit`;
        - close, either by the payee at once (`close`, which may
          redeem a final voucher and refunds the rest to the payer),
          or by the payer in two steps: `request_close`, then, after
          `GRACE_PERIOD` seconds during which the payee can still
          claim, `withdraw`.
        A closed channel rejects everything, for ever: its id can
        never be opened again, so its vouchers never become valid.

        Channel id (see `channel_id`):
            keccak256(abi_encode(payer, payee, token, salt, self, chain.id))
        The payer picks the 32-byte `salt`, so one payer may hold any
        number of channels to one payee, and reopen after a close
        with a fresh salt.

        Front-running the gasless open. EIP-3009 signs only `from`,
        `to`, `value`, the validity window and a `nonce`; the payee
        and the voucher signer are this contract's business. So the
        EIP-3009 nonce is not random but derived (`open_nonce`):
            keccak256(abi_encode(OPEN_NONCE_TAG, channel_id, signer))
        and the contract recomputes it from the submitted arguments.
        The payer signs that nonce, so the signature commits to
        payer, payee, token, salt, signer, this contract and chain;
        changing any of them changes the nonce and the token rejects
        the signature. Top-ups bind their nonce to the channel the
        same way (`top_up_nonce`), with a tag of their own so that an
        open authorisation can never be spent as a top-up or back.

        Vouchers are signed by the payer or, if one was named at
        open, by the channel's authorised `signer` (an agent's hot
        key); both are accepted. Their EIP-712 domain is
        `EIP712Domain(string name,string version,uint256 chainId,
        address verifyingContract)` with name "agent-pay Channel",
        version "1" and this contract, via snekmate's
        `eip712_domain_separator` (which also provides EIP-5267
        `eip712Domain`). Signatures must be 65 bytes `r || s || v`
        with a low `s` (EIP-2), as snekmate's `ecdsa` requires.

        Claims may be submitted by anyone (a facilitator, say): the
        money always goes to the payee, and a voucher only ever pays
        what its payer signed; an early or duplicate submission
        cannot hurt the payee, who can still redeem a higher voucher.
        `close`, which ends the channel at once, is the payee's alone
        (anyone else could close with an old voucher and cut the
        payee off from later ones); `request_close` and `withdraw`
        are the payer's.

        Tokens: each channel's accounting is per token and every
        transfer of a channel is in that channel's token, so a
        malicious token can harm only channels in itself; payees
        should accept channels only in tokens they trust. The
        contract assumes a token moves exactly the amount asked:
        fee-on-transfer and rebasing tokens are not supported.
        Every state-changing function is `@nonreentrant` and follows
        checks-effects-interactions.

        Storage is packed by hand to keep a claim near four cold
        storage reads and one write (see `_Record`); amounts are
        therefore limited to 2**128 - 1 per channel.
"""


from ethereum.ercs import IERC20


# @dev `eip712_domain_separator` holds the EIP-712 domain
# (cached, and rebuilt if the chain id ever changes).
from snekmate.utils import eip712_domain_separator
initializes: eip712_domain_separator


# @dev The stateless `ecdsa` module; we use its malleability
# threshold (see `_recover_voucher_signer`).
from snekmate.utils import ecdsa


exports: eip712_domain_separator.eip712Domain


# @dev The EIP-3009 function this contract calls on a token.
interface IERC3009:
    def receiveWithAuthorization(
        from_: address,
        to: address,
        value_: uint256,
        validAfter: uint256,
        validBefore: uint256,
        nonce: bytes32,
        v: uint8,
        r: bytes32,
        s: bytes32,
    ): nonpayable


# @dev A voucher to redeem in `claim_many`.
struct Claim:
    channel_id: bytes32
    cumulative_amount: uint256
    signature: Bytes[65]


# @dev What `channels` returns: a channel, unpacked.
struct ChannelState:
    payer: address
    payee: address
    token: address
    signer: address
    deposit: uint256
    claimed: uint256
    closes_at: uint256
    status: uint8


# @dev A channel as stored: five slots. `head` packs the payer
# (bits 0-159), the status (bits 160-167) and the time the
# grace period ends (bits 168-231); `amounts` packs the deposit
# (bits 0-127) and the cumulative amount claimed (bits 128-255).
# `signer` stays zero (never written) when none was named.
struct _Record:
    head: uint256
    payee: address
    token: address
    signer: address
    amounts: uint256


# @dev Channel statuses (`ChannelState.status`).
STATUS_NONE: public(constant(uint8)) = 0
STATUS_OPEN: public(constant(uint8)) = 1
STATUS_CLOSING: public(constant(uint8)) = 2
STATUS_CLOSED: public(constant(uint8)) = 3


# @dev Why a claim was refused: the `reason` of `ClaimSkipped`.
# `claim` and `close` revert with the matching message instead.
SKIP_NO_CHANNEL: public(constant(uint8)) = 1
SKIP_CLOSED: public(constant(uint8)) = 2
SKIP_NOT_ABOVE_CLAIMED: public(constant(uint8)) = 3
SKIP_OVER_DEPOSIT: public(constant(uint8)) = 4
SKIP_BAD_SIGNATURE: public(constant(uint8)) = 5


# @dev The most vouchers one `claim_many` takes.
MAX_CLAIMS: public(constant(uint256)) = 100


# @dev The longest grace period the constructor accepts.
_MAX_GRACE_PERIOD: constant(uint256) = 365 * 86_400


# @dev The 32-byte EIP-712 type hash of a voucher.
VOUCHER_TYPEHASH: public(constant(bytes32)) = keccak256("Voucher(bytes32 channelId,uint256 cumulativeAmount)")


# @dev Domain tags of the derived EIP-3009 nonces.
OPEN_NONCE_TAG: public(constant(bytes32)) = keccak256("agent-pay Channel: open")
TOP_UP_NONCE_TAG: public(constant(bytes32)) = keccak256("agent-pay Channel: top up")


# @dev Bit positions of the packed `_Record` slots, and the
# length of a voucher signature.
_ADDRESS_MASK: constant(uint256) = 2**160 - 1
_STATUS_SHIFT: constant(uint256) = 160
_CLOSES_AT_SHIFT: constant(uint256) = 168
_AMOUNT_MASK: constant(uint256) = 2**128 - 1
_CLAIMED_SHIFT: constant(uint256) = 128
_SIGNATURE_LENGTH: constant(uint256) = 65


# @dev Seconds between `request_close` and `withdraw`.
GRACE_PERIOD: public(immutable(uint256))


# @dev The channels by id.
_records: HashMap[bytes32, _Record]


# @dev Emitted when a channel is opened; `signer` is zero
# when only the payer signs vouchers.
event ChannelOpened:
    channel_id: indexed(bytes32)
    payer: indexed(address)
    payee: indexed(address)
    token: address
    signer: address
    salt: bytes32
    deposit: uint256


# @dev Emitted when a deposit grows; `deposit` is the new total.
event ChannelToppedUp:
    channel_id: indexed(bytes32)
    amount: uint256
    deposit: uint256


# @dev Emitted when a voucher is redeemed: `amount` is paid now,
# `cumulative_amount` is the new claimed total.
event Claimed:
    channel_id: indexed(bytes32)
    payee: indexed(address)
    amount: uint256
    cumulative_amount: uint256


# @dev Emitted by `claim_many` for a voucher it refuses;
# `reason` is a `SKIP_*` code.
event ClaimSkipped:
    channel_id: indexed(bytes32)
    cumulative_amount: uint256
    reason: uint8


# @dev Emitted when the payer requests a close; the payer may
# withdraw from `closes_at` on.
event CloseRequested:
    channel_id: indexed(bytes32)
    closes_at: uint256


# @dev Emitted when a channel closes (by `close` or `withdraw`):
# `claimed` went to the payee in all, `refund` goes back to the payer.
event ChannelClosed:
    channel_id: indexed(bytes32)
    claimed: uint256
    refund: uint256


@deploy
@payable
def __init__(grace_period_: uint256):
    """
    @dev Sets the grace period and the EIP-712 domain ("agent-pay
         Channel", "1"). To omit the opcodes for checking the
         `msg.value` in the creation-time EVM bytecode, the
         constructor is declared as `payable`.
    @param grace_period_ The seconds a payee keeps to claim after
           the payer requests a close; 1 second to 365 days.
    """
    assert grace_period_ != 0 and grace_period_ <= _MAX_GRACE_PERIOD, "Channel: grace period out of range"
    GRACE_PERIOD = grace_period_
    eip712_domain_separator.__init__("agent-pay Channel", "1")


# -- views ---------------------------------------------------------------------------------------


@external
@view
def channel_id(payer: address, payee: address, token: address, salt: bytes32) -> bytes32:
    """
    @dev Returns the id of the channel these parameters open.
    @notice keccak256(abi_encode(payer, payee, token, salt, self,
            chain.id)): bound to this contract and this chain.
    @param payer The 20-byte address that deposits and signs.
    @param payee The 20-byte address that is paid.
    @param token The 20-byte token address.
    @param salt The 32-byte value the payer picks per channel.
    @return bytes32 The 32-byte channel id.
    """
    return self._channel_id(payer, payee, token, salt)


@external
@view
def open_nonce(channel_id: bytes32, signer: address) -> bytes32:
    """
    @dev Returns the EIP-3009 nonce a payer must sign in the
         `ReceiveWithAuthorization` that opens `channel_id` with
         voucher signer `signer`.
    @param channel_id The 32-byte channel id.
    @param signer The 20-byte authorised voucher signer (or zero).
    @return bytes32 The 32-byte nonce.
    """
    return self._open_nonce(channel_id, signer)


@external
@pure
def top_up_nonce(channel_id: bytes32, salt: bytes32) -> bytes32:
    """
    @dev Returns the EIP-3009 nonce a payer must sign in the
         `ReceiveWithAuthorization` of a top-up of `channel_id`.
    @param channel_id The 32-byte channel id.
    @param salt The 32-byte value the payer picks per top-up.
    @return bytes32 The 32-byte nonce.
    """
    return self._top_up_nonce(channel_id, salt)


@external
@view
def voucher_digest(channel_id: bytes32, cumulative_amount: uint256) -> bytes32:
    """
    @dev Returns the EIP-712 digest a voucher signs.
    @param channel_id The 32-byte channel id.
    @param cumulative_amount The 32-byte running total owed.
    @return bytes32 The 32-byte digest.
    """
    return self._voucher_digest(channel_id, cumulative_amount)


@external
@view
def DOMAIN_SEPARATOR() -> bytes32:
    """
    @dev Returns the EIP-712 domain separator of vouchers.
    @return bytes32 The 32-byte domain separator.
    """
    return eip712_domain_separator._domain_separator_v4()


@external
@view
def channels(channel_id: bytes32) -> ChannelState:
    """
    @dev Returns a channel, unpacked; all zero if there is none.
    @notice `closes_at` is zero until a close is requested;
            `signer` is zero when only the payer signs vouchers.
            A closed channel keeps its final deposit and claimed
            amount.
    @param channel_id The 32-byte channel id.
    @return ChannelState The channel.
    """
    record: _Record = self._records[channel_id]
    amounts: uint256 = record.amounts
    return ChannelState(
        payer=self._payer(record.head),
        payee=record.payee,
        token=record.token,
        signer=record.signer,
        deposit=amounts & _AMOUNT_MASK,
        claimed=amounts >> _CLAIMED_SHIFT,
        closes_at=record.head >> _CLOSES_AT_SHIFT,
        status=self._status(record.head),
    )


# -- open and top up -----------------------------------------------------------------------------


@external
@nonreentrant
def open(payee: address, token: address, amount: uint256, salt: bytes32, signer: address) -> bytes32:
    """
    @dev Opens a channel from the caller to `payee`, depositing
         `amount` tokens the caller has approved to this contract.
    @param payee The 20-byte address to be paid.
    @param token The 20-byte token address.
    @param amount The 32-byte deposit, more than zero.
    @param salt The 32-byte value making the channel id unique.
    @param signer The 20-byte authorised voucher signer, or zero
           for none (the payer's vouchers are always accepted).
    @return bytes32 The 32-byte channel id.
    """
    channel_id: bytes32 = self._open(msg.sender, payee, token, amount, salt, signer)
    self._pull(token, msg.sender, amount)
    return channel_id


@external
@nonreentrant
def open_with_authorization(
    payer: address,
    payee: address,
    token: address,
    amount: uint256,
    salt: bytes32,
    signer: address,
    valid_after: uint256,
    valid_before: uint256,
    v: uint8,
    r: bytes32,
    s: bytes32,
) -> bytes32:
    """
    @dev Opens a channel from `payer` to `payee` with the payer's
         EIP-3009 `ReceiveWithAuthorization` of `amount` tokens to
         this contract. Anyone may submit it; the payer pays no gas.
    @notice The authorisation's nonce must be
            `open_nonce(channel_id(payer, payee, token, salt), signer)`;
            the contract derives it, so a front-runner who changes
            the payee, token, salt or signer makes the token reject
            the signature, and a replay finds the channel (and the
            nonce) used.
    @param payer The 20-byte authoriser of the deposit.
    @param payee The 20-byte address to be paid.
    @param token The 20-byte EIP-3009 token address.
    @param amount The 32-byte deposit (the authorisation's value).
    @param salt The 32-byte value making the channel id unique.
    @param signer The 20-byte authorised voucher signer, or zero.
    @param valid_after The 32-byte timestamp after which the
           authorisation is valid.
    @param valid_before The 32-byte timestamp before which the
           authorisation is valid.
    @param v The secp256k1 1-byte signature parameter `v`.
    @param r The secp256k1 32-byte signature parameter `r`.
    @param s The secp256k1 32-byte signature parameter `s`.
    @return bytes32 The 32-byte channel id.
    """
    channel_id: bytes32 = self._open(payer, payee, token, amount, salt, signer)
    extcall IERC3009(token).receiveWithAuthorization(
        payer, self, amount, valid_after, valid_before, self._open_nonce(channel_id, signer), v, r, s
    )
    return channel_id


@external
@nonreentrant
def top_up(channel_id: bytes32, amount: uint256):
    """
    @dev Adds `amount` tokens, approved by the caller, to an open
         channel's deposit.
    @notice Anyone may top up; the deposit is the payer's, and
            what is not claimed is refunded to the payer.
    @param channel_id The 32-byte channel id.
    @param amount The 32-byte amount to add, more than zero.
    """
    token: address = self._top_up(channel_id, amount)
    self._pull(token, msg.sender, amount)


@external
@nonreentrant
def top_up_with_authorization(
    channel_id: bytes32,
    amount: uint256,
    salt: bytes32,
    valid_after: uint256,
    valid_before: uint256,
    v: uint8,
    r: bytes32,
    s: bytes32,
):
    """
    @dev Adds `amount` tokens to an open channel's deposit with the
         payer's EIP-3009 `ReceiveWithAuthorization` to this
         contract. Anyone may submit it.
    @notice The authorisation's nonce must be
            `top_up_nonce(channel_id, salt)`, so it can top up no
            other channel and cannot open one.
    @param channel_id The 32-byte channel id.
    @param amount The 32-byte amount (the authorisation's value).
    @param salt The 32-byte value the payer picked for this top-up.
    @param valid_after The 32-byte timestamp after which the
           authorisation is valid.
    @param valid_before The 32-byte timestamp before which the
           authorisation is valid.
    @param v The secp256k1 1-byte signature parameter `v`.
    @param r The secp256k1 32-byte signature parameter `r`.
    @param s The secp256k1 32-byte signature parameter `s`.
    """
    token: address = self._top_up(channel_id, amount)
    payer: address = self._payer(self._records[channel_id].head)
    extcall IERC3009(token).receiveWithAuthorization(
        payer, self, amount, valid_after, valid_before, self._top_up_nonce(channel_id, salt), v, r, s
    )


# -- claim ---------------------------------------------------------------------------------------


@external
@nonreentrant
def claim(channel_id: bytes32, cumulative_amount: uint256, signature: Bytes[65]) -> uint256:
    """
    @dev Redeems a voucher: pays `cumulative_amount - claimed` to
         the channel's payee. The channel stays open.
    @notice Anyone may submit a voucher; the payee is paid. Works
            while a close is pending (even past the grace period,
            until the payer withdraws).
    @param channel_id The 32-byte channel id.
    @param cumulative_amount The 32-byte running total the voucher
           signs; more than claimed, at most the deposit.
    @param signature The 65-byte voucher signature `r || s || v`
           by the payer or the channel's signer.
    @return uint256 The 32-byte amount paid.
    """
    reason: uint8 = 0
    payee: address = empty(address)
    token: address = empty(address)
    amount: uint256 = 0
    reason, payee, token, amount = self._settle(channel_id, cumulative_amount, signature)
    self._require_settled(reason)
    self._push(token, payee, amount)
    return amount


@external
@nonreentrant
def claim_many(claims: DynArray[Claim, MAX_CLAIMS]) -> uint256:
    """
    @dev Redeems many vouchers in one transaction. A voucher that
         cannot be redeemed is skipped with a `ClaimSkipped` event
         (its `reason` is one of the `SKIP_*` codes) rather than
         reverting the batch; check the events.
    @notice Consecutive claims whose channels share payee and
            token are paid with one token transfer: sort a batch by
            (payee, token) for the cheapest settlement. All state
            is written before the first transfer. Skipping (rather
            than reverting) also keeps a batch alive when someone
            redeems one of its vouchers first. A token whose
            transfer fails still reverts the whole batch: batch only
            tokens you trust.
    @param claims The vouchers, at most `MAX_CLAIMS`.
    @return uint256 The 32-byte number of vouchers redeemed.
    """
    payees: DynArray[address, MAX_CLAIMS] = []
    tokens: DynArray[address, MAX_CLAIMS] = []
    totals: DynArray[uint256, MAX_CLAIMS] = []
    redeemed: uint256 = 0
    for item: Claim in claims:
        reason: uint8 = 0
        payee: address = empty(address)
        token: address = empty(address)
        amount: uint256 = 0
        reason, payee, token, amount = self._settle(item.channel_id, item.cumulative_amount, item.signature)
        if reason != 0:
            log ClaimSkipped(channel_id=item.channel_id, cumulative_amount=item.cumulative_amount, reason=reason)
            continue
        # We do not check for an overflow here, as `redeemed`
        # counts at most `MAX_CLAIMS` items.
        redeemed = unsafe_add(redeemed, 1)
        last: uint256 = len(totals)
        if last != 0 and payees[last - 1] == payee and tokens[last - 1] == token:
            # Checked: the total of one token paid never exceeds
            # what channels in it hold, but a hostile token could.
            totals[last - 1] += amount
        else:
            payees.append(payee)
            tokens.append(token)
            totals.append(amount)
    for i: uint256 in range(len(totals), bound=MAX_CLAIMS):
        self._push(tokens[i], payees[i], totals[i])
    return redeemed


# -- close ---------------------------------------------------------------------------------------


@external
@nonreentrant
def close(channel_id: bytes32, cumulative_amount: uint256, signature: Bytes[65]):
    """
    @dev Closes a channel at once, by its payee: redeems a final
         voucher and refunds the rest of the deposit to the payer.
    @notice Pass `cumulative_amount` equal to the amount already
            claimed (and any signature, e.g. empty) to close
            without a new voucher. Works while a close is pending.
    @param channel_id The 32-byte channel id.
    @param cumulative_amount The 32-byte running total of the final
           voucher; at least claimed, at most the deposit.
    @param signature The 65-byte voucher signature, or anything
           when `cumulative_amount` equals the amount claimed.
    """
    head: uint256 = self._records[channel_id].head
    self._require_live(self._status(head))
    payee: address = self._records[channel_id].payee
    assert msg.sender == payee, "Channel: caller is not the payee"
    amounts: uint256 = self._records[channel_id].amounts
    deposit: uint256 = amounts & _AMOUNT_MASK
    claimed: uint256 = amounts >> _CLAIMED_SHIFT
    payout: uint256 = 0
    token: address = self._records[channel_id].token
    if cumulative_amount != claimed:
        reason: uint8 = 0
        reason, payee, token, payout = self._settle(channel_id, cumulative_amount, signature)
        self._require_settled(reason)
        claimed = cumulative_amount
    # We do not check for an underflow here, as `claimed <= deposit`
    # always holds (`_settle` enforces it).
    refund: uint256 = unsafe_sub(deposit, claimed)
    self._records[channel_id].head = self._pack_head(self._payer(head), STATUS_CLOSED, head >> _CLOSES_AT_SHIFT)
    log ChannelClosed(channel_id=channel_id, claimed=claimed, refund=refund)
    self._push(token, payee, payout)
    self._push(token, self._payer(head), refund)


@external
@nonreentrant
def request_close(channel_id: bytes32):
    """
    @dev Starts the payer's close: after `GRACE_PERIOD` seconds
         the payer may `withdraw` what is not claimed. Until then
         (and until the withdrawal) the payee can still claim.
    @notice Top-ups are refused once a close is requested.
    @param channel_id The 32-byte channel id.
    """
    head: uint256 = self._records[channel_id].head
    self._require_open(self._status(head))
    payer: address = self._payer(head)
    assert msg.sender == payer, "Channel: caller is not the payer"
    closes_at: uint256 = block.timestamp + GRACE_PERIOD
    self._records[channel_id].head = self._pack_head(payer, STATUS_CLOSING, closes_at)
    log CloseRequested(channel_id=channel_id, closes_at=closes_at)


@external
@nonreentrant
def withdraw(channel_id: bytes32):
    """
    @dev Ends the payer's close once the grace period is over:
         refunds the deposit less the amount claimed to the payer
         and closes the channel.
    @param channel_id The 32-byte channel id.
    """
    head: uint256 = self._records[channel_id].head
    status: uint8 = self._status(head)
    self._require_live(status)
    assert status == STATUS_CLOSING, "Channel: close not requested"
    payer: address = self._payer(head)
    assert msg.sender == payer, "Channel: caller is not the payer"
    closes_at: uint256 = head >> _CLOSES_AT_SHIFT
    assert block.timestamp >= closes_at, "Channel: grace period not over"
    amounts: uint256 = self._records[channel_id].amounts
    claimed: uint256 = amounts >> _CLAIMED_SHIFT
    # We do not check for an underflow here, as `claimed <= deposit`
    # always holds (`_settle` enforces it).
    refund: uint256 = unsafe_sub(amounts & _AMOUNT_MASK, claimed)
    self._records[channel_id].head = self._pack_head(payer, STATUS_CLOSED, closes_at)
    log ChannelClosed(channel_id=channel_id, claimed=claimed, refund=refund)
    self._push(self._records[channel_id].token, payer, refund)


# -- internals -----------------------------------------------------------------------------------


@internal
@view
def _channel_id(payer: address, payee: address, token: address, salt: bytes32) -> bytes32:
    """
    @dev See `channel_id`.
    @param payer The 20-byte payer address.
    @param payee The 20-byte payee address.
    @param token The 20-byte token address.
    @param salt The 32-byte salt.
    @return bytes32 The 32-byte channel id.
    """
    return keccak256(abi_encode(payer, payee, token, salt, self, chain.id))


@internal
@pure
def _open_nonce(channel_id: bytes32, signer: address) -> bytes32:
    """
    @dev See `open_nonce`.
    @param channel_id The 32-byte channel id.
    @param signer The 20-byte voucher signer (or zero).
    @return bytes32 The 32-byte EIP-3009 nonce.
    """
    return keccak256(abi_encode(OPEN_NONCE_TAG, channel_id, signer))


@internal
@pure
def _top_up_nonce(channel_id: bytes32, salt: bytes32) -> bytes32:
    """
    @dev See `top_up_nonce`.
    @param channel_id The 32-byte channel id.
    @param salt The 32-byte per-top-up salt.
    @return bytes32 The 32-byte EIP-3009 nonce.
    """
    return keccak256(abi_encode(TOP_UP_NONCE_TAG, channel_id, salt))


@internal
@view
def _voucher_digest(channel_id: bytes32, cumulative_amount: uint256) -> bytes32:
    """
    @dev See `voucher_digest`.
    @param channel_id The 32-byte channel id.
    @param cumulative_amount The 32-byte running total.
    @return bytes32 The 32-byte EIP-712 digest.
    """
    return eip712_domain_separator._hash_typed_data_v4(
        keccak256(abi_encode(VOUCHER_TYPEHASH, channel_id, cumulative_amount))
    )


@internal
@view
def _recover_voucher_signer(channel_id: bytes32, cumulative_amount: uint256, signature: Bytes[65]) -> address:
    """
    @dev Returns who signed the voucher, or the zero address if
         the signature is malformed: not 65 bytes, `s` above
         snekmate's malleability threshold, or no key recovered.
    @notice snekmate's `ecdsa` recovery reverts on a malformed
            signature, which would let one bad voucher sink a whole
            `claim_many`; this applies the same `s` rule without
            reverting, and refuses EIP-2098 64-byte signatures so
            every voucher has exactly one spelling. `ecrecover`
            itself rejects a `v` other than 27 or 28.
    @param channel_id The 32-byte channel id.
    @param cumulative_amount The 32-byte running total.
    @param signature The 65-byte signature `r || s || v`.
    @return address The 20-byte signer, or zero.
    """
    if len(signature) != _SIGNATURE_LENGTH:
        return empty(address)
    r: uint256 = extract32(signature, 0, output_type=uint256)
    s: uint256 = extract32(signature, 32, output_type=uint256)
    v: uint256 = convert(slice(signature, 64, 1), uint256)
    if s > ecdsa._MALLEABILITY_THRESHOLD:
        return empty(address)
    return ecrecover(self._voucher_digest(channel_id, cumulative_amount), v, r, s)


@internal
def _open(payer: address, payee: address, token: address, amount: uint256, salt: bytes32, signer: address) -> bytes32:
    """
    @dev Checks and records a new channel and logs it; the caller
         then moves the deposit in.
    @param payer The 20-byte payer address.
    @param payee The 20-byte payee address.
    @param token The 20-byte token address.
    @param amount The 32-byte deposit.
    @param salt The 32-byte salt.
    @param signer The 20-byte voucher signer, or zero.
    @return bytes32 The 32-byte channel id.
    """
    assert payee != empty(address) and payee != self, "Channel: invalid payee"
    assert signer != payee, "Channel: signer is the payee"
    assert token.is_contract, "Channel: token is not a contract"
    assert amount != 0, "Channel: amount is zero"
    assert amount <= _AMOUNT_MASK, "Channel: deposit too large"
    channel_id: bytes32 = self._channel_id(payer, payee, token, salt)
    assert self._records[channel_id].head == 0, "Channel: channel id already used"
    self._records[channel_id].head = self._pack_head(payer, STATUS_OPEN, 0)
    self._records[channel_id].payee = payee
    self._records[channel_id].token = token
    if signer != empty(address):
        self._records[channel_id].signer = signer
    self._records[channel_id].amounts = amount  # claimed is zero
    log ChannelOpened(
        channel_id=channel_id, payer=payer, payee=payee, token=token, signer=signer, salt=salt, deposit=amount
    )
    return channel_id


@internal
def _top_up(channel_id: bytes32, amount: uint256) -> address:
    """
    @dev Checks and records a top-up and logs it; the caller then
         moves the tokens in.
    @param channel_id The 32-byte channel id.
    @param amount The 32-byte amount to add.
    @return address The 20-byte token of the channel.
    """
    self._require_open(self._status(self._records[channel_id].head))
    assert amount != 0, "Channel: amount is zero"
    amounts: uint256 = self._records[channel_id].amounts
    # Checked: the new deposit must stay within 128 bits.
    deposit: uint256 = (amounts & _AMOUNT_MASK) + amount
    assert deposit <= _AMOUNT_MASK, "Channel: deposit too large"
    self._records[channel_id].amounts = (amounts & ~_AMOUNT_MASK) | deposit
    log ChannelToppedUp(channel_id=channel_id, amount=amount, deposit=deposit)
    return self._records[channel_id].token


@internal
def _settle(channel_id: bytes32, cumulative_amount: uint256, signature: Bytes[65]) -> (uint8, address, address, uint256):
    """
    @dev Checks a voucher and, if it is good, records the claim and
         logs `Claimed`; moves no tokens. Cheap checks come first
         and only the storage a check needs is read.
    @param channel_id The 32-byte channel id.
    @param cumulative_amount The 32-byte running total.
    @param signature The 65-byte voucher signature.
    @return uint8 Zero, or the `SKIP_*` reason it was refused.
    @return address The 20-byte payee.
    @return address The 20-byte token.
    @return uint256 The 32-byte amount now owed to the payee.
    """
    head: uint256 = self._records[channel_id].head
    status: uint8 = self._status(head)
    if status == STATUS_NONE:
        return SKIP_NO_CHANNEL, empty(address), empty(address), 0
    if status == STATUS_CLOSED:
        return SKIP_CLOSED, empty(address), empty(address), 0
    amounts: uint256 = self._records[channel_id].amounts
    deposit: uint256 = amounts & _AMOUNT_MASK
    claimed: uint256 = amounts >> _CLAIMED_SHIFT
    if cumulative_amount <= claimed:
        return SKIP_NOT_ABOVE_CLAIMED, empty(address), empty(address), 0
    if cumulative_amount > deposit:
        return SKIP_OVER_DEPOSIT, empty(address), empty(address), 0
    signer: address = self._recover_voucher_signer(channel_id, cumulative_amount, signature)
    # `signer` is never zero past the first test, and a stored
    # zero `signer` (none named) therefore never matches.
    if signer == empty(address) or (signer != self._payer(head) and signer != self._records[channel_id].signer):
        return SKIP_BAD_SIGNATURE, empty(address), empty(address), 0
    # `cumulative_amount <= deposit < 2**128`, so it fits its field.
    self._records[channel_id].amounts = deposit | (cumulative_amount << _CLAIMED_SHIFT)
    payee: address = self._records[channel_id].payee
    # We do not check for an underflow here, as
    # `cumulative_amount > claimed` was checked above.
    amount: uint256 = unsafe_sub(cumulative_amount, claimed)
    log Claimed(channel_id=channel_id, payee=payee, amount=amount, cumulative_amount=cumulative_amount)
    return 0, payee, self._records[channel_id].token, amount


@internal
@pure
def _require_settled(reason: uint8):
    """
    @dev Reverts with the message matching a `SKIP_*` reason.
    @param reason Zero (no revert) or a `SKIP_*` code.
    """
    if reason == 0:
        return
    self._require_live_reason(reason)
    assert reason != SKIP_NOT_ABOVE_CLAIMED, "Channel: voucher does not exceed the claimed amount"
    assert reason != SKIP_OVER_DEPOSIT, "Channel: voucher exceeds the deposit"
    raise "Channel: invalid voucher signature"


@internal
@pure
def _require_live_reason(reason: uint8):
    """
    @dev Reverts if `reason` says there is no channel or it is closed.
    @param reason A `SKIP_*` code.
    """
    assert reason != SKIP_NO_CHANNEL, "Channel: no such channel"
    assert reason != SKIP_CLOSED, "Channel: channel is closed"


@internal
@pure
def _require_live(status: uint8):
    """
    @dev Reverts unless the channel exists and is not closed.
    @param status The channel's status.
    """
    assert status != STATUS_NONE, "Channel: no such channel"
    assert status != STATUS_CLOSED, "Channel: channel is closed"


@internal
@pure
def _require_open(status: uint8):
    """
    @dev Reverts unless the channel is open with no close requested.
    @param status The channel's status.
    """
    self._require_live(status)
    assert status == STATUS_OPEN, "Channel: close requested"


@internal
def _pull(token: address, sender: address, amount: uint256):
    """
    @dev Moves `amount` tokens from `sender` (who approved them) to
         this contract.
    @notice Tokens that return nothing are accepted, as are those
            returning `True`; a token without code is refused.
    @param token The 20-byte token address.
    @param sender The 20-byte address the tokens come from.
    @param amount The 32-byte amount.
    """
    assert extcall IERC20(token).transferFrom(sender, self, amount, default_return_value=True), "Channel: transfer failed"


@internal
def _push(token: address, receiver: address, amount: uint256):
    """
    @dev Sends `amount` tokens to `receiver`; does nothing for zero.
    @param token The 20-byte token address.
    @param receiver The 20-byte address the tokens go to.
    @param amount The 32-byte amount.
    """
    if amount == 0:
        return
    assert extcall IERC20(token).transfer(receiver, amount, default_return_value=True), "Channel: transfer failed"


@internal
@pure
def _pack_head(payer: address, status: uint8, closes_at: uint256) -> uint256:
    """
    @dev Packs the first storage slot of a channel.
    @notice `closes_at` fits its 64 bits: it is a block timestamp
            plus at most a year (the conversion would revert).
    @param payer The 20-byte payer address.
    @param status The channel status.
    @param closes_at The timestamp the grace period ends, or zero.
    @return uint256 The 32-byte packed slot.
    """
    return (
        convert(payer, uint256)
        | (convert(status, uint256) << _STATUS_SHIFT)
        | (convert(convert(closes_at, uint64), uint256) << _CLOSES_AT_SHIFT)
    )


@internal
@pure
def _payer(head: uint256) -> address:
    """
    @dev Unpacks the payer from a channel's first storage slot.
    @param head The 32-byte packed slot.
    @return address The 20-byte payer address.
    """
    return convert(convert(head & _ADDRESS_MASK, uint160), address)


@internal
@pure
def _status(head: uint256) -> uint8:
    """
    @dev Unpacks the status from a channel's first storage slot.
    @param head The 32-byte packed slot.
    @return uint8 The channel status.
    """
    return convert((head >> _STATUS_SHIFT) & 255, uint8)
