"""
One AMP connection between two cluster nodes.

The link does the handshake, heartbeats, chunking and reassembly for its
connection; everything else (which links are kept, who is up, where
messages go) is its owner's, the L{beryl.cluster.service.ClusterService}.

Its lifecycle is an explicit state machine (L{LinkInputs}, built with
Automat): C{Opened}, then C{Greeting} and C{Authenticating} on the side
that connected, or C{Proving} and C{Admitting} on the side that accepted,
then C{Up}, and finally C{Draining} (a graceful close that flushes what
was sent), C{Aborted} or C{Closed}.  Each state has a L{Phase}: the
commands it handles, the commands it keeps for later and how much a peer
may make it buffer.
"""

from __future__ import annotations

import hmac
import secrets
from typing import Any, Callable, Protocol

import attrs
from automat import TypeMachineBuilder
from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.error import ConnectionClosed
from twisted.internet.interfaces import (
    IDelayedCall,
    IHalfCloseableProtocol,
    IReactorTime,
    ITCPTransport,
)
from twisted.internet.protocol import connectionDone
from twisted.internet.task import LoopingCall
from twisted.logger import Logger, LogLevel
from twisted.protocols import amp
from twisted.python.failure import Failure
from zope.interface import implementer

from beryl.cluster.chunks import ChunkError, Reassembler, split
from beryl.cluster.commands import (
    PROTOCOL_VERSION,
    Authenticate,
    Deliver,
    DuplicateNode,
    Hello,
    LinkRefused,
    Members,
    Ping,
    prove_secret,
)

__all__ = [
    "MAX_BOX_KEYS",
    "UNAUTHENTICATED_BYTES",
    "ClusterLink",
    "LinkInputs",
    "LinkOwner",
    "Phase",
]

_LOST = (ConnectionClosed, amp.ProtocolSwitched)
_ACCEPT = b"accept"
_CONNECT = b"connect"

UNAUTHENTICATED_BYTES = 4096
"""
The most a connection may send before its peer has proved the cluster
secret: the handshake takes a few hundred bytes.
"""

UNAUTHENTICATED_VALUE_BYTES = 1024
"""The longest AMP value accepted before the proof (node names, nonces)."""

MAX_BOX_KEYS = 16
"""
The most keys one AMP box may have once the peer has proved the secret
(values are at most 64 KiB each, so a box holds about 1 MiB at most); the
cluster's own boxes have six keys at most, and a large message travels as
consecutive L{Deliver} chunks of 60 KB.
"""

MAX_QUEUED_BOXES = 4096
"""
The most commands kept while the last answer of the handshake is awaited
(the peer, already up, may send before its answer arrives).
"""


@attrs.frozen
class Phase:
    """
    What a link in one state accepts from its peer.

    @ivar name: the state's name.
    @ivar handles: command names handled at once.
    @ivar queues: command names kept and handled when the link is up.
    @ivar proven: whether the peer has proved the cluster secret.
    @ivar sends: whether messages may be sent on the link.
    @ivar delivers: whether messages received are handed to the owner.
    @ivar quiet: whether unexpected commands are dropped without a word
        (the link is closing).
    """

    name: str
    handles: frozenset[bytes] = frozenset()
    queues: frozenset[bytes] = frozenset()
    proven: bool = False
    sends: bool = False
    delivers: bool = False
    quiet: bool = False


_TRAFFIC = frozenset(c.commandName for c in (Deliver, Members, Ping))
_ANSWERED = frozenset(c.commandName for c in (Hello, Authenticate, Ping))
_OPENED = Phase("Opened", handles=frozenset([Hello.commandName]))
_GREETING = Phase("Greeting")
_AUTHENTICATING = Phase("Authenticating", queues=_TRAFFIC, proven=True)
_PROVING = Phase("Proving", handles=frozenset([Authenticate.commandName]))
_ADMITTING = Phase("Admitting", proven=True)
_UP = Phase("Up", handles=_TRAFFIC, proven=True, sends=True, delivers=True)
_DRAINING = Phase("Draining", handles=_TRAFFIC, proven=True, delivers=True)
_ABORTED = Phase("Aborted", quiet=True)
_CLOSED = Phase("Closed", quiet=True)


