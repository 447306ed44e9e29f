"""
The Levee document channel: the Fluid relay protocol over Phoenix channels
on C{document:<tenantId>:<documentId>}, an adapter around the pure core of
L{beryl.levee}.

Every client of a document joins the document's topic, then sends
C{connect_document}; once connected it submits ops (C{submitOp}), signals
(C{submitSignal}), reference-SN updates (C{noop}) and catch-up requests
(C{requestOps}).  The document's L{DocumentSession} decides what happens
and returns effects naming client ids; this module pushes each effect's
event on the channel topic of each recipient, because phoenix.js drops any
message whose topic is not the channel's own.

Delivery goes through the L{SocketContext} each client connected with: the
relay keeps, per document, a map from client id to that context, and
pushes with it.  Nothing is broadcast through pubsub, so a document's ops
never leave the node.

B{Single node.}  The sequencer of a document lives in the process that
serves its clients.  In a cluster, every client of one document must be
routed to the same node (by tenant and document id); two nodes serving the
same document would each sequence their own clients' ops, and their
clients would never see each other's.
"""

from __future__ import annotations

from typing import Callable, Mapping, Union

import attrs
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from beryl.app import App
from beryl.channel import (
    Channel,
    HandleResult,
    JoinContext,
    JoinError,
    JoinOk,
    JoinResult,
    NoReply,
    Push,
    SocketContext,
)
from beryl.levee.auth import TokenValidator, authorize, refuse_all_tokens
from beryl.levee.effects import CheckSummary, Effect
from beryl.levee.protocol import ConnectDocumentError, NackMessage, nack_payload
from beryl.levee.registry import DocumentSessions
from beryl.levee.requests import (
    bad_request_nack,
    parse_connect,
    parse_noop,
    parse_request_ops,
    parse_submit_op,
    parse_submit_signal,
)
from beryl.levee.sequencer import ClientRecord, DocumentSession, SessionConfig
from beryl.levee.storage import LeveeStorage, SummaryVerdict
from beryl.levee.store import IDocumentStore, InMemoryDocumentStore
from beryl.wire import Payload, encode_once

__all__ = [
    "DOCUMENT_PATTERN",
    "DocumentAssigns",
    "DocumentConnection",
    "LeveeRelay",
    "PendingConnection",
    "mount_levee",
    "parse_document_topic",
]

DOCUMENT_PATTERN = "document:*"
"""The topic pattern the document channel is registered on."""


def parse_document_topic(topic: str) -> tuple[str, str] | None:
    """
    The tenant and document ids of C{document:<tenantId>:<documentId>}.  The
    topic is split at most twice, so document ids may contain C{:}.

    @return: C{(tenant_id, document_id)}, or C{None} for any other topic.
    """
    parts = topic.split(":", 2)
    if len(parts) != 3 or parts[0] != "document" or not parts[1] or not parts[2]:
        return None
    return parts[1], parts[2]


@attrs.frozen
class PendingConnection:
    """
    The assigns of a joined channel that has not sent a successful
    C{connect_document} yet.
    """

    tenant_id: str
    document_id: str


@attrs.frozen
class DocumentConnection:
    """
    The assigns of a channel connected to its document.

    @ivar client_id: the Fluid client id the session gave this connection.
    @ivar mode: the granted mode, C{"write"} or C{"read"}.
    """

    tenant_id: str
    document_id: str
    client_id: str
    mode: str


DocumentAssigns = Union[PendingConnection, DocumentConnection]
"""The assigns of the document channel."""

_Deliver = Callable[[str, Payload], None]


