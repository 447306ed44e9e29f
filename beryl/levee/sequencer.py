"""
The ordering service of one document: a pure, in-memory port of the part of
Routerlicious's deli sequencer, broadcaster and nexus that a relay needs.

A L{DocumentSession} holds the document's connected clients and sequence
state.  Each method takes one client request and returns the L{Effect}s to
perform, in order; it does no I/O and needs no reactor (only a clock for
timestamps), so a single-threaded caller gives the serialisation Fluid
requires.

Rules, following deli rather than the original Levee:

  - Every sequenced op (client ops, join and leave) takes the next sequence
    number; none is skipped or reused, and ops that were sequenced are
    broadcast even when others in the same submission are nacked.
  - A client's C{clientSequenceNumber} must rise by exactly one per op: a
    smaller one is a duplicate and silently dropped, a larger one is a gap
    and nacked.
  - The MSN is the lowest reference SN of the connected write clients (the
    current SN when there are none) and never decreases.  An op referencing
    an SN below the MSN is nacked, and so is every later op of that client
    until it reconnects with a new client id.
  - Write clients join and leave the quorum by sequenced system ops
    (C{clientId} null, C{clientSequenceNumber} -1, C{data} the JSON text
    Fluid parses).  Every connection, reader or writer, is also announced to
    the audience by join and leave signals.  Read clients never affect the
    MSN.
  - A C{noop} op with null C{contents} takes its C{clientSequenceNumber}
    and updates the sender's reference SN but is not sequenced; when that
    moves the MSN past the one last stamped on an op, the adapter asks for
    one consolidated server C{noop} (C{clientId} null) after a short delay
    (L{DocumentSession.consolidated_noop}), as deli does.  A C{noop} with
    contents is sequenced like any op.
  - A read client that submits an op is nacked 400 C{Readonly client} when
    its token allows writing (the loader then reconnects in write mode),
    else 403.
  - A writer that sends no op for C{SessionConfig.client_timeout} seconds
    is evicted by a sequenced C{leave} op, which it receives too, so that
    it cannot pin the MSN (L{DocumentSession.evict_idle}).
  - Signals are relayed to every client of the document, the sender
    included, as Routerlicious does, unless they are targeted.
  - A sequenced C{summarize} op asks the adapter to check the summary it
    names (L{CheckSummary}); the verdict is sequenced as a C{summaryAck} or
    C{summaryNack} system op (C{contents} the C{ISummaryAck} /
    C{ISummaryNack}, C{data} its JSON text), which is the only way the
    loader learns it.
"""

from __future__ import annotations

import uuid
from types import MappingProxyType
from typing import Any, Callable, Mapping, Sequence

import attrs
import orjson
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from beryl.levee.auth import Grant
from beryl.levee.effects import Broadcast, CheckSummary, Effect, SendTo, nack_to
from beryl.levee.protocol import (
    DEFAULT_BLOCK_SIZE,
    DEFAULT_MAX_MESSAGE_SIZE,
    FORBIDDEN_CLIENT_TYPES,
    JOIN,
    LEAVE,
    NOOP,
    SERVER_PROTOCOL_VERSIONS,
    SUMMARIZE,
    SUMMARY_ACK,
    SUMMARY_NACK,
    SUMMARY_WRITE,
    Claims,
    ConnectDocumentError,
    NackMessage,
    SequencedMessage,
    connected_response,
    join_signal,
    json_string,
    leave_signal,
    negotiate_version,
    op_payload,
)
from beryl.levee.requests import (
    WRITE,
    ConnectRequest,
    DocumentMessage,
    MalformedMessage,
    SignalSubmission,
    bad_request_nack,
)
from beryl.levee.store import IDocumentStore

__all__ = [
    "ClientRecord",
    "Connected",
    "DocumentSession",
    "SessionConfig",
    "uuid_client_id",
]


def uuid_client_id() -> str:
    """A fresh client id: a uuid4, as Routerlicious uses."""
    return str(uuid.uuid4())