class LinkOwner(Protocol):
    """
    What a L{ClusterLink} needs from the node it belongs to.
    """

    node_name: str
    incarnation: str
    advertise: str
    secret: bytes | None
    heartbeat_interval: float
    heartbeat_timeout: float
    close_timeout: float

    def link_up(self, link: ClusterLink) -> None:
        """The handshake of C{link} succeeded."""

    def link_lost(self, link: ClusterLink) -> None:
        """C{link} closed or stopped answering."""

    def message_received(self, link: ClusterLink, channel: str, data: bytes) -> None:
        """A whole message arrived on C{link}."""

    def members_received(
        self, link: ClusterLink, members: list[tuple[str, str]]
    ) -> None:
        """The peer on C{link} told us the C{(node_name, address)} it knows."""

    def connected_to_self(self, link: ClusterLink) -> None:
        """C{link}, which this node opened, leads back to this node."""

    def owns_nonce(self, nonce: bytes) -> bool:
        """Whether one of this node's own links uses C{nonce}."""

    def admit(self, link: ClusterLink) -> Deferred[None]:
        """
        Decide whether the proven peer of C{link} may join; fails with
        L{DuplicateNode} when a live node of that name is linked already.
        """

    def warn_peer(
        self, kind: str, address: str, text: str, level: LogLevel = ..., **fields: Any
    ) -> None:
        """
        Log C{text} (a warning by default), caused by the peer at
        C{address}, rate-limited.
        """


class LinkInputs(Protocol):
    """
    The inputs of a link's state machine.
    """

    def dial(self) -> None:
        """This side connected: send L{Hello}."""

    def greeted(self) -> None:
        """This side accepted and answered the peer's L{Hello}."""

    def peer_proved(self) -> None:
        """
        The accepting peer proved the secret in its answer to L{Hello};
        L{Authenticate} is sent.
        """

    def proof_checked(self) -> None:
        """The connecting peer proved the secret in L{Authenticate}."""

    def admitted(self) -> None:
        """The owner admitted the peer: the handshake is done."""

    def stop(self) -> None:
        """
        Close gracefully: flush what was sent, keep reading and delivering
        what the peer sent until it closes its side too; abort after a
        timeout.
        """

    def refuse(self) -> None:
        """Stop reading; AMP sends the refusal and closes."""

    def fail(self) -> None:
        """Abort the connection now."""

    def peer_finished(self) -> None:
        """The peer closed its side of the connection."""

    def lost(self) -> None:
        """The connection is gone."""


