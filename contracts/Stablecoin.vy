# pragma version ~=0.4.3
# pragma evm-version prague
# pragma nonreentrancy off
"""
@title Owner-Minted ERC-20 Stablecoin with EIP-2612 and EIP-3009
@custom:contract-name Stablecoin
@license GNU Affero General Public License v3.0 only
@notice An ERC-20 token for pay-per-read: the deployer becomes
        the owner, only the owner can mint, and anyone can pay
        with a signed authorisation instead of a transaction of
        their own.
        The token is composed from snekmate's audited modules
        (https://github.com/pcaversaccio/snekmate, v0.1.2):
        - `erc20`: ERC-20 (https://eips.ethereum.org/EIPS/eip-20)
          and EIP-2612 `permit` (https://eips.ethereum.org/EIPS/eip-2612),
        - `ownable`: the owner role,
        - `eip712_domain_separator`: the EIP-712 domain and
          EIP-5267 `eip712Domain`,
        - `ecdsa`: signature recovery that rejects malleable
          (upper-range) `s` values and the zero address.
        On top of them this contract adds EIP-3009 "transfer with
        authorisation" (https://eips.ethereum.org/EIPS/eip-3009)
        with the same function selectors, EIP-712 type strings,
        events and checks as USDC's `FiatTokenV2`, so that x402
        clients and facilitators written for USDC work unchanged:
        - `transferWithAuthorization`,
        - `receiveWithAuthorization`,
        - `cancelAuthorization`,
        - `authorizationState`.
        The EIP-712 domain is `EIP712Domain(string name,string version,
        uint256 chainId,address verifyingContract)` with the name and
        version given at deployment and this contract as verifying
        contract.
        snekmate's minter role is not exposed: `mint` checks the
        owner directly. (snekmate's `erc20` still keeps its internal
        `is_minter` map in step with the owner through the exported
        `transfer_ownership` and `renounce_ownership`, and logs
        `RoleMinterChanged` when it does.)
"""


# @dev We import and implement the built-in `IERC20` and
# `IERC20Detailed` interfaces; the `erc20` module provides
# every function they require.
from ethereum.ercs import IERC20
implements: IERC20

from ethereum.ercs import IERC20Detailed
implements: IERC20Detailed


# @dev The `ownable` module holds the owner; `erc20` uses it
# for its ownership functions, so we initialise it here and
# hand it to `erc20`.
from snekmate.auth import ownable
initializes: ownable


# @dev The `erc20` module; it initialises its own
# `eip712_domain_separator`, which we reach through it.
from snekmate.tokens import erc20
initializes: erc20[ownable := ownable]


# @dev The stateless `ecdsa` module needs no `uses` declaration.
from snekmate.utils import ecdsa


# @dev The functions we expose from the modules. We export
# each one by name rather than `erc20.__interface__` so that
# snekmate's minter-role functions (`mint`, `set_minter`,
# `is_minter`) and `burn`/`burn_from` stay internal.
exports: (
    erc20.name,
    erc20.symbol,
    erc20.decimals,
    erc20.totalSupply,
    erc20.balanceOf,
    erc20.allowance,
    erc20.transfer,
    erc20.transferFrom,
    erc20.approve,
    erc20.permit,
    erc20.nonces,
    erc20.DOMAIN_SEPARATOR,
    erc20.eip712Domain,
    erc20.owner,
    erc20.transfer_ownership,
    erc20.renounce_ownership,
)


# @dev The 32-byte type hash of `transferWithAuthorization`,
# identical to USDC's `TRANSFER_WITH_AUTHORIZATION_TYPEHASH`.
_TRANSFER_WITH_AUTHORIZATION_TYPE_HASH: constant(bytes32) = keccak256(
    "TransferWithAuthorization(address from,address to,uint256 value,uint256 validAfter,uint256 validBefore,bytes32 nonce)"
)


# @dev The 32-byte type hash of `receiveWithAuthorization`,
# identical to USDC's `RECEIVE_WITH_AUTHORIZATION_TYPEHASH`.
_RECEIVE_WITH_AUTHORIZATION_TYPE_HASH: constant(bytes32) = keccak256(
    "ReceiveWithAuthorization(address from,address to,uint256 value,uint256 validAfter,uint256 validBefore,bytes32 nonce)"
)


# @dev The 32-byte type hash of `cancelAuthorization`,
# identical to USDC's `CANCEL_AUTHORIZATION_TYPEHASH`.
_CANCEL_AUTHORIZATION_TYPE_HASH: constant(bytes32) = keccak256(
    "CancelAuthorization(address authorizer,bytes32 nonce)"
)


