"""
The live document sessions of a server, one per (tenant, document).
"""

from __future__ import annotations

from typing import Callable

from twisted.internet.interfaces import IReactorTime

from beryl.levee.sequencer import DocumentSession, SessionConfig, uuid_client_id
from beryl.levee.store import IDocumentStore

__all__ = ["DocumentSessions"]


class DocumentSessions:
    """
    Finds or starts the session of a document; sessions share one store, so
    a session discarded when idle is continued by the next one.
    """

    def __init__(
        self,
        store: IDocumentStore,
        clock: IReactorTime,
        config: SessionConfig = SessionConfig(),
        new_client_id: Callable[[], str] = uuid_client_id,
    ) -> None:
        """
        @param store: where every document's SN and op log are kept.
        @param clock: gives the sessions' timestamps.
        """
        self.store = store
        self.clock = clock
        self.config = config
        self._new_client_id = new_client_id
        self._sessions: dict[tuple[str, str], DocumentSession] = {}

    def get(self, tenant_id: str, document_id: str) -> DocumentSession | None:
        """The document's live session, if it has one."""
        return self._sessions.get((tenant_id, document_id))

    def session_for(self, tenant_id: str, document_id: str) -> DocumentSession:
        """The document's live session, started if there is none."""
        key = (tenant_id, document_id)
        session = self._sessions.get(key)
        if session is None:
            session = DocumentSession(
                tenant_id,
                document_id,
                self.store,
                self.clock,
                self.config,
                self._new_client_id,
            )
            self._sessions[key] = session
        return session

    def discard_if_idle(self, session: DocumentSession) -> bool:
        """
        Forget C{session} when no client is connected to it; call after a
        disconnect.

        @return: whether it was discarded.
        """
        key = (session.tenant_id, session.document_id)
        if not session.is_idle or self._sessions.get(key) is not session:
            return False
        del self._sessions[key]
        return True
