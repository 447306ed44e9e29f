"""
Levee in one call: the document channel, its durable storage and its HTTP
routes, wired together for C{twistd beryl --levee} or an embedding host.
"""

from __future__ import annotations

from typing import Any, Mapping

import attrs
from twisted.web.resource import Resource

from beryl.app import App
from beryl.levee.auth import TokenValidator
from beryl.levee.channel import DOCUMENT_PATTERN, LeveeRelay
from beryl.levee.http import DEFAULT_MAX_BODY, LeveeHttp, route_names
from beryl.levee.sequencer import SessionConfig
from beryl.levee.storage import Database, DurableDocumentStore, LeveeStorage

__all__ = ["Levee", "serve_levee"]


@attrs.frozen
class Levee:
    """The parts of a Levee server."""

    relay: LeveeRelay
    http: LeveeHttp
    database: Database

    def resources(self) -> dict[bytes, Resource]:
        """The resources to mount at the site root, by path segment."""
        return {name: self.http.child(name) for name in route_names()}


def serve_levee(
    app: App,
    reactor: Any,
    *,
    validate: TokenValidator,
    data: str = ":memory:",
    config: SessionConfig = SessionConfig(),
    max_body: int = DEFAULT_MAX_BODY,
    mint_secrets: Mapping[str, str] | None = None,
) -> Levee:
    """
    Register the document channel on C{app} and build the HTTP routes, all
    kept in the SQLite database in directory C{data} (C{":memory:"}: in
    memory, gone at exit).

    @param reactor: the clock of tokens and ops, and the reactor of the
        database's worker thread.
    @param mint_secrets: enables C{POST /api/tenants/{t}/token-mint} for
        these tenants (development only).
    """
    database = Database(data, reactor)
    storage = LeveeStorage(database)
    relay = LeveeRelay(
        reactor,
        validate=validate,
        store=DurableDocumentStore(database),
        config=config,
        storage=storage,
    )
    app.channel(DOCUMENT_PATTERN, relay.channel())
    http = LeveeHttp(
        storage, validate, reactor, max_body=max_body, mint_secrets=mint_secrets
    )
    return Levee(relay, http, database)
