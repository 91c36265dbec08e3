"""EIP-712 signing for EIP-3009 and EIP-2612, on top of eth-account.

`Signer` is the seam: higher layers get one, never a key. `sign_transfer_authorization` and
`recover_transfer_authorizer` are the pair an x402 "exact" payment needs; recovery rejects
malformed and high-s signatures with ValueError, as the token would.
"""

from agent_pay.signing.eip3009 import (
    CANCEL_AUTHORIZATION_FIELDS,
    RECEIVE_WITH_AUTHORIZATION_FIELDS,
    TRANSFER_WITH_AUTHORIZATION_FIELDS,
    CancelAuthorization,
    TransferAuthorization,
    cancel_authorization_typed_data,
    random_nonce,
    receive_with_authorization_typed_data,
    recover_transfer_authorizer,
    sign_transfer_authorization,
    transfer_with_authorization_typed_data,
)
from agent_pay.signing.permit import PERMIT_FIELDS, Permit, permit_typed_data
from agent_pay.signing.signature import (
    SECP256K1_N,
    recover_typed_data_signer,
    split_signature,
)
from agent_pay.signing.signer import DEFAULT_KEY_VARIABLE, LocalSigner, Signer
from agent_pay.signing.typed_data import EIP712_DOMAIN_FIELDS, TokenDomain, build_typed_data

__all__ = [
    "CANCEL_AUTHORIZATION_FIELDS",
    "DEFAULT_KEY_VARIABLE",
    "EIP712_DOMAIN_FIELDS",
    "PERMIT_FIELDS",
    "RECEIVE_WITH_AUTHORIZATION_FIELDS",
    "SECP256K1_N",
    "TRANSFER_WITH_AUTHORIZATION_FIELDS",
    "CancelAuthorization",
    "LocalSigner",
    "Permit",
    "Signer",
    "TokenDomain",
    "TransferAuthorization",
    "build_typed_data",
    "cancel_authorization_typed_data",
    "permit_typed_data",
    "random_nonce",
    "receive_with_authorization_typed_data",
    "recover_transfer_authorizer",
    "recover_typed_data_signer",
    "sign_transfer_authorization",
    "split_signature",
    "transfer_with_authorization_typed_data",
]