# @dev Whether an authoriser's 32-byte nonce has been
# used or cancelled. Nonces are random, not sequential,
# so that many authorisations can be in flight at once.
_authorization_states: HashMap[address, HashMap[bytes32, bool]]


# @dev Emitted when an authorisation is used.
event AuthorizationUsed:
    authorizer: indexed(address)
    nonce: indexed(bytes32)


# @dev Emitted when an authorisation is cancelled.
event AuthorizationCanceled:
    authorizer: indexed(address)
    nonce: indexed(bytes32)


@deploy
@payable
def __init__(
    name_: String[25], symbol_: String[5], decimals_: uint8, name_eip712_: String[50], version_eip712_: String[20]
):
    """
    @dev Sets the token metadata and the EIP-712 domain, and
         makes the deployer the owner. To omit the opcodes for
         checking the `msg.value` in the creation-time EVM
         bytecode, the constructor is declared as `payable`.
    @param name_ The maximum 25-character name of the token.
    @param symbol_ The maximum 5-character symbol of the token.
    @param decimals_ The 1-byte decimal places of the token.
    @param name_eip712_ The maximum 50-character name of the
           EIP-712 signing domain (x402's `extra.name`).
    @param version_eip712_ The maximum 20-character version of
           the EIP-712 signing domain (x402's `extra.version`).
    """
    ownable.__init__()
    erc20.__init__(name_, symbol_, decimals_, name_eip712_, version_eip712_)


@external
def mint(owner: address, amount: uint256):
    """
    @dev Creates `amount` tokens and assigns them to `owner`,
         increasing the total supply.
    @notice Only the contract owner can mint. Note that `owner`
            cannot be the zero address, and that the total supply
            cannot overflow (checked arithmetic in `erc20._mint`).
    @param owner The 20-byte address that receives the tokens.
    @param amount The 32-byte token amount to be created.
    """
    assert msg.sender == ownable.owner, "Stablecoin: caller is not the owner"
    erc20._mint(owner, amount)


@external
@view
def authorizationState(authorizer: address, nonce: bytes32) -> bool:
    """
    @dev Returns whether an authorisation has been used or cancelled.
    @param authorizer The 20-byte address of the authoriser.
    @param nonce The 32-byte nonce of the authorisation.
    @return bool `True` if the nonce is used or cancelled,
            `False` if it is still available.
    """
    return self._authorization_states[authorizer][nonce]


@external
def transferWithAuthorization(
    from_: address,
    to: address,
    value_: uint256,
    validAfter: uint256,
    validBefore: uint256,
    nonce: bytes32,
    v: uint8,
    r: bytes32,
    s: bytes32,
):
    """
    @dev Moves `value_` tokens from `from_` to `to`, given a
         signed authorisation from `from_` (EIP-3009). Anyone
         may submit it; the selector equals USDC's
         `transferWithAuthorization(address,address,uint256,
         uint256,uint256,bytes32,uint8,bytes32,bytes32)`.
    @notice The authorisation is valid strictly after `validAfter`
            and strictly before `validBefore` (block timestamps),
            and each `nonce` can be used once. WARNING: anyone who
            sees the signature can submit it, front-running the
            payee; contracts that act on the receipt should use
            `receiveWithAuthorization` instead.
    @param from_ The 20-byte payer (authoriser) address.
    @param to The 20-byte payee address.
    @param value_ The 32-byte token amount to be transferred.
    @param validAfter The 32-byte timestamp after which the
           authorisation is valid.
    @param validBefore The 32-byte timestamp before which the
           authorisation is valid.
    @param nonce The 32-byte unique nonce chosen by the payer.
    @param v The secp256k1 1-byte signature parameter `v`.
    @param r The secp256k1 32-byte signature parameter `r`.
    @param s The secp256k1 32-byte signature parameter `s`.
    """
    self._require_valid_authorization(from_, nonce, validAfter, validBefore)
    struct_hash: bytes32 = keccak256(
        abi_encode(_TRANSFER_WITH_AUTHORIZATION_TYPE_HASH, from_, to, value_, validAfter, validBefore, nonce)
    )
    self._require_valid_signature(from_, struct_hash, v, r, s)
    self._mark_authorization_as_used(from_, nonce)
    erc20._transfer(from_, to, value_)