def _build_machine() -> Callable[[ClusterLink], LinkInputs]:
    machine = TypeMachineBuilder(LinkInputs, ClusterLink)
    opened = machine.state("Opened")
    greeting = machine.state("Greeting")
    authenticating = machine.state("Authenticating")
    proving = machine.state("Proving")
    admitting = machine.state("Admitting")
    up = machine.state("Up")
    draining = machine.state("Draining")
    aborted = machine.state("Aborted")
    closed = machine.state("Closed")
    handshaking = [opened, greeting, authenticating, proving, admitting]

    @opened.upon(LinkInputs.dial).to(greeting)
    def dial(inputs: LinkInputs, link: ClusterLink) -> None:
        link._enter(_GREETING)
        link._send_hello()

    @opened.upon(LinkInputs.greeted).to(proving)
    def greeted(inputs: LinkInputs, link: ClusterLink) -> None:
        link._enter(_PROVING)

    @greeting.upon(LinkInputs.peer_proved).to(authenticating)
    def peer_proved(inputs: LinkInputs, link: ClusterLink) -> None:
        link._enter(_AUTHENTICATING)

    @proving.upon(LinkInputs.proof_checked).to(admitting)
    def proof_checked(inputs: LinkInputs, link: ClusterLink) -> None:
        link._enter(_ADMITTING)

    @authenticating.upon(LinkInputs.admitted).to(up)
    @admitting.upon(LinkInputs.admitted).to(up)
    def admitted(inputs: LinkInputs, link: ClusterLink) -> None:
        link._enter(_UP)
        link._start_heartbeats()

    @up.upon(LinkInputs.stop).to(draining)
    def drain(inputs: LinkInputs, link: ClusterLink) -> None:
        link._enter(_DRAINING)
        link._drain(half_close=True)

    def abort(inputs: LinkInputs, link: ClusterLink) -> None:
        link._enter(_ABORTED)
        link._abort()

    def refuse(inputs: LinkInputs, link: ClusterLink) -> None:
        link._enter(_ABORTED)
        link._refuse()

    for state in handshaking:
        state.upon(LinkInputs.stop).to(aborted)(abort)
        state.upon(LinkInputs.refuse).to(aborted)(refuse)
    for state in [*handshaking, up, draining]:
        state.upon(LinkInputs.fail).to(aborted)(abort)
    for state in [draining, aborted, closed]:
        state.upon(LinkInputs.stop).loop().returns(None)
    for state in [up, draining, aborted, closed]:
        state.upon(LinkInputs.refuse).loop().returns(None)
    # A refused link waits for AMP to close it; failing it forces that.
    aborted.upon(LinkInputs.fail).loop()(abort)
    closed.upon(LinkInputs.fail).loop().returns(None)

    def lose(inputs: LinkInputs, link: ClusterLink) -> None:
        link._enter(_CLOSED)
        link._stop_timers()

    @up.upon(LinkInputs.peer_finished).to(draining)
    def peer_finished(inputs: LinkInputs, link: ClusterLink) -> None:
        link._enter(_DRAINING)
        link._drain(half_close=False)

    @draining.upon(LinkInputs.peer_finished).loop()
    def finish(inputs: LinkInputs, link: ClusterLink) -> None:
        link._finish()

    for state in handshaking:
        state.upon(LinkInputs.peer_finished).to(aborted)(abort)
    for state in [aborted, closed]:
        state.upon(LinkInputs.peer_finished).loop().returns(None)

    for state in [*handshaking, up, draining, aborted]:
        state.upon(LinkInputs.lost).to(closed)(lose)
    closed.upon(LinkInputs.lost).loop().returns(None)
    return machine.build()


class _Responders(amp.CommandLocator):
    """
    The AMP responders of one link, and the gate in front of them: a
    command the link's L{Phase} does not allow closes the connection with
    one rate-limited warning, and one whose arguments do not decode too.
    """

    def __init__(self, link: ClusterLink) -> None:
        self._link = link

    def locateResponder(self, name: bytes) -> Callable[[amp.AmpBox], Any]:
        link = self._link
        phase = link._phase
        if name in phase.handles:
            responder = super().locateResponder(name)  # type: ignore[no-untyped-call]
            if name in _ANSWERED:
                # AMP logs a traceback for an answered command whose
                # arguments do not decode; catch that first.  Unanswered
                # ones (Deliver, Members) reach unhandledError instead.
                return lambda box: link._run(responder, name, box)
            return responder  # type: ignore[no-any-return]
        if name in phase.queues:
            return lambda box: link._queue(name, box)
        if not phase.quiet:
            link._violation(
                "command",
                "sent a {command} command while the link was {phase}",
                command=name.decode("ascii", "replace")[:40],
                phase=phase.name,
            )
        return _never

    @Hello.responder
    def hello(self, version: int, node_name: str, nonce: bytes) -> dict[str, Any]:
        return self._link._hello(version, node_name, nonce)

    @Authenticate.responder
    def authenticate(
        self, proof: bytes, incarnation: str, advertise: str
    ) -> Deferred[dict[str, Any]]:
        return self._link._authenticate(proof, incarnation, advertise)

    @Deliver.responder
    def deliver(
        self, channel: str, message_id: int, index: int, count: int, data: bytes
    ) -> dict[str, Any]:
        self._link._deliver(channel, message_id, index, count, data)
        return {}

    @Members.responder
    def members(self, members: list[dict[str, str]]) -> dict[str, Any]:
        self._link._members(members)
        return {}

    @Ping.responder
    def ping(self) -> dict[str, Any]:
        return {}


