"""
Levee: a Fluid Framework ordering service behind Phoenix channels
C{document:<tenantId>:<documentId>}, compatible with the Levee driver.

This package is the pure core: inbound request parsing
(L{beryl.levee.requests}), the outbound message shapes
(L{beryl.levee.protocol}), token checks (L{beryl.levee.auth}), the
per-document sequencer (L{beryl.levee.sequencer}) that returns effects
(L{beryl.levee.effects}) instead of doing I/O, its session registry
(L{beryl.levee.registry}) and op store (L{beryl.levee.store}).  Around it:
git-style objects (L{beryl.levee.git}), SQLite storage
(L{beryl.levee.storage}), the HTTP routes (L{beryl.levee.http}), the
channel adapter (L{beryl.levee.channel}) and L{beryl.levee.service}, which
wires them together.  A channel adapter connects the core to sockets::

    request = parse_connect(payload, tenant_id, document_id)
    grant = authorize(request, validate, clock.seconds())
    connected = sessions.session_for(tenant_id, document_id).connect(request, grant)
    for effect in connected.effects: ...
"""

from beryl.levee.auth import (
    Grant,
    InsecureDevTokens,
    TokenValidator,
    authorize,
    refuse_all_tokens,
    token_validator,
)
from beryl.levee.effects import Broadcast, Effect, SendTo
from beryl.levee.protocol import Claims, ConnectDocumentError
from beryl.levee.registry import DocumentSessions
from beryl.levee.sequencer import Connected, DocumentSession, SessionConfig
from beryl.levee.store import IDocumentStore, InMemoryDocumentStore

__all__ = [
    "Broadcast",
    "Claims",
    "ConnectDocumentError",
    "Connected",
    "DocumentSession",
    "DocumentSessions",
    "Effect",
    "Grant",
    "IDocumentStore",
    "InMemoryDocumentStore",
    "InsecureDevTokens",
    "SendTo",
    "SessionConfig",
    "TokenValidator",
    "authorize",
    "refuse_all_tokens",
    "token_validator",
]
