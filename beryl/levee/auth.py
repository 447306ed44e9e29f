"""
Token validation for document connections.

A L{TokenValidator} turns a connection's token into L{Claims}; L{authorize}
then checks those claims against the request and decides the granted mode.
Validation is pluggable because Beryl signs no tokens itself: a host plugs
in its JWT verification (Levee's was HS256 with a per-tenant secret).

The default refuses every token.  Only for development,
C{token_validator(insecure_dev_tokens=True)} accepts any token with full
scopes, as Tinylicious does, and says so in the log.
"""

from __future__ import annotations

from typing import Callable

import attrs
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from beryl.levee.protocol import (
    DOC_READ,
    DOC_WRITE,
    SUMMARY_WRITE,
    Claims,
    ConnectDocumentError,
)
from beryl.levee.requests import READ, WRITE, ConnectRequest

__all__ = [
    "Grant",
    "InsecureDevTokens",
    "TokenValidator",
    "authorize",
    "refuse_all_tokens",
    "token_validator",
]

TokenValidator = Callable[[str, str, str], "Claims | ConnectDocumentError"]
"""
C{validate(tenant_id, document_id, token)}: the token's claims when its
signature (and whatever else the host checks) is good, else the
L{ConnectDocumentError} to send, normally 401 C{Invalid authentication token}.
Tenant, document, expiry and scopes are checked afterwards by
L{authorize}; a validator must not log the token.
"""


def refuse_all_tokens(
    tenant_id: str, document_id: str, token: str
) -> ConnectDocumentError:
    """
    The default L{TokenValidator}: no token is valid until the host
    configures a real validator.
    """
    return ConnectDocumentError(401, "Invalid authentication token")


class InsecureDevTokens:
    """
    A L{TokenValidator} for development only: any token is accepted for any
    document with the scopes C{doc:read}, C{doc:write} and
    C{summary:write}, and no user (the session takes the user the client
    declares).
    """

    log = Logger()

    def __init__(self, clock: IReactorTime, lifetime: int = 3600) -> None:
        """
        @param clock: gives C{iat}.
        @param lifetime: seconds from C{iat} to C{exp}.
        """
        self.clock = clock
        self.lifetime = lifetime
        self.log.warn(
            "Levee documents accept any token with full scopes "
            "(insecure_dev_tokens); never enable this in production"
        )

    def __call__(self, tenant_id: str, document_id: str, token: str) -> Claims:
        """Grant full scopes on the document, whatever the token."""
        now = int(self.clock.seconds())
        return Claims(
            tenant_id=tenant_id,
            document_id=document_id,
            scopes=(DOC_READ, DOC_WRITE, SUMMARY_WRITE),
            user=None,
            issued_at=now,
            expires_at=now + self.lifetime,
        )


def token_validator(
    *, insecure_dev_tokens: bool = False, clock: IReactorTime | None = None
) -> TokenValidator:
    """
    The validator to use when the host supplies none.

    @param insecure_dev_tokens: accept every token (development only).
    @param clock: required with C{insecure_dev_tokens}.
    @return: L{refuse_all_tokens}, or an L{InsecureDevTokens}.
    """
    if not insecure_dev_tokens:
        return refuse_all_tokens
    if clock is None:
        raise ValueError("insecure_dev_tokens needs a clock")
    return InsecureDevTokens(clock)


@attrs.frozen
class Grant:
    """
    What a connection may do.

    @ivar mode: C{"write"} only when it was requested and the claims allow
        it; a write request with a read-only token is downgraded to
        C{"read"}, as Routerlicious does, rather than refused.
    """

    mode: str
    claims: Claims


def authorize(
    request: ConnectRequest, validate: TokenValidator, now: float
) -> Grant | ConnectDocumentError:
    """
    Validate the request's token and check its claims: they must be for the
    requested tenant and document, unexpired at C{now} (epoch seconds), and
    grant C{doc:read}.

    @return: the grant, or the C{connect_document_error} to send.
    """
    claims = validate(request.tenant_id, request.document_id, request.token)
    if isinstance(claims, ConnectDocumentError):
        return claims
    if claims.tenant_id != request.tenant_id:
        return ConnectDocumentError(403, "Token not valid for this tenant")
    if claims.document_id != request.document_id:
        return ConnectDocumentError(403, "Token not valid for this document")
    if claims.expires_at <= now:
        return ConnectDocumentError(401, "Token has expired")
    if DOC_READ not in claims.scopes:
        return ConnectDocumentError(403, "Token missing required scope: doc:read")
    mode = WRITE if request.mode == WRITE and claims.can_write() else READ
    return Grant(mode, claims)