class LeveeRelay:
    """
    The document sessions of this node and the routes to their clients'
    channels; L{channel} is the Phoenix channel that serves them.
    """

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        validate: TokenValidator = refuse_all_tokens,
        store: IDocumentStore | None = None,
        config: SessionConfig = SessionConfig(),
        sessions: DocumentSessions | None = None,
        storage: LeveeStorage | None = None,
    ) -> None:
        """
        @param clock: gives token expiry checks and op timestamps.
        @param validate: turns a connection's token into claims; the default
            refuses every token.
        @param store: where documents' sequence numbers and ops are kept; in
            memory when not given.
        @param sessions: the session registry to use (for tests); built from
            C{store}, C{clock} and C{config} when not given.
        @param storage: where uploaded summaries are checked and
            acknowledged ones recorded; without it every summary is nacked.
        """
        self.clock = clock
        self.storage = storage
        self.validate = validate
        self.sessions = (
            sessions
            if sessions is not None
            else DocumentSessions(
                store if store is not None else InMemoryDocumentStore(), clock, config
            )
        )
        # (tenant id, document id, client id) -> the push of its channel
        self._routes: dict[tuple[str, str, str], _Deliver] = {}
        # (tenant id, document id) -> the pending consolidated noop / eviction check
        self._noop_timers: dict[tuple[str, str], IDelayedCall] = {}
        self._eviction_timers: dict[tuple[str, str], IDelayedCall] = {}

    def channel(self) -> Channel[DocumentAssigns]:
        """
        The document channel, to register on L{DOCUMENT_PATTERN}.
        """
        return (
            Channel.create(self._join)
            .with_handle_in(self._handle_in)
            .with_terminate(self._terminate)
        )

    # Delivery

    def _perform(
        self, tenant_id: str, document_id: str, effects: tuple[Effect, ...]
    ) -> None:
        """
        Push every effect to each of its recipients, in order, once the ops
        sequenced so far are durable (at once with an in-memory store).
        Later effects wait behind earlier ones, so pushes keep their order.
        """
        if not effects:
            return
        written = self.sessions.store.written()
        if written is None:
            self._deliver(tenant_id, document_id, effects)
            return

        def deliver(result: object) -> object:
            try:
                self._deliver(tenant_id, document_id, effects)
            except Exception:
                self.log.failure(
                    "Could not deliver to {tenant_id}/{document_id}",
                    tenant_id=tenant_id,
                    document_id=document_id,
                )
            return result

        written.addBoth(deliver)

    def _deliver(
        self, tenant_id: str, document_id: str, effects: tuple[Effect, ...]
    ) -> None:
        """
        Push every effect to each of its recipients, in order.  A payload
        going to several clients is encoded once.
        """
        for effect in effects:
            if isinstance(effect, CheckSummary):
                self._check_summary(tenant_id, document_id, effect)
                continue
            recipients = effect.recipients
            payload: Payload = effect.payload
            if len(recipients) > 1:
                payload = encode_once(payload)
            for client_id in recipients:
                deliver = self._routes.get((tenant_id, document_id, client_id))
                if deliver is None:
                    self.log.debug(
                        "No route to client {client_id} of {tenant_id}/{document_id} "
                        "for {event}; dropped.",
                        client_id=client_id,
                        tenant_id=tenant_id,
                        document_id=document_id,
                        event=effect.event,
                    )
                    continue
                deliver(effect.event, payload)

    def _check_summary(
        self, tenant_id: str, document_id: str, check: CheckSummary
    ) -> None:
        """
        Check the summary a sequenced C{summarize} op names, record it when
        it is good, and sequence the C{summaryAck} or C{summaryNack}.
        """
        storage = self.storage
        if storage is None:
            verdict: Deferred[SummaryVerdict] = succeed(
                SummaryVerdict("This server stores no summaries")
            )
        else:
            verdict = storage.check_summary(
                tenant_id, check.handle, document_id, check.reference_sequence_number
            )

        def decided(decision: SummaryVerdict) -> Deferred[None] | None:
            session = self.sessions.session_for(tenant_id, document_id)
            effects = session.summary_checked(
                check.sequence_number, decision.commit, decision.refusal
            )
            self._perform(tenant_id, document_id, effects)
            self.sessions.discard_if_idle(session)
            if decision.commit is not None and storage is not None:
                return storage.acknowledge_summary(
                    tenant_id, document_id, check.sequence_number, decision.commit
                )
            return None

        verdict.addCallback(decided).addErrback(
            lambda failure: self.log.failure(
                "Could not check the summary at {sequence_number} of "
                "{tenant_id}/{document_id}",
                failure,
                sequence_number=check.sequence_number,
                tenant_id=tenant_id,
                document_id=document_id,
            )
        )

    def _schedule_noop(self, session: DocumentSession) -> None:
        """
        When the MSN moved without an op to carry it, send one consolidated
        server noop after C{noop_delay}, however many client noops come in
        meanwhile.
        """
        key = (session.tenant_id, session.document_id)
        if not session.needs_noop or key in self._noop_timers:
            return

        def fire() -> None:
            del self._noop_timers[key]
            live = self.sessions.get(*key)
            if live is not None:
                self._perform(*key, live.consolidated_noop())

        self._noop_timers[key] = self.clock.callLater(session.config.noop_delay, fire)

    def _watch_writers(self, session: DocumentSession) -> None:
        """
        While the document has writers, evict those silent for
        C{client_timeout}, checking four times per timeout.
        """
        key = (session.tenant_id, session.document_id)
        if key in self._eviction_timers or not session.has_writers:
            return
        timeout = session.config.client_timeout

        def fire() -> None:
            del self._eviction_timers[key]
            live = self.sessions.get(*key)
            if live is None:
                return
            self._perform(*key, live.evict_idle(timeout))
            self._schedule_noop(live)
            if not self.sessions.discard_if_idle(live):
                self._watch_writers(live)

        self._eviction_timers[key] = self.clock.callLater(timeout / 4, fire)

    def _session(self, connection: DocumentConnection) -> DocumentSession | None:
        return self.sessions.get(connection.tenant_id, connection.document_id)

    # Channel callbacks

    def _join(
        self, topic: str, payload: Payload, ctx: JoinContext
    ) -> JoinResult[DocumentAssigns]:
        ids = parse_document_topic(topic)
        if ids is None:
            return JoinError({"reason": "invalid_topic"})
        return JoinOk(PendingConnection(*ids))

    def _handle_in(
        self, event: str, payload: Payload, ctx: SocketContext[DocumentAssigns]
    ) -> HandleResult[DocumentAssigns]:
        assigns = ctx.assigns
        if event == "connect_document":
            return self._connect(payload, ctx)
        if event == "submitOp":
            return self._submit_op(payload, ctx)
        if not isinstance(assigns, DocumentConnection):
            # Levee ignores everything else until the client is connected.
            return NoReply(assigns)
        session = self._session(assigns)
        if session is None:
            return NoReply(assigns)
        effects: tuple[Effect, ...] = ()
        if event == "submitSignal":
            signal = parse_submit_signal(payload)
            if signal is not None and signal.client_id == assigns.client_id:
                effects = session.submit_signals(assigns.client_id, signal.signals)
        elif event == "noop":
            noop = parse_noop(payload)
            if noop is not None and noop.client_id == assigns.client_id:
                effects = session.update_reference(
                    assigns.client_id, noop.reference_sequence_number
                )
                self._schedule_noop(session)
        elif event == "requestOps":
            after = parse_request_ops(payload)
            if after is not None:
                effects = session.request_ops(assigns.client_id, after)
        self._perform(assigns.tenant_id, assigns.document_id, effects)
        return NoReply(assigns)

    def _connect(
        self, payload: Payload, ctx: SocketContext[DocumentAssigns]
    ) -> HandleResult[DocumentAssigns]:
        assigns = ctx.assigns
        if isinstance(assigns, DocumentConnection):
            return NoReply(assigns)
        request = parse_connect(payload, assigns.tenant_id, assigns.document_id)
        if isinstance(request, ConnectDocumentError):
            return Push("connect_document_error", request.to_json(), assigns)
        grant = authorize(request, self.validate, self.clock.seconds())
        if isinstance(grant, ConnectDocumentError):
            self.log.info(
                "Refused a connection to {tenant_id}/{document_id} from socket "
                "{socket_id}: {code} {reason}",
                tenant_id=assigns.tenant_id,
                document_id=assigns.document_id,
                socket_id=ctx.socket_id,
                code=grant.code,
                reason=grant.message,
            )
            return Push("connect_document_error", grant.to_json(), assigns)
        session = self.sessions.session_for(assigns.tenant_id, assigns.document_id)
        connected = session.connect(request, grant)
        if isinstance(connected, ConnectDocumentError):
            self.sessions.discard_if_idle(session)
            return Push("connect_document_error", connected.to_json(), assigns)
        self._routes[(assigns.tenant_id, assigns.document_id, connected.client_id)] = (
            ctx.push
        )
        self._perform(assigns.tenant_id, assigns.document_id, connected.effects)
        self._watch_writers(session)
        return NoReply(
            DocumentConnection(
                assigns.tenant_id,
                assigns.document_id,
                connected.client_id,
                connected.mode,
            )
        )

    def _submit_op(
        self, payload: Payload, ctx: SocketContext[DocumentAssigns]
    ) -> HandleResult[DocumentAssigns]:
        assigns = ctx.assigns
        if not isinstance(assigns, DocumentConnection):
            return _refuse(bad_request_nack("Client not connected"), assigns)
        session = self._session(assigns)
        if session is None:
            return _refuse(bad_request_nack("Client not connected"), assigns)
        submission = parse_submit_op(payload)
        if isinstance(submission, NackMessage):
            return _refuse(submission, assigns)
        if submission.client_id != assigns.client_id:
            return _refuse(
                bad_request_nack(
                    f"Client ID mismatch: expected {assigns.client_id}, "
                    f"got {submission.client_id}"
                ),
                assigns,
            )
        effects = session.submit_ops(assigns.client_id, submission.messages)
        self._perform(assigns.tenant_id, assigns.document_id, effects)
        self._schedule_noop(session)
        return NoReply(assigns)

    def _terminate(self, reason: str, ctx: SocketContext[DocumentAssigns]) -> None:
        assigns = ctx.assigns
        if not isinstance(assigns, DocumentConnection):
            return
        self._routes.pop(
            (assigns.tenant_id, assigns.document_id, assigns.client_id), None
        )
        session = self._session(assigns)
        if session is None:
            return
        effects = session.disconnect(assigns.client_id)
        self._perform(assigns.tenant_id, assigns.document_id, effects)
        if self.sessions.discard_if_idle(session):
            key = (assigns.tenant_id, assigns.document_id)
            for timers in (self._noop_timers, self._eviction_timers):
                timer = timers.pop(key, None)
                if timer is not None and timer.active():
                    timer.cancel()

    def connected_clients(
        self, tenant_id: str, document_id: str
    ) -> Mapping[str, ClientRecord]:
        """
        The clients connected to a document on this node, by client id;
        empty when the document has no live session.
        """
        session = self.sessions.get(tenant_id, document_id)
        return {} if session is None else dict(session.clients)


def _refuse(
    nack: NackMessage, assigns: DocumentAssigns
) -> HandleResult[DocumentAssigns]:
    """
    Push a channel-made C{nack} for a whole submission to its sender.
    """
    return Push("nack", nack_payload([nack]), assigns)


def mount_levee(
    app: App,
    *,
    clock: IReactorTime,
    validate: TokenValidator = refuse_all_tokens,
    store: IDocumentStore | None = None,
    config: SessionConfig = SessionConfig(),
) -> App:
    """
    Serve Levee documents from C{app}: register the document channel on
    C{document:*}.

    @param clock: gives token expiry checks and op timestamps (the
        reactor).
    @param validate: turns a connection's token into claims.  The default
        refuses every token; C{token_validator(insecure_dev_tokens=True,
        clock=reactor)} accepts any (development only).
    @param store: where documents' sequence numbers and ops are kept; in
        memory (the newest 1000 ops per document) when not given.
    @param config: what sessions tell clients about the service.
    @return: C{app}, for chaining.
    """
    relay = LeveeRelay(clock, validate=validate, store=store, config=config)
    return app.channel(DOCUMENT_PATTERN, relay.channel())