@external
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
):
    """
    @dev Moves `value_` tokens from `from_` to the caller, given
         a signed authorisation from `from_` (EIP-3009). Unlike
         `transferWithAuthorization`, only the payee may submit
         it, so the payment cannot be front-run.
    @notice The caller must be `to`. Validity window and nonce
            rules are those of `transferWithAuthorization`; the
            signed type is `ReceiveWithAuthorization`.
    @param from_ The 20-byte payer (authoriser) address.
    @param to The 20-byte payee address; must be the caller.
    @param value_ The 32-byte token amount to be transferred.
    @param validAfter The 32-byte timestamp after which the
           authorisation is valid.
    @param validBefore The 32-byte timestamp before which the
           authorisation is valid.
    @param nonce The 32-byte unique nonce chosen by the payer.
    @param v The secp256k1 1-byte signature parameter `v`.
    @param r The secp256k1 32-byte signature parameter `r`.
    @param s The secp256k1 32-byte signature parameter `s`.
    """
    assert to == msg.sender, "Stablecoin: caller must be the payee"
    self._require_valid_authorization(from_, nonce, validAfter, validBefore)
    struct_hash: bytes32 = keccak256(
        abi_encode(_RECEIVE_WITH_AUTHORIZATION_TYPE_HASH, from_, to, value_, validAfter, validBefore, nonce)
    )
    self._require_valid_signature(from_, struct_hash, v, r, s)
    self._mark_authorization_as_used(from_, nonce)
    erc20._transfer(from_, to, value_)


@external
def cancelAuthorization(authorizer: address, nonce: bytes32, v: uint8, r: bytes32, s: bytes32):
    """
    @dev Cancels an unused authorisation, given a signed
         `CancelAuthorization` from its authoriser (EIP-3009).
    @notice Anyone may submit the cancellation. Afterwards
            `authorizationState(authorizer, nonce)` is `True`
            and any authorisation with that nonce reverts.
    @param authorizer The 20-byte authoriser address.
    @param nonce The 32-byte nonce of the authorisation.
    @param v The secp256k1 1-byte signature parameter `v`.
    @param r The secp256k1 32-byte signature parameter `r`.
    @param s The secp256k1 32-byte signature parameter `s`.
    """
    self._require_unused_authorization(authorizer, nonce)
    struct_hash: bytes32 = keccak256(abi_encode(_CANCEL_AUTHORIZATION_TYPE_HASH, authorizer, nonce))
    self._require_valid_signature(authorizer, struct_hash, v, r, s)
    self._authorization_states[authorizer][nonce] = True
    log AuthorizationCanceled(authorizer=authorizer, nonce=nonce)


@internal
@view
def _require_unused_authorization(authorizer: address, nonce: bytes32):
    """
    @dev Reverts if the authorisation has been used or cancelled.
    @param authorizer The 20-byte authoriser address.
    @param nonce The 32-byte nonce of the authorisation.
    """
    assert not self._authorization_states[authorizer][nonce], "Stablecoin: authorization is used or canceled"


@internal
@view
def _require_valid_authorization(authorizer: address, nonce: bytes32, valid_after: uint256, valid_before: uint256):
    """
    @dev Reverts unless the current block timestamp lies strictly
         between `valid_after` and `valid_before` and the nonce is
         unused (the same checks, in the same order, as USDC).
    @param authorizer The 20-byte authoriser address.
    @param nonce The 32-byte nonce of the authorisation.
    @param valid_after The 32-byte timestamp after which the
           authorisation is valid.
    @param valid_before The 32-byte timestamp before which the
           authorisation is valid.
    """
    assert block.timestamp > valid_after, "Stablecoin: authorization is not yet valid"
    assert block.timestamp < valid_before, "Stablecoin: authorization is expired"
    self._require_unused_authorization(authorizer, nonce)


@internal
@view
def _require_valid_signature(signer: address, struct_hash: bytes32, v: uint8, r: bytes32, s: bytes32):
    """
    @dev Reverts unless `(v, r, s)` is `signer`'s EIP-712 signature
         of `struct_hash` under this contract's domain.
    @notice `ecdsa._recover_vrs` itself reverts (with its own
            `ecdsa:` messages) on an upper-range `s` value or when
            recovery fails, so a zero `signer` can never match.
    @param signer The 20-byte address that must have signed.
    @param struct_hash The 32-byte EIP-712 hash of the struct.
    @param v The secp256k1 1-byte signature parameter `v`.
    @param r The secp256k1 32-byte signature parameter `r`.
    @param s The secp256k1 32-byte signature parameter `s`.
    """
    digest: bytes32 = erc20.eip712_domain_separator._hash_typed_data_v4(struct_hash)
    recovered: address = ecdsa._recover_vrs(digest, convert(v, uint256), convert(r, uint256), convert(s, uint256))
    assert recovered == signer, "Stablecoin: invalid signature"


@internal
def _mark_authorization_as_used(authorizer: address, nonce: bytes32):
    """
    @dev Marks the authorisation as used and logs it.
    @param authorizer The 20-byte authoriser address.
    @param nonce The 32-byte nonce of the authorisation.
    """
    self._authorization_states[authorizer][nonce] = True
    log AuthorizationUsed(authorizer=authorizer, nonce=nonce)
