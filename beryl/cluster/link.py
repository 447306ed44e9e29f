"""
One AMP connection between two cluster nodes.

The link does the handshake, heartbeats, chunking and reassembly for its
connection; everything else (which links are kept, who is up, where
messages go) is its owner's, the L{beryl.cluster.service.ClusterService}.
"""

from __future__ import annotations

import hmac
import secrets
from typing import Any, Protocol

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionClosed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import connectionDone
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.protocols import amp
from twisted.python.failure import Failure

from beryl.cluster.chunks import ChunkError, Reassembler, split
from beryl.cluster.commands import (
    PROTOCOL_VERSION,
    Authenticate,
    Deliver,
    Hello,
    Members,
    PeerHandshakeRefused,
    Ping,
    prove_secret,
)

__all__ = ["ClusterLink", "LinkOwner"]

_LOST = (ConnectionClosed, amp.ProtocolSwitched)
_ACCEPT = b"accept"
_CONNECT = b"connect"


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


class ClusterLink(amp.AMP):
    """
    The AMP protocol of one cluster connection, on either side.

    @ivar description: the client endpoint description this node dialled,
        for a link it opened; L{None} for a link it accepted.
    @ivar peer_name: the peer's node name, once its L{Hello} is known.
    @ivar peer_incarnation: the peer's incarnation, likewise.
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
        super().__init__()  # type: ignore[no-untyped-call]
        self._owner = owner
        self._clock = clock
        self.description = description
        self.peer_name: str | None = None
        self.peer_incarnation: str | None = None
        self.peer_advertise = ""
        self.link_key: tuple[str, bytes] = ("", b"")
        self.was_up = False
        self.closed: Deferred[None] = Deferred()
        self._nonce = secrets.token_bytes(16)
        self._peer_nonce = b""
        self._state = "new"
        self._handshake_timer: IDelayedCall | None = None
        self._heartbeat: LoopingCall | None = None
        self._last_heard = 0.0
        self._next_message_id = 0
        self._reassembler = Reassembler()

    @property
    def initiator(self) -> bool:
        """
        Whether this node opened the connection.
        """
        return self.description is not None

    @property
    def is_up(self) -> bool:
        """
        Whether the handshake succeeded and the link is open.
        """
        return self._state == "up"

    @property
    def handshaking(self) -> bool:
        """
        Whether this accepted link knows its peer and waits for the peer's
        proof, the last step of the handshake.
        """
        return self._state == "hello-answered"

    # Connection lifetime

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
            self._state = "hello-sent"
            hello: Deferred[dict[str, Any]] = self.callRemote(  # type: ignore[no-untyped-call]
                Hello,
                version=PROTOCOL_VERSION,
                node_name=self._owner.node_name,
                incarnation=self._owner.incarnation,
                advertise=self._owner.advertise,
                nonce=self._nonce,
            )
            hello.addCallbacks(self._hello_answered, self._hello_failed)
            hello.addErrback(self._log_failure, "Cluster handshake failed")

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """
        Stop the timers and tell the owner.
        """
        super().connectionLost(reason)  # type: ignore[no-untyped-call]
        self._stop_timers()
        self._state = "closed"
        self._owner.link_lost(self)
        self.closed.callback(None)

    def close(self) -> None:
        """
        Close the connection without waiting for the peer; nothing more is
        sent or received.
        """
        self._stop_timers()
        if self._state != "closed":
            self._state = "closing"
        if self.transport is not None:
            # Every stream transport has abortConnection; ITransport lacks it.
            abort = getattr(self.transport, "abortConnection", None)
            if abort is not None:
                abort()
            else:
                self.transport.loseConnection()

    def _stop_timers(self) -> None:
        self._cancel_handshake_timer()
        if self._heartbeat is not None and self._heartbeat.running:
            self._heartbeat.stop()
        self._heartbeat = None

    def _cancel_handshake_timer(self) -> None:
        if self._handshake_timer is not None and self._handshake_timer.active():
            self._handshake_timer.cancel()
        self._handshake_timer = None

    def _handshake_timed_out(self) -> None:
        self._handshake_timer = None
        self.log.warn(
            "Cluster link handshake with {address} timed out",
            address=self.description or "an incoming connection",
        )
        self.close()

    def _log_failure(self, failure: Failure, message: str) -> None:
        self.log.failure(message, failure, node=self.peer_name)

    # The handshake, connecting side

    def _hello_answered(self, answer: dict[str, Any]) -> None:
        if self._state != "hello-sent":
            return
        node, incarnation = answer["node_name"], answer["incarnation"]
        self._set_peer(node, incarnation, answer["advertise"], answer["nonce"])
        self.link_key = (self._owner.node_name, self._nonce)
        if node == self._owner.node_name:
            if incarnation == self._owner.incarnation:
                self._owner.connected_to_self(self)
            else:
                self.log.error(
                    "Refused cluster link to {address}: another node is named "
                    "{node} too",
                    address=self.description,
                    node=node,
                )
            self.close()
            return
        secret = self._owner.secret
        if secret is not None:
            expected = prove_secret(secret, _ACCEPT, self._nonce, self._peer_nonce)
            if not hmac.compare_digest(expected, answer["proof"]):
                self._refuse("it did not prove the cluster secret")
                return
            proof = prove_secret(secret, _CONNECT, self._peer_nonce, self._nonce)
        else:
            proof = b""
        self.callRemote(Authenticate, proof=proof)  # type: ignore[no-untyped-call]
        if secret is None and answer["secret_required"]:
            # Let the peer refuse (and log) too, then give up on it.
            self._refuse("it requires a cluster secret and this node has none")
            return
        self._become_up()

    def _hello_failed(self, failure: Failure) -> None:
        if failure.check(*_LOST):
            return
        failure.trap(PeerHandshakeRefused, amp.RemoteAmpError)
        self.log.warn(
            "Cluster node at {address} refused the link: {reason}",
            address=self.description,
            reason=str(failure.value),
        )
        self.close()

    def _refuse(self, reason: str) -> None:
        self.log.warn(
            "Refused cluster link with {node}: {reason}",
            node=self.peer_name,
            reason=reason,
        )
        self.close()

    # The handshake, accepting side

    @Hello.responder
    def _hello(
        self,
        version: int,
        node_name: str,
        incarnation: str,
        advertise: str,
        nonce: bytes,
    ) -> dict[str, Any]:
        if self.initiator or self._state != "new":
            raise PeerHandshakeRefused("handshake out of order")
        if version != PROTOCOL_VERSION:
            raise PeerHandshakeRefused(f"unsupported protocol version {version}")
        if (
            node_name == self._owner.node_name
            and incarnation != self._owner.incarnation
        ):
            self.log.error(
                "Refused cluster link: another node is named {node} too",
                node=node_name,
            )
            raise PeerHandshakeRefused("a node with that name is already here")
        self._set_peer(node_name, incarnation, advertise, nonce)
        self.link_key = (node_name, nonce)
        self._state = "hello-answered"
        secret = self._owner.secret
        proof = b""
        if secret is not None:
            proof = prove_secret(secret, _ACCEPT, nonce, self._nonce)
        return {
            "node_name": self._owner.node_name,
            "incarnation": self._owner.incarnation,
            "advertise": self._owner.advertise,
            "nonce": self._nonce,
            "secret_required": secret is not None,
            "proof": proof,
        }

    @Authenticate.responder
    def _authenticate(self, proof: bytes) -> dict[str, Any]:
        if self.initiator or self._state != "hello-answered":
            self.log.warn("Dropped a cluster authentication out of order")
            return {}
        if self.peer_name == self._owner.node_name:
            # Our own connection looped back; the connecting side gives up.
            return {}
        secret = self._owner.secret
        if secret is not None:
            expected = prove_secret(secret, _CONNECT, self._nonce, self._peer_nonce)
            if not hmac.compare_digest(expected, proof):
                self._refuse("wrong or missing cluster secret")
                return {}
        self._become_up()
        return {}

    def _set_peer(
        self, node_name: str, incarnation: str, advertise: str, nonce: bytes
    ) -> None:
        self.peer_name = node_name
        self.peer_incarnation = incarnation
        self.peer_advertise = advertise
        self._peer_nonce = nonce

    def _become_up(self) -> None:
        self._cancel_handshake_timer()
        self._state = "up"
        self.was_up = True
        self._last_heard = self._clock.seconds()
        self._heartbeat = LoopingCall(self._beat)
        self._heartbeat.clock = self._clock
        self._heartbeat.start(self._owner.heartbeat_interval, now=False)
        self._owner.link_up(self)

    # Heartbeats

    def ampBoxReceived(self, box: amp.AmpBox) -> None:
        """
        Note that the peer is alive, then handle C{box}.
        """
        self._last_heard = self._clock.seconds()
        super().ampBoxReceived(box)  # type: ignore[no-untyped-call]

    def _beat(self) -> None:
        silent = self._clock.seconds() - self._last_heard
        if silent >= self._owner.heartbeat_timeout:
            self.log.warn(
                "Cluster node {node} did not answer for {seconds} seconds",
                node=self.peer_name,
                seconds=silent,
            )
            self.close()
            self._owner.link_lost(self)
            return
        ping: Deferred[dict[str, Any]] = self.callRemote(Ping)  # type: ignore[no-untyped-call]
        ping.addErrback(self._ping_failed)

    def _ping_failed(self, failure: Failure) -> None:
        # A lost connection is reported by connectionLost.
        if not failure.check(*_LOST):
            self._log_failure(failure, "Cluster heartbeat to {node} failed")

    @Ping.responder
    def _ping(self) -> dict[str, Any]:
        if not self.is_up:
            raise PeerHandshakeRefused("the handshake is not done")
        return {}

    # Messages

    def send_message(self, channel: str, data: bytes) -> None:
        """
        Send C{data} to the handler of C{channel} on the peer, chunked, its
        chunks consecutive on this connection.
        """
        if not self.is_up:
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
        if self.is_up:
            self.callRemote(  # type: ignore[no-untyped-call]
                Members,
                members=[{"node_name": n, "address": a} for n, a in members],
            )

    @Deliver.responder
    def _deliver(
        self, channel: str, message_id: int, index: int, count: int, data: bytes
    ) -> dict[str, Any]:
        if not self.is_up:
            self.log.warn("Dropped a cluster message that arrived before the handshake")
            return {}
        result = self._reassembler.feed(message_id, index, count, data)
        if isinstance(result, ChunkError):
            self.log.warn(
                "Dropped a malformed cluster message from {node}: {reason}",
                node=self.peer_name,
                reason=result.reason,
            )
        elif result is not None:
            self._owner.message_received(self, channel, result)
        return {}

    @Members.responder
    def _members(self, members: list[dict[str, str]]) -> dict[str, Any]:
        if self.is_up:
            self._owner.members_received(
                self, [(m["node_name"], m["address"]) for m in members]
            )
        return {}

    def unhandledError(self, failure: Failure) -> None:
        """
        Log and drop a command that could not be decoded or handled, keeping
        the link: one bad message must not take down the connection.
        """
        self.log.failure(
            "Dropped a cluster message from {node} that failed to decode",
            failure,
            node=self.peer_name,
        )