def _never(box: amp.AmpBox) -> Deferred[Any]:
    """
    The responder of a command that is not answered: its link is closing.
    """
    return Deferred()


@implementer(IHalfCloseableProtocol)
class ClusterLink(amp.AMP):
    """
    The AMP protocol of one cluster connection, on either side.

    @ivar description: the client endpoint description this node dialled,
        for a link it opened; C{None} for a link it accepted.
    @ivar peer_name: the peer's node name, once its L{Hello} is known.
    @ivar peer_incarnation: the peer's incarnation, once it proved the
        secret.
    @ivar peer_advertise: the address the peer advertises, or C{""}.
    @ivar link_key: C{(initiating node name, initiator's nonce)}: the same
        on both sides, so both keep the same one of two duplicate links.
    @ivar was_up: whether the handshake ever succeeded.
    @ivar closed: fires when the connection is gone.
    """

    log = Logger()

    def __init__(
        self,
        owner: LinkOwner,
        clock: IReactorTime,
        description: str | None = None,
    ) -> None:
        super().__init__(locator=_Responders(self))  # type: ignore[no-untyped-call]
        self._owner = owner
        self._clock = clock
        self.description = description
        self.peer_name: str | None = None
        self.peer_incarnation: str | None = None
        self.peer_advertise = ""
        self.link_key: tuple[str, bytes] = ("", b"")
        self.was_up = False
        self.closed: Deferred[None] = Deferred()
        self.nonce = secrets.token_bytes(16)
        self._peer_nonce = b""
        self._peer_address: str | None = None
        self._phase = _OPENED
        self._unproven_budget: int | None = UNAUTHENTICATED_BYTES
        self._MAX_VALUE_LENGTH = UNAUTHENTICATED_VALUE_BYTES
        self._queued: list[tuple[bytes, amp.AmpBox, Deferred[Any]]] = []
        self._handshake_timer: IDelayedCall | None = None
        self._close_timer: IDelayedCall | None = None
        self._heartbeat: LoopingCall | None = None
        self._last_heard = 0.0
        self._next_message_id = 0
        self._reassembler = Reassembler()
        self._machine = _MACHINE(self)

    @property
    def initiator(self) -> bool:
        """
        Whether this node opened the connection.
        """
        return self.description is not None

    @property
    def link_state(self) -> str:
        """
        The name of the link's state: C{"Up"}, C{"Draining"}, ...
        """
        return self._phase.name

    @property
    def is_up(self) -> bool:
        """
        Whether the handshake succeeded and the link is open.
        """
        return self._phase.sends

    @property
    def handshaking(self) -> bool:
        """
        Whether this link has a peer that proved the secret and waits for
        the last answer of the handshake (the peer is up on it already).
        """
        return self._phase is _AUTHENTICATING

    @property
    def peer_address(self) -> str:
        """
        The peer's address, as C{host:port} when it is an IP address, kept
        after the connection is gone.
        """
        if self._peer_address is None:
            return self.description or "?"
        return self._peer_address

    # Connection lifetime

    def makeConnection(self, transport: Any) -> None:
        """
        Start the protocol without AMP's log line for every connection (a
        stranger could make it repeat).
        """
        peer = transport.getPeer()
        host, port = getattr(peer, "host", None), getattr(peer, "port", None)
        if host is not None:
            self._peer_address = f"{host}:{port}"
        elif self.description is None:
            self._peer_address = str(peer)
        amp.BinaryBoxProtocol.makeConnection(self, transport)

    def connectionMade(self) -> None:
        """
        Start the handshake clock and, on the connecting side, the
        handshake.
        """
        super().connectionMade()  # type: ignore[no-untyped-call]
        self._last_heard = self._clock.seconds()
        self._handshake_timer = self._clock.callLater(
            self._owner.heartbeat_timeout, self._handshake_timed_out
        )
        if self.initiator:
            self._machine.dial()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """
        Stop the timers and tell the owner.
        """
        amp.BinaryBoxProtocol.connectionLost(self, reason)
        self.transport = None
        self._machine.lost()
        if self._queued:
            self.log.info(
                "Cluster link with {node} closed before its handshake finished; "
                "{count} commands it sent early were not handled",
                node=self.peer_name,
                count=len(self._queued),
            )
            self._queued = []
        self._owner.link_lost(self)
        self.closed.callback(None)

    def close(self) -> None:
        """
        Close the connection gracefully.  Over TCP this is a half-close:
        what was sent is flushed, what the peer sent before it learns of the
        close is still read and delivered (and unread data never turns the
        close into a reset that would lose what we sent), and the
        connection ends when the peer closes its side.  It is aborted if
        that takes longer than the owner's C{close_timeout}.  A link still
        in its handshake is aborted.
        """
        self._machine.stop()

    def abort(self) -> None:
        """
        Close the connection at once; nothing more is sent or received.
        """
        self._machine.fail()

    def _enter(self, phase: Phase) -> None:
        self._phase = phase
        if phase.proven and self._unproven_budget is not None:
            self._unproven_budget = None
            del self._MAX_VALUE_LENGTH

    def _abort(self) -> None:
        self._stop_timers()
        self.paused = True
        if self.transport is not None:
            # Every stream transport has abortConnection; ITransport lacks it.
            abort = getattr(self.transport, "abortConnection", None)
            if abort is not None:
                abort()
            else:
                self.transport.loseConnection()

    def _refuse(self) -> None:
        # AMP sends the refusal and closes the connection; nothing more
        # from this peer is read, and the close is forced if it hangs.
        self._stop_timers()
        self.paused = True
        self._close_timer = self._clock.callLater(
            self._owner.close_timeout, self._close_timed_out
        )

    def _drain(self, half_close: bool) -> None:
        # A half-close (where TCP allows it) flushes what we sent and still
        # reads what the peer sent before it learned of the close; the peer
        # then closes its side (readConnectionLost).
        self._stop_timers()
        self._close_timer = self._clock.callLater(
            self._owner.close_timeout, self._close_timed_out
        )
        if half_close and ITCPTransport.providedBy(self.transport):
            self.transport.loseWriteConnection()
        elif self.transport is not None:
            self.transport.loseConnection()

    def _finish(self) -> None:
        if self.transport is not None:
            self.transport.loseConnection()

    def readConnectionLost(self) -> None:
        """
        The peer closed its side: close ours once what we sent is flushed.
        """
        self._machine.peer_finished()

    def writeConnectionLost(self) -> None:
        """
        Our side is closed; the peer's may still bring data.
        """

    def _close_timed_out(self) -> None:
        self._close_timer = None
        self._machine.fail()

    def _stop_timers(self) -> None:
        if self._handshake_timer is not None and self._handshake_timer.active():
            self._handshake_timer.cancel()
        self._handshake_timer = None
        if self._close_timer is not None and self._close_timer.active():
            self._close_timer.cancel()
        self._close_timer = None
        if self._heartbeat is not None and self._heartbeat.running:
            self._heartbeat.stop()
        self._heartbeat = None

    def _handshake_timed_out(self) -> None:
        self._handshake_timer = None
        self._owner.warn_peer(
            "handshake-timeout",
            self.peer_address,
            "Cluster link handshake with {address} timed out",
        )
        self._machine.fail()

    # Limits and violations

    def dataReceived(self, data: bytes) -> None:
        """
        Parse C{data}, counting it against what a peer may send before its
        proof, and close the connection when the box being read grows past
        L{MAX_BOX_KEYS} (checked once a read, which adds 64 KiB at most).
        """
        budget = self._unproven_budget
        if budget is not None:
            budget -= len(data)
            self._unproven_budget = budget
            if budget < 0:
                self._violation(
                    "too-big",
                    "sent more than {limit} bytes before proving the cluster secret",
                    limit=UNAUTHENTICATED_BYTES,
                )
                return
        super().dataReceived(data)  # type: ignore[no-untyped-call]
        box = self._currentBox
        if box is not None and len(box) > MAX_BOX_KEYS:
            self._currentBox = None
            self._violation(
                "too-big",
                "sent an AMP box of more than {keys} keys",
                keys=MAX_BOX_KEYS,
            )

    def lengthLimitExceeded(self, length: int) -> None:
        """
        Close the connection on a key or value longer than allowed.
        """
        self._violation(
            "too-long",
            "sent an AMP key or value of {length} bytes",
            length=length,
        )

    def ampBoxReceived(self, box: amp.AmpBox) -> None:
        """
        Note that the peer is alive, then handle C{box}; a box that is not
        a command or a known answer closes the connection.
        """
        self._last_heard = self._clock.seconds()
        try:
            super().ampBoxReceived(box)  # type: ignore[no-untyped-call]
        except Exception as error:
            self._violation(
                "malformed",
                "sent a malformed AMP box ({error})",
                error=repr(error)[:200],
            )

    def _run(
        self, responder: Callable[[amp.AmpBox], Any], name: bytes, box: amp.AmpBox
    ) -> Any:
        try:
            return responder(box)
        except Exception as error:
            # Arguments that do not decode raise before the responder runs.
            self._violation(
                "malformed",
                "sent a {command} command that does not decode ({error})",
                command=name.decode("ascii", "replace"),
                error=repr(error)[:200],
            )
            return Deferred()

    def _violation(self, kind: str, text: str, **fields: Any) -> None:
        if self._phase.quiet:
            return
        self._owner.warn_peer(
            kind,
            self.peer_address,
            "Closed the cluster link with {address}: it " + text,
            **fields,
        )
        self._machine.fail()

    def unhandledError(self, failure: Failure) -> None:
        """
        Close the link on an error nothing else handled, with one short
        warning rather than a traceback.
        """
        self._violation(
            "error",
            "caused an error: {error}",
            error=repr(failure.value)[:200],
        )

    def _queue(self, name: bytes, box: amp.AmpBox) -> Deferred[Any]:
        """
        Keep a command that arrived before the last answer of the
        handshake; it is handled once the link is up.
        """
        if len(self._queued) >= MAX_QUEUED_BOXES:
            self._violation(
                "queue",
                "sent more than {count} commands before the handshake finished",
                count=MAX_QUEUED_BOXES,
            )
            return Deferred()
        answer: Deferred[Any] = Deferred()
        self._queued.append((name, box, answer))
        return answer

    def _handle_queued(self) -> None:
        queued, self._queued = self._queued, []
        locator = self.locator
        for name, box, answer in queued:
            if not self._phase.delivers:
                break
            responder = locator.locateResponder(name)
            maybeDeferred(responder, box).chainDeferred(answer)

    # The handshake, connecting side

    def _send_hello(self) -> None:
        hello: Deferred[dict[str, Any]] = self.callRemote(  # type: ignore[no-untyped-call]
            Hello,
            version=PROTOCOL_VERSION,
            node_name=self._owner.node_name,
            nonce=self.nonce,
        )
        hello.addCallbacks(self._hello_answered, self._refused)

    def _hello_answered(self, answer: dict[str, Any]) -> None:
        if self._phase is not _GREETING:
            return
        node, nonce = answer["node_name"], answer["nonce"]
        self.peer_name = node
        self._peer_nonce = nonce
        self.link_key = (self._owner.node_name, self.nonce)
        if node == self._owner.node_name:
            if self._owner.owns_nonce(nonce):
                self._owner.connected_to_self(self)
            else:
                self._owner.warn_peer(
                    "same-name",
                    self.peer_address,
                    "Refused cluster link to {address}: the node there is named "
                    "{node} too, like this one; give every node its own --node-name",
                    level=LogLevel.error,
                    node=node,
                )
            self._machine.fail()
            return
        secret = self._owner.secret
        if secret is not None:
            proof = prove_secret(secret, _CONNECT, self._peer_nonce, self.nonce)
            expected = prove_secret(secret, _ACCEPT, self.nonce, self._peer_nonce)
            if not hmac.compare_digest(expected, answer["proof"]):
                self._owner.warn_peer(
                    "secret",
                    self.peer_address,
                    "Refused cluster link to {address}: it did not prove the "
                    "cluster secret",
                )
                if answer["secret_required"]:
                    # It has a secret too, a different one: let it see so.
                    self._refuse_peer(proof)
                else:
                    self._machine.fail()
                return
        elif answer["secret_required"]:
            self._owner.warn_peer(
                "secret",
                self.peer_address,
                "Refused cluster link to {address}: it requires a cluster secret "
                "and this node has none",
            )
            self._refuse_peer(b"")
            return
        else:
            proof = b""
        self._machine.peer_proved()
        authenticated: Deferred[dict[str, Any]] = self.callRemote(  # type: ignore[no-untyped-call]
            Authenticate,
            proof=proof,
            incarnation=self._owner.incarnation,
            advertise=self._owner.advertise,
        )
        authenticated.addCallbacks(self._authenticate_answered, self._refused)

    def _refuse_peer(self, proof: bytes) -> None:
        # Send our proof all the same (it tells nothing of the secret), so
        # that the peer finds the mismatch and logs it too; no incarnation.
        refused: Deferred[Any] = self.callRemote(  # type: ignore[no-untyped-call]
            Authenticate, proof=proof, incarnation="", advertise=""
        )
        refused.addErrback(lambda _: None)
        self._machine.refuse()
        if self.transport is not None:
            self.transport.loseConnection()

    def _authenticate_answered(self, answer: dict[str, Any]) -> None:
        if self._phase is not _AUTHENTICATING:
            return
        self.peer_incarnation = answer["incarnation"]
        self.peer_advertise = answer["advertise"]
        self._owner.admit(self).addCallbacks(self._admitted, self._not_admitted)

    def _not_admitted(self, failure: Failure) -> None:
        failure.trap(DuplicateNode)
        self._machine.fail()

    def _refused(self, failure: Failure) -> None:
        if failure.check(*_LOST) or self._phase.quiet:
            return
        self._owner.warn_peer(
            "refused",
            self.peer_address,
            "Cluster node at {address} refused the link: {reason}",
            level=LogLevel.error if failure.check(DuplicateNode) else LogLevel.warn,
            reason=str(failure.value)[:300],
        )
        self._machine.fail()

    # The handshake, accepting side

    def _hello(self, version: int, node_name: str, nonce: bytes) -> dict[str, Any]:
        if version != PROTOCOL_VERSION:
            self._owner.warn_peer(
                "version",
                self.peer_address,
                "Refused cluster link from {address}: it speaks version "
                "{version} of the cluster protocol, this node {ours}",
                version=version,
                ours=PROTOCOL_VERSION,
            )
            self._machine.refuse()
            raise LinkRefused(
                f"unsupported cluster protocol version {version} "
                f"(this node speaks {PROTOCOL_VERSION})"
            )
        if node_name == self._owner.node_name and not self._owner.owns_nonce(nonce):
            self._owner.warn_peer(
                "same-name",
                self.peer_address,
                "Refused cluster link from {address}: it is named {node} too, "
                "like this node; give every node its own --node-name",
                level=LogLevel.error,
                node=node_name,
            )
            self._machine.refuse()
            raise LinkRefused(f"this node is named {node_name} too")
        self.peer_name = node_name
        self._peer_nonce = nonce
        self.link_key = (node_name, nonce)
        self._machine.greeted()
        secret = self._owner.secret
        proof = b""
        if secret is not None:
            proof = prove_secret(secret, _ACCEPT, nonce, self.nonce)
        return {
            "node_name": self._owner.node_name,
            "nonce": self.nonce,
            "secret_required": secret is not None,
            "proof": proof,
        }

    def _authenticate(
        self, proof: bytes, incarnation: str, advertise: str
    ) -> Deferred[dict[str, Any]]:
        secret = self._owner.secret
        if secret is not None:
            expected = prove_secret(secret, _CONNECT, self.nonce, self._peer_nonce)
            if not hmac.compare_digest(expected, proof):
                self._owner.warn_peer(
                    "secret",
                    self.peer_address,
                    "Refused cluster link from {address}: wrong or missing "
                    "cluster secret",
                )
                self._machine.refuse()
                raise LinkRefused("wrong or missing cluster secret")
        if self.peer_name == self._owner.node_name:
            # Our own connection looped back; the connecting side gives up.
            self._machine.refuse()
            raise LinkRefused("connected to itself")
        self._machine.proof_checked()
        self.peer_incarnation = incarnation
        self.peer_advertise = advertise
        answer = {
            "incarnation": self._owner.incarnation,
            "advertise": self._owner.advertise,
        }

        def admitted(_: None) -> dict[str, Any]:
            self._admitted(None)
            return answer

        def refused(failure: Failure) -> Failure:
            self._machine.refuse()
            return failure

        return self._owner.admit(self).addCallbacks(admitted, refused)

    def _admitted(self, _: None) -> None:
        if self._phase not in (_AUTHENTICATING, _ADMITTING):
            return
        self._machine.admitted()
        self.was_up = True
        self._owner.link_up(self)
        if self._queued:
            self._handle_queued()

    def _start_heartbeats(self) -> None:
        if self._handshake_timer is not None and self._handshake_timer.active():
            self._handshake_timer.cancel()
        self._handshake_timer = None
        self._last_heard = self._clock.seconds()
        self._heartbeat = LoopingCall(self._beat)
        self._heartbeat.clock = self._clock
        self._heartbeat.start(self._owner.heartbeat_interval, now=False)

    # Heartbeats

    def _beat(self) -> None:
        silent = self._clock.seconds() - self._last_heard
        if silent >= self._owner.heartbeat_timeout:
            self.log.warn(
                "Cluster node {node} did not answer for {seconds} seconds",
                node=self.peer_name,
                seconds=silent,
            )
            self._machine.fail()
            self._owner.link_lost(self)
            return
        ping: Deferred[dict[str, Any]] = self.callRemote(Ping)  # type: ignore[no-untyped-call]
        ping.addErrback(self._ping_failed)

    def _ping_failed(self, failure: Failure) -> None:
        # A lost connection is reported by connectionLost.
        if not failure.check(*_LOST):
            self.log.warn(
                "Cluster heartbeat to {node} failed: {error}",
                node=self.peer_name,
                error=repr(failure.value)[:200],
            )

    def probe(self, timeout: float) -> Deferred[bool]:
        """
        Ask the peer whether it is there.

        @return: fires with C{True} when it answers within C{timeout}
            seconds, C{False} otherwise.
        """
        if not self.is_up:
            return succeed(False)
        ping: Deferred[Any] = self.callRemote(Ping)  # type: ignore[no-untyped-call]
        ping.addTimeout(timeout, self._clock)
        return ping.addCallbacks(lambda _: True, lambda _: False)

    # Messages

    def send_message(self, channel: str, data: bytes) -> None:
        """
        Send C{data} to the handler of C{channel} on the peer, chunked, its
        chunks consecutive on this connection.
        """
        if not self._phase.sends:
            return
        message_id = self._next_message_id
        self._next_message_id += 1
        chunks = split(data)
        for index, chunk in enumerate(chunks):
            self.callRemote(  # type: ignore[no-untyped-call]
                Deliver,
                channel=channel,
                message_id=message_id,
                index=index,
                count=len(chunks),
                data=chunk,
            )

    def send_members(self, members: list[tuple[str, str]]) -> None:
        """
        Tell the peer the C{(node_name, address)} of the members we know.
        """
        if self._phase.sends:
            self.callRemote(  # type: ignore[no-untyped-call]
                Members,
                members=[{"node_name": n, "address": a} for n, a in members],
            )

    def _deliver(
        self, channel: str, message_id: int, index: int, count: int, data: bytes
    ) -> None:
        result = self._reassembler.feed(message_id, index, count, data)
        if isinstance(result, ChunkError):
            self._violation(
                "chunk",
                "sent a malformed chunked message: {reason}",
                reason=result.reason,
            )
        elif result is not None:
            self._owner.message_received(self, channel, result)

    def _members(self, members: list[dict[str, str]]) -> None:
        if self._phase.sends:
            self._owner.members_received(
                self, [(m["node_name"], m["address"]) for m in members]
            )


_MACHINE = _build_machine()
