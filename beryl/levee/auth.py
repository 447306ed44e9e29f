"""
Token validation for document connections.

A L{TokenValidator} turns a connection's token into L{Claims}; L{authorize}
then checks those claims against the request and decides the granted mode.
Validation is pluggable.  L{TenantTokens} is the one Beryl ships: HS256 JWTs
(verified by PyJWT) signed with a per-tenant secret, carrying Fluid's
C{ITokenClaims} (C{documentId}, C{tenantId}, C{scopes}, C{user}, C{iat},
C{exp}, C{ver}); L{mint_token} makes them.

The default refuses every token.  Only for development,
C{token_validator(insecure_dev_tokens=True)} accepts any token with full
scopes, as Tinylicious does, and says so in the log.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Callable, Mapping, Sequence

import attrs
import jwt
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
    "TenantTokens",
    "authorize_request",
    "mint_token",
    "parse_tenants",
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


_INVALID = ConnectDocumentError(401, "Invalid authentication token")


class TenantTokens:
    """
    A L{TokenValidator} for HS256 JWTs signed with the tenant's secret.

    The signature and the claims' types are checked here; tenant,
    document, expiry (against the injected clock, not the system time) and
    scopes are checked by L{authorize} and L{authorize_request}.
    """

    log = Logger()

    def __init__(self, secrets: Mapping[str, str]) -> None:
        """
        @param secrets: each tenant id's signing secret; tokens for other
            tenants are refused.
        """
        self.secrets = dict(secrets)
        for tenant, secret in sorted(self.secrets.items()):
            if len(secret.encode("utf-8")) < 32:
                self.log.warn(
                    "The token secret of Levee tenant {tenant} is shorter than "
                    "32 bytes; HS256 wants at least 32",
                    tenant=tenant,
                )

    def __call__(
        self, tenant_id: str, document_id: str, token: str
    ) -> Claims | ConnectDocumentError:
        """The verified claims of C{token}, or 401 C{Invalid authentication token}."""
        secret = self.secrets.get(tenant_id)
        if secret is None or not token:
            return _INVALID
        try:
            payload = jwt.decode(
                token,
                secret,
                algorithms=["HS256"],
                options={
                    "verify_exp": False,
                    "verify_iat": False,
                    "verify_nbf": False,
                    "require": ["exp", "tenantId", "documentId"],
                },
            )
        except jwt.PyJWTError:
            return _INVALID
        return _claims_of(payload)


def _claims_of(payload: Mapping[str, Any]) -> Claims | ConnectDocumentError:
    """Fluid's C{ITokenClaims} from a verified JWT payload."""
    tenant, document = payload.get("tenantId"), payload.get("documentId")
    scopes, user = payload.get("scopes", []), payload.get("user")
    expires, issued = payload.get("exp"), payload.get("iat", 0)
    if not (isinstance(tenant, str) and isinstance(document, str)):
        return _INVALID
    if not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes):
        return _INVALID
    if user is not None and not (isinstance(user, dict) and "id" in user):
        return _INVALID
    if not isinstance(expires, (int, float)) or not isinstance(issued, (int, float)):
        return _INVALID
    version = payload.get("ver", "1.0")
    token_id = payload.get("jti")
    return Claims(
        tenant_id=tenant,
        document_id=document,
        scopes=tuple(scopes),
        user=user,
        issued_at=int(issued),
        expires_at=int(expires),
        version=version if isinstance(version, str) else "1.0",
        token_id=token_id if isinstance(token_id, str) else None,
    )


def mint_token(
    tenant_id: str,
    document_id: str,
    secret: str,
    *,
    scopes: Sequence[str] = (DOC_READ, DOC_WRITE, SUMMARY_WRITE),
    user: Mapping[str, Any] | None = None,
    lifetime: int = 3600,
    now: float | None = None,
) -> str:
    """
    An HS256 JWT that L{TenantTokens} accepts: C{ITokenClaims} for one
    document.

    @param now: the issue time in epoch seconds; the system time by default.
    """
    issued = int(time.time() if now is None else now)
    claims = {
        "documentId": document_id,
        "tenantId": tenant_id,
        "scopes": list(scopes),
        "user": dict(user) if user is not None else {"id": str(uuid.uuid4())},
        "iat": issued,
        "exp": issued + lifetime,
        "ver": "1.0",
        "jti": str(uuid.uuid4()),
    }
    return jwt.encode(claims, secret, algorithm="HS256")


def parse_tenants(lines: Sequence[str]) -> dict[str, str]:
    """
    Tenant secrets from C{ID:SECRET} lines; blank lines and lines starting
    with C{#} are skipped.

    @raise ValueError: naming the first bad line.
    """
    secrets: dict[str, str] = {}
    for number, line in enumerate(lines, 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        tenant, colon, secret = text.partition(":")
        if not colon or not tenant.strip() or not secret.strip():
            raise ValueError(f"line {number}: expected TENANT:SECRET")
        secrets[tenant.strip()] = secret.strip()
    return secrets


def token_validator(
    *,
    insecure_dev_tokens: bool = False,
    clock: IReactorTime | None = None,
    tenants: Mapping[str, str] | None = None,
) -> TokenValidator:
    """
    The validator to use when the host supplies none.

    @param insecure_dev_tokens: accept every token (development only).
    @param clock: required with C{insecure_dev_tokens}.
    @param tenants: tenant secrets; JWTs signed with them are accepted.
    @return: an L{InsecureDevTokens}, a L{TenantTokens}, or
        L{refuse_all_tokens} when there is no tenant.
    """
    if not insecure_dev_tokens:
        if tenants:
            return TenantTokens(tenants)
        Logger().warn(
            "Levee has no tenants: every token is refused (give "
            "--levee-tenant ID:SECRET or --levee-tenants-file)"
        )
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


def authorize_request(
    validate: TokenValidator,
    tenant_id: str,
    document_id: str | None,
    authorization: str | None,
    now: float,
    scopes: Sequence[str],
) -> Claims | ConnectDocumentError:
    """
    Check the C{Authorization: Bearer} header of an HTTP request.

    @param document_id: the document the route is about, or C{None} for
        tenant-wide routes (git objects are shared by a tenant's documents).
    @param scopes: the request needs at least one of them.
    @return: the claims, or a 401 (no, bad or expired token) or 403 (other
        tenant or document, missing scope) error.
    """
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return ConnectDocumentError(401, "Missing authentication token")
    claims = validate(tenant_id, document_id or "", token.strip())
    if isinstance(claims, ConnectDocumentError):
        return claims
    if claims.tenant_id != tenant_id:
        return ConnectDocumentError(403, "Token not valid for this tenant")
    if document_id is not None and claims.document_id != document_id:
        return ConnectDocumentError(403, "Token not valid for this document")
    if claims.expires_at <= now:
        return ConnectDocumentError(401, "Token has expired")
    if not any(scope in claims.scopes for scope in scopes):
        return ConnectDocumentError(403, f"Token missing required scope: {scopes[0]}")
    return claims