def _summary_handle(message: SequencedMessage) -> Any:
    """
    The C{handle} of a C{summarize} op's C{ISummaryContent}, whose contents
    the loader sends as an object or as its JSON text; C{None} if absent.
    """
    contents = message.contents
    if isinstance(contents, str):
        try:
            contents = orjson.loads(contents)
        except orjson.JSONDecodeError:
            return None
    return contents.get("handle") if isinstance(contents, dict) else None


def _connection_user(claims: Claims, client: Mapping[str, Any]) -> Mapping[str, Any]:
    """
    The user a connection speaks for: the token's, else (when the validator
    knows none, as with development tokens) the one the client declared,
    else C{{id: "anonymous"}}.
    """
    if claims.user is not None:
        return claims.user
    declared = client.get("user")
    return declared if isinstance(declared, dict) else {"id": "anonymous"}


@attrs.frozen
class SessionConfig:
    """
    What a document session tells its clients about the service.

    @ivar max_message_size: the largest op, in bytes, clients may send
        unchunked (C{maxMessageSize}).
    @ivar supported_versions: the protocol version ranges offered, in
        preference order.
    """

    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE
    block_size: int = DEFAULT_BLOCK_SIZE
    supported_versions: tuple[str, ...] = SERVER_PROTOCOL_VERSIONS
    client_timeout: float = 300.0
    """Seconds without an op after which a writer is evicted (deli: 5 min)."""
    noop_delay: float = 0.25
    """Seconds to wait before a consolidated server noop (deli: 250 ms)."""


@attrs.define
class ClientRecord:
    """
    A connected client as the session tracks it.

    @ivar detail: the trusted C{IClient}: what the client declared, with
        C{mode}, C{user} and C{scopes} set by the service.
    @ivar client_sequence_number: the last accepted C{clientSequenceNumber}.
    @ivar reference_sequence_number: the highest SN the client has reported
        having processed; the MSN never passes it while the client writes.
    @ivar nacked: set when an op referenced an SN below the MSN; every later
        op is refused.
    """

    client_id: str
    mode: str
    detail: Mapping[str, Any]
    claims: Claims
    client_sequence_number: int = 0
    reference_sequence_number: int = 0
    nacked: bool = False
    last_active: float = 0.0

    @property
    def is_writer(self) -> bool:
        """Whether the client is a write client (part of the quorum)."""
        return self.mode == WRITE


@attrs.frozen
class Connected:
    """
    The outcome of a successful connect.

    @ivar effects: the join signal and (for a writer) the join op, both to
        every client including the new one, then C{connect_document_success}
        to the new client.  The adapter must be able to deliver to
        C{client_id} before it performs them.
    """

    client_id: str
    mode: str
    effects: tuple[Effect, ...]


class DocumentSession:
    """
    The sequencer, client table and signal relay of one document.
    """

    log = Logger()

    def __init__(
        self,
        tenant_id: str,
        document_id: str,
        store: IDocumentStore,
        clock: IReactorTime,
        config: SessionConfig = SessionConfig(),
        new_client_id: Callable[[], str] = uuid_client_id,
    ) -> None:
        """
        Continue the document's sequence from the SN in C{store}.

        @param clock: gives op and connection timestamps.
        @param new_client_id: makes client ids; uuid4 strings by default.
        """
        self.tenant_id = tenant_id
        self.document_id = document_id
        self.store = store
        self.clock = clock
        self.config = config
        self._new_client_id = new_client_id
        self._sequence_number = store.sequence_number(tenant_id, document_id)
        self._minimum_sequence_number = self._sequence_number
        self._announced_minimum = self._minimum_sequence_number
        self._clients: dict[str, ClientRecord] = {}

    @property
    def sequence_number(self) -> int:
        """The last sequence number handed out."""
        return self._sequence_number

    @property
    def minimum_sequence_number(self) -> int:
        """The current MSN."""
        return self._minimum_sequence_number

    @property
    def clients(self) -> Mapping[str, ClientRecord]:
        """The connected clients by id, in the order they connected."""
        return MappingProxyType(self._clients)

    @property
    def is_idle(self) -> bool:
        """Whether no client is connected, so the session may be discarded."""
        return not self._clients

    def _timestamp(self) -> int:
        """Now, in epoch milliseconds."""
        return int(self.clock.seconds() * 1000)

    def _recompute_minimum_sequence_number(self) -> None:
        """Move the MSN up to the lowest reference SN of the writers."""
        references = [
            record.reference_sequence_number
            for record in self._clients.values()
            if record.is_writer
        ]
        lowest = min(references) if references else self._sequence_number
        self._minimum_sequence_number = max(self._minimum_sequence_number, lowest)

    def _sequence(
        self,
        client_id: str | None,
        client_sequence_number: int,
        reference_sequence_number: int,
        type: str,
        contents: Any,
        metadata: Any = None,
        data: str | None = None,
        compression: str | None = None,
    ) -> SequencedMessage:
        """
        Give the next SN to an op whose effect on the client table has
        already been applied, and record it in the store.
        """
        self._sequence_number += 1
        self._recompute_minimum_sequence_number()
        self._announced_minimum = self._minimum_sequence_number
        message = SequencedMessage(
            client_id=client_id,
            sequence_number=self._sequence_number,
            minimum_sequence_number=self._minimum_sequence_number,
            client_sequence_number=client_sequence_number,
            reference_sequence_number=reference_sequence_number,
            type=type,
            contents=contents,
            timestamp=self._timestamp(),
            metadata=metadata,
            data=data,
            compression=compression,
        )
        self.store.append(self.tenant_id, self.document_id, [message])
        return message

    def _broadcast_ops(
        self, messages: Sequence[SequencedMessage], recipients: tuple[str, ...]
    ) -> list[Effect]:
        """An C{op} push of C{messages} to C{recipients}, if both exist."""
        if not messages or not recipients:
            return []
        return [Broadcast(recipients, "op", op_payload(self.document_id, messages))]

    def connect(
        self, request: ConnectRequest, grant: Grant
    ) -> Connected | ConnectDocumentError:
        """
        Admit a client that L{authorize<beryl.levee.auth.authorize>} let in.

        A write client enters the quorum with its reference SN at the
        current MSN (so the MSN cannot move back), through a sequenced
        C{join} op.

        @return: the new connection, or a 400 error when no protocol version
            is shared or the request is for another document.
        """
        if (request.tenant_id, request.document_id) != (
            self.tenant_id,
            self.document_id,
        ):
            return ConnectDocumentError(400, "Tenant/document ID mismatch with topic")
        version = negotiate_version(request.versions, self.config.supported_versions)
        if version is None:
            return ConnectDocumentError(
                400,
                "Unsupported client protocol. Server: "
                f"{list(self.config.supported_versions)}. "
                f"Client: {list(request.versions)}",
            )
        client_id = self._new_client_id()
        while client_id in self._clients:
            client_id = self._new_client_id()
        claims = grant.claims
        user = _connection_user(claims, request.client)
        detail = {
            **request.client,
            "mode": grant.mode,
            "user": dict(user),
            "scopes": list(claims.scopes),
        }
        record = ClientRecord(
            client_id,
            grant.mode,
            detail,
            claims,
            reference_sequence_number=self._minimum_sequence_number,
            last_active=self.clock.seconds(),
        )
        self._clients[client_id] = record
        everyone = tuple(self._clients)
        effects: list[Effect] = [
            Broadcast(everyone, "signal", join_signal(client_id, detail))
        ]
        if record.is_writer:
            join = self._sequence(
                None,
                -1,
                -1,
                JOIN,
                None,
                data=json_string({"clientId": client_id, "detail": detail}),
            )
            effects += self._broadcast_ops([join], everyone)
        response = connected_response(
            client_id=client_id,
            mode=grant.mode,
            claims=claims.to_json(user=user),
            version=version,
            supported_versions=self.config.supported_versions,
            initial_clients=[
                {"clientId": other.client_id, "client": other.detail}
                for other in self._clients.values()
            ],
            max_message_size=self.config.max_message_size,
            block_size=self.config.block_size,
            checkpoint_sequence_number=self._sequence_number,
            timestamp=self._timestamp(),
            submit_signals_v2=request.submit_signals_v2,
            nonce=request.nonce,
        )
        effects.append(SendTo(client_id, "connect_document_success", response))
        self.log.info(
            "Client {client_id} connected to {tenant_id}/{document_id} in {mode} mode",
            client_id=client_id,
            tenant_id=self.tenant_id,
            document_id=self.document_id,
            mode=grant.mode,
        )
        return Connected(client_id, grant.mode, tuple(effects))

    def disconnect(self, client_id: str) -> tuple[Effect, ...]:
        """
        Remove a client (channel left, socket closed): a writer leaves the
        quorum by a sequenced C{leave} op, and everyone left hears a leave
        signal.  Unknown clients are ignored.
        """
        record = self._clients.pop(client_id, None)
        if record is None:
            return ()
        remaining = tuple(self._clients)
        effects: list[Effect] = []
        if record.is_writer:
            leave = self._sequence(
                None, -1, -1, LEAVE, None, data=json_string(client_id)
            )
            effects += self._broadcast_ops([leave], remaining)
        if remaining:
            effects.append(Broadcast(remaining, "signal", leave_signal(client_id)))
        self.log.info(
            "Client {client_id} left {tenant_id}/{document_id}",
            client_id=client_id,
            tenant_id=self.tenant_id,
            document_id=self.document_id,
        )
        return tuple(effects)

    def _nack(self, operation: Any, message: str, code: int = 400) -> NackMessage:
        """A sequencer nack, stamped with the current MSN as deli does."""
        return bad_request_nack(
            message,
            code,
            operation=operation,
            sequence_number=self._minimum_sequence_number,
        )

    def _admit(
        self, record: ClientRecord, message: DocumentMessage | MalformedMessage
    ) -> NackMessage | DocumentMessage | None:
        """
        Check one op of C{record} against the ordering rules.

        @return: the op, with a reference SN of -1 replaced by the SN it will
            get; a nack; or C{None} for a duplicate to drop.
        """
        if isinstance(message, MalformedMessage):
            return self._nack(message.raw, message.reason)
        if record.nacked:
            return self._nack(message.raw, "Nonexistent client")
        expected = record.client_sequence_number + 1
        if message.client_sequence_number < expected:
            return None
        if message.client_sequence_number > expected:
            return self._nack(message.raw, "Gap detected in incoming op")
        if message.type in FORBIDDEN_CLIENT_TYPES:
            return self._nack(message.raw, "Op not allowed")
        if message.type == SUMMARIZE and SUMMARY_WRITE not in record.claims.scopes:
            return self._nack(
                message.raw, "Client must have summary:write scope", code=403
            )
        reference = message.reference_sequence_number
        if reference == -1:
            return attrs.evolve(
                message, reference_sequence_number=self._sequence_number + 1
            )
        if reference < self._minimum_sequence_number:
            record.nacked = True
            return self._nack(
                message.raw,
                f"Refseq {reference} < {self._minimum_sequence_number}",
            )
        if reference > self._sequence_number:
            return self._nack(
                message.raw,
                f"Refseq {reference} > sequence number {self._sequence_number}",
            )
        return message

    def submit_ops(
        self,
        client_id: str,
        messages: Sequence[DocumentMessage | MalformedMessage],
    ) -> tuple[Effect, ...]:
        """
        Sequence a client's ops in order.

        @return: one C{op} broadcast of the ops sequenced (to every client,
            sender included), then one C{nack} to the sender for those
            refused.
        """
        record = self._clients.get(client_id)
        if record is None:
            return (nack_to(client_id, [bad_request_nack("Nonexistent client")]),)
        if not record.is_writer:
            if record.claims.can_write():
                refusal = bad_request_nack("Readonly client")
            else:
                refusal = bad_request_nack(
                    "Read-only clients cannot submit operations", code=403
                )
            return (nack_to(client_id, [refusal]),)
        record.last_active = self.clock.seconds()
        sequenced: list[SequencedMessage] = []
        checks: list[Effect] = []
        nacks: list[NackMessage] = []
        for message in messages:
            admitted = self._admit(record, message)
            if admitted is None:
                continue
            if isinstance(admitted, NackMessage):
                nacks.append(admitted)
                continue
            record.client_sequence_number = admitted.client_sequence_number
            record.reference_sequence_number = max(
                record.reference_sequence_number, admitted.reference_sequence_number
            )
            if admitted.type == NOOP and admitted.contents is None:
                self._recompute_minimum_sequence_number()
                continue
            ordered = self._sequence(
                client_id,
                admitted.client_sequence_number,
                admitted.reference_sequence_number,
                admitted.type,
                admitted.contents,
                metadata=admitted.metadata,
                compression=admitted.compression,
            )
            sequenced.append(ordered)
            if admitted.type == SUMMARIZE:
                checks.append(
                    CheckSummary(
                        ordered.sequence_number,
                        _summary_handle(ordered),
                        ordered.reference_sequence_number,
                    )
                )
        effects = self._broadcast_ops(sequenced, tuple(self._clients)) + checks
        if nacks:
            self.log.info(
                "Nacked {count} ops of client {client_id} in "
                "{tenant_id}/{document_id}: {reason}",
                count=len(nacks),
                client_id=client_id,
                tenant_id=self.tenant_id,
                document_id=self.document_id,
                reason=nacks[0].content.message,
            )
            effects.append(nack_to(client_id, nacks))
        return tuple(effects)

    def summary_checked(
        self, sequence_number: int, handle: Any, refusal: str | None
    ) -> tuple[Effect, ...]:
        """
        Sequence the verdict on the summary proposed by the C{summarize} op
        C{sequence_number}: a C{summaryAck} naming C{handle} when
        C{refusal} is C{None}, else a C{summaryNack} with C{refusal} as its
        message; broadcast to every connected client.
        """
        proposal = {"summarySequenceNumber": sequence_number}
        if refusal is None:
            kind = SUMMARY_ACK
            contents: dict[str, Any] = {"handle": handle, "summaryProposal": proposal}
        else:
            kind = SUMMARY_NACK
            contents = {"summaryProposal": proposal, "code": 400, "message": refusal}
        self.log.info(
            "{kind} for summary at {sequence_number} of {tenant_id}/{document_id}"
            "{reason}",
            kind=kind,
            sequence_number=sequence_number,
            tenant_id=self.tenant_id,
            document_id=self.document_id,
            reason="" if refusal is None else f": {refusal}",
        )
        verdict = self._sequence(
            None, -1, -1, kind, contents, data=json_string(contents)
        )
        return tuple(self._broadcast_ops([verdict], tuple(self._clients)))

    @property
    def needs_noop(self) -> bool:
        """Whether the MSN moved past the one last stamped on an op."""
        return self._minimum_sequence_number > self._announced_minimum

    def consolidated_noop(self) -> tuple[Effect, ...]:
        """
        When L{needs_noop}, sequence one server C{noop} (C{clientId} null)
        carrying the new MSN, to everyone; else nothing.
        """
        if not self.needs_noop:
            return ()
        noop = self._sequence(None, -1, -1, NOOP, None)
        return tuple(self._broadcast_ops([noop], tuple(self._clients)))

    @property
    def has_writers(self) -> bool:
        """Whether a write client is connected."""
        return any(record.is_writer for record in self._clients.values())

    def evict_idle(self, timeout: float) -> tuple[Effect, ...]:
        """
        Evict every writer that submitted no op for C{timeout} seconds: a
        sequenced C{leave} op to everyone, the evicted client included (the
        loader reconnects when it sees its own leave), and a leave signal.
        """
        deadline = self.clock.seconds() - timeout
        idle = [
            record.client_id
            for record in self._clients.values()
            if record.is_writer and record.last_active <= deadline
        ]
        effects: list[Effect] = []
        for client_id in idle:
            del self._clients[client_id]
            leave = self._sequence(
                None, -1, -1, LEAVE, None, data=json_string(client_id)
            )
            effects += self._broadcast_ops([leave], (*self._clients, client_id))
            if self._clients:
                effects.append(
                    Broadcast(tuple(self._clients), "signal", leave_signal(client_id))
                )
            self.log.info(
                "Evicted client {client_id} of {tenant_id}/{document_id}: no op "
                "for {timeout} s",
                client_id=client_id,
                tenant_id=self.tenant_id,
                document_id=self.document_id,
                timeout=timeout,
            )
        return tuple(effects)

    def update_reference(
        self, client_id: str, reference_sequence_number: int
    ) -> tuple[Effect, ...]:
        """
        Levee's C{noop} event: the client has processed ops up to
        C{reference_sequence_number}.  Raises the client's reference SN
        (never lowers it, never past the current SN) and recomputes the MSN;
        nothing is pushed.
        """
        record = self._clients.get(client_id)
        if record is None or reference_sequence_number > self._sequence_number:
            return ()
        record.reference_sequence_number = max(
            record.reference_sequence_number, reference_sequence_number
        )
        record.last_active = self.clock.seconds()
        self._recompute_minimum_sequence_number()
        return ()

    def _signal_recipients(self, signal: SignalSubmission) -> tuple[str, ...]:
        """
        Who gets a signal: the listed C{targetedClients}; else everyone but
        the C{ignoredClients}; else the C{targetClientId}; else everyone.
        Only connected clients count; the sender is not special.
        """
        if signal.targeted_clients:
            return tuple(
                client for client in self._clients if client in signal.targeted_clients
            )
        if signal.ignored_clients:
            return tuple(
                client
                for client in self._clients
                if client not in signal.ignored_clients
            )
        if signal.target_client_id is not None:
            if signal.target_client_id in self._clients:
                return (signal.target_client_id,)
            return ()
        return tuple(self._clients)

    def submit_signals(
        self, client_id: str, signals: Sequence[SignalSubmission]
    ) -> tuple[Effect, ...]:
        """
        Relay signals, each as its own C{signal} push of C{{clientId,
        content}} plus, for v2 signals, the C{type},
        C{clientConnectionNumber}, C{referenceSequenceNumber} and
        C{targetClientId} the sender gave.  Signals from unknown clients are
        ignored, as Levee does.
        """
        if client_id not in self._clients:
            return ()
        effects: list[Effect] = []
        for signal in signals:
            recipients = self._signal_recipients(signal)
            if not recipients:
                continue
            message: dict[str, Any] = {"clientId": client_id, "content": signal.content}
            if signal.v2:
                optional = {
                    "type": signal.type,
                    "clientConnectionNumber": signal.client_connection_number,
                    "referenceSequenceNumber": signal.reference_sequence_number,
                    "targetClientId": signal.target_client_id,
                }
                message.update(
                    (key, value) for key, value in optional.items() if value is not None
                )
            effects.append(Broadcast(recipients, "signal", message))
        return tuple(effects)

    def request_ops(self, client_id: str, after: int) -> tuple[Effect, ...]:
        """
        Levee's C{requestOps}: the kept ops with an SN above C{after}, as
        one C{op} push to the requester; nothing when there are none or the
        client is unknown.
        """
        if client_id not in self._clients:
            return ()
        messages = self.store.messages_after(self.tenant_id, self.document_id, after)
        if not messages:
            return ()
        return (SendTo(client_id, "op", op_payload(self.document_id, messages)),)
