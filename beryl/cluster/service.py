"""
The cluster: AMP links from this node to every other node, kept up with
retries and heartbeats, and the L{INodeMessaging} on top of them.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import attrs
from twisted.application.internet import ClientService, backoffPolicy
from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, fail, gatherResults, maybeDeferred, succeed
from twisted.internet.endpoints import clientFromString, serverFromString
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import (
    IAddress,
    IListeningPort,
    IReactorTime,
    IStreamClientEndpoint,
    IStreamServerEndpoint,
)
from twisted.internet.protocol import Factory
from twisted.internet.task import deferLater
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure
from zope.interface import implementer

from beryl.cluster.addresses import gossip_safe
from beryl.cluster.commands import DuplicateNode
from beryl.cluster.link import ClusterLink
from beryl.cluster.local import MembershipObservers, new_incarnation
from beryl.cluster.ratelimit import LogLimiter
from beryl.counters import Counters
from beryl.interfaces import IMembershipObserver, INodeMessaging

__all__ = ["ClusterService"]

Handler = Callable[[str, bytes], None]
"""A channel handler: called with the sending node's name and the data."""

MAX_HELD_MESSAGES = 10_000
"""
The most messages held for one peer while its link is replaced by its
duplicate (a matter of one round trip).
"""


class _LinkFactory(Factory):
    """
    Builds the L{ClusterLink}s of one node, incoming or outgoing.
    """

    def __init__(self, service: ClusterService, description: str | None) -> None:
        """
        @param description: the client endpoint description of the peer
            dialled, or C{None} for the links this node accepts.
        """
        self._service = service
        self._description = description

    def buildProtocol(self, addr: IAddress | None) -> ClusterLink:
        link = ClusterLink(self._service, self._service.clock, self._description)
        link.factory = self
        self._service.link_created(link)
        return link


@attrs.define
class _Peer:
    """
    An address this node keeps a link to, and what it has learned about it.

    @ivar node_name: the name of the node found there, once known.
    @ivar parked: whether its C{ClientService} is stopped because the node
        is reached by another link (or is this node).
    """

    description: str
    service: ClientService
    node_name: str | None = None
    parked: bool = False


@implementer(INodeMessaging)
class ClusterService(MultiService):
    """
    This node's membership in the cluster, and L{INodeMessaging} over AMP
    links to the other nodes.

    It listens for links from other nodes and keeps a C{ClientService} link
    (retrying with backoff) to every peer it was given or has learned of by
    gossip.  Each pair of nodes ends up with exactly one link: of two
    duplicate links, both sides keep the one with the lower
    C{(initiating node, nonce)}.  A peer that disconnects, or does not
    answer heartbeats for C{heartbeat_timeout} seconds, is reported down.

    @ivar node_name: this node's name, unique in the cluster.
    @ivar incarnation: a new random id on each start.
    @ivar advertise: the client endpoint description other nodes can use
        to reach this node (told to peers so they can tell others), or
        C{""}.
    @ivar secret: the shared cluster secret, or C{None}.
    """

    log = Logger()

    def __init__(
        self,
        node_name: str,
        clock: IReactorTime,
        connect: Callable[[str], IStreamClientEndpoint],
        listen: IStreamServerEndpoint | None = None,
        peers: Sequence[str] = (),
        secret: bytes | None = None,
        advertise: str | None = None,
        heartbeat_interval: float = 1.0,
        heartbeat_timeout: float = 5.0,
        retry_policy: Callable[[int], float] | None = None,
        close_timeout: float = 2.0,
    ) -> None:
        """
        @param clock: schedules heartbeats, timeouts and retries.
        @param connect: makes the client endpoint for a peer's description
            (configured or learned by gossip).
        @param listen: where to accept links from other nodes, or C{None}
            to only connect out.
        @param peers: client endpoint descriptions of the nodes to connect
            to; the rest of the cluster is learned from them.
        @param retry_policy: seconds to wait before a reconnection attempt,
            given the number of failed attempts; backoff by default.
        @param close_timeout: seconds a closing link may take to flush what
            was sent on it (the presence "bye" of a stopping node) before it
            is aborted.
        """
        super().__init__()  # type: ignore[no-untyped-call]
        self.node_name = node_name
        self.incarnation = new_incarnation()
        self.clock = clock
        self.counters = Counters()
        self.secret = secret
        self.advertise = advertise or ""
        self.heartbeat_interval = heartbeat_interval
        self.heartbeat_timeout = heartbeat_timeout
        self.close_timeout = close_timeout
        self._warnings = LogLimiter(clock)
        self._connect = connect
        self._listen_endpoint = listen
        self._retry_policy = retry_policy or backoffPolicy(
            initialDelay=0.5, maxDelay=30.0
        )
        self._peers: dict[str, _Peer] = {}
        self._links: set[ClusterLink] = set()
        self._active: dict[str, ClusterLink] = {}
        self._replacing: dict[str, ClusterLink] = {}
        self._held: dict[str, list[tuple[str, bytes]]] = {}
        self._overflow: dict[str, int] = {}
        self._handlers: dict[str, list[Handler]] = {}
        self._observers = MembershipObservers()
        self._port: IListeningPort | None = None
        self._listening: list[Deferred[IListeningPort]] = []
        self._started_before = False
        for description in peers:
            self._add_peer(description, self._connect(description))

    @classmethod
    def from_descriptions(
        cls,
        reactor: Any,
        node_name: str,
        listen_description: str | None,
        peer_descriptions: Sequence[str],
        **options: Any,
    ) -> ClusterService:
        """
        Make a cluster service from endpoint description strings: a server
        description to listen on (C{"tcp:4001"}) and client descriptions of
        peers (C{"tcp:host=10.0.0.2:port=4001"}).  Other keyword arguments
        are those of L{ClusterService.__init__}.

        @raise ValueError: when a description does not parse.
        """
        listen = (
            None
            if listen_description is None
            else serverFromString(reactor, listen_description)
        )
        # __init__ makes every peer's endpoint, so a bad one raises here.
        return cls(
            node_name,
            reactor,
            lambda description: clientFromString(reactor, description),
            listen=listen,
            peers=peer_descriptions,
            **options,
        )

    # Service

    def startService(self) -> None:
        """
        Listen, and connect to every known peer.
        """
        if self.secret is None and self._listen_endpoint is not None:
            self.log.warn(
                "Cluster node {node} accepts any node that connects to its cluster "
                "port: no cluster secret is set (use --cluster-secret-file outside "
                "a trusted network)",
                node=self.node_name,
            )
        if self._started_before:
            self.incarnation = new_incarnation()
        self._started_before = True
        for peer in self._peers.values():
            peer.parked = False
        super().startService()  # type: ignore[no-untyped-call]
        if self._listen_endpoint is not None:
            listening = self._listen_endpoint.listen(_LinkFactory(self, None))
            listening.addCallbacks(self._listened, self._listen_failed)

    def _listened(self, port: IListeningPort) -> None:
        self._port = port
        self.log.info(
            "Cluster node {node} listening on {address}",
            node=self.node_name,
            address=port.getHost(),
        )
        waiting, self._listening = self._listening, []
        for waiter in waiting:
            waiter.callback(port)

    def _listen_failed(self, failure: Failure) -> None:
        if failure.check(CannotListenError):
            # The port is taken or needs privileges: a line, not a traceback.
            self.log.error(
                "Cluster node {node} cannot listen: {reason}",
                node=self.node_name,
                reason=failure.getErrorMessage(),
            )
        else:
            self.log.failure(
                "Cluster node {node} cannot listen", failure, node=self.node_name
            )
        waiting, self._listening = self._listening, []
        for waiter in waiting:
            waiter.errback(failure)

    def when_listening(self) -> Deferred[IListeningPort]:
        """
        A C{Deferred} that fires with the listening port once this node
        accepts links, or fails if it cannot listen or has no endpoint to
        listen on.
        """
        if self._listen_endpoint is None:
            return fail(ValueError(f"cluster node {self.node_name} does not listen"))
        if self._port is not None:
            return succeed(self._port)
        waiter: Deferred[IListeningPort] = Deferred()
        self._listening.append(waiter)
        return waiter

    def stopService(self) -> Deferred[None]:
        """
        Report every peer down, close every link and stop listening.  Links
        close gracefully: what services stopped before this one sent (the
        presence "bye") reaches the peers, unless a link takes longer than
        C{close_timeout} to flush.

        @return: fires when the links and the listening port are closed.
        """
        Service.stopService(self)
        for name, link in sorted({**self._replacing, **self._active}.items()):
            self._report_down(name, link)
        self._active.clear()
        self._replacing.clear()
        waiting: list[Deferred[Any]] = []
        for link in list(self._links):
            link.close()
            waiting.append(link.closed)
        if self._port is not None:
            port, self._port = self._port, None
            stopped = port.stopListening()
            if stopped is not None:
                waiting.append(stopped)
        # The peers' ClientServices stop once the links are closed: they
        # would close their connections at once, without the half-close.
        closed: Deferred[Any] = gatherResults(waiting)
        # In a later turn: a link's close may be reported from within its
        # ClientService's own state machine.
        return closed.addCallback(
            lambda _: deferLater(
                self.clock, 0, lambda: Deferred.fromCoroutine(self._stop_children())
            )
        )

    async def _stop_children(self) -> None:
        await gatherResults(
            [maybeDeferred(child.stopService) for child in reversed(list(self))]
        )

    # INodeMessaging

    def send(self, node_name: str, channel: str, data: bytes) -> None:
        """
        Send C{data} to the handler of C{channel} on C{node_name}; dropped
        silently when that node is not up.  While the node's link is being
        replaced by its duplicate, the message is held and sent on the new
        link.
        """
        link = self._active.get(node_name)
        if link is not None and link.is_up:
            self.counters.cluster_bytes_out += len(data)
            link.send_message(channel, data)
        elif link is not None or node_name in self._replacing:
            self._hold(node_name, channel, data)

    def send_all(self, channel: str, data: bytes) -> None:
        """
        Send C{data} to the handler of C{channel} on every peer that is up
        (held, like L{send}, for a peer whose link is being replaced).
        """
        for name, link in list(self._active.items()):
            if link.is_up:
                self.counters.cluster_bytes_out += len(data)
                link.send_message(channel, data)
            else:
                self._hold(name, channel, data)
        if self._replacing:
            for name in list(self._replacing):
                self._hold(name, channel, data)

    def _hold(self, name: str, channel: str, data: bytes) -> None:
        held = self._held.setdefault(name, [])
        if len(held) < MAX_HELD_MESSAGES:
            held.append((channel, data))
        else:
            self._overflow[name] = self._overflow.get(name, 0) + 1

    def _send_held(self, name: str, link: ClusterLink) -> None:
        held = self._held.pop(name, None)
        if held:
            for channel, data in held:
                self.counters.cluster_bytes_out += len(data)
                link.send_message(channel, data)
        self._report_overflow(name)

    def _drop_held(self, name: str) -> None:
        held = self._held.pop(name, None)
        if held:
            self.log.info(
                "Dropped {count} cluster messages held for {node}, which went down",
                count=len(held),
                node=name,
            )
        self._report_overflow(name)

    def _report_overflow(self, name: str) -> None:
        overflow = self._overflow.pop(name, 0)
        if overflow:
            self.log.warn(
                "Dropped {count} cluster messages for {node}: more than {limit} "
                "were sent while its link was replaced",
                count=overflow,
                node=name,
                limit=MAX_HELD_MESSAGES,
            )

    def add_handler(self, channel: str, handler: Handler) -> None:
        """
        Call C{handler(from_node_name, data)} for each message on
        C{channel}.
        """
        self._handlers.setdefault(channel, []).append(handler)

    def add_membership_observer(self, observer: IMembershipObserver) -> None:
        """
        Report peers going up and down to C{observer}.
        """
        self._observers.add(observer)

    def peers(self) -> Mapping[str, str]:
        """
        The peers that are up: node name to incarnation.
        """
        return {
            name: link.peer_incarnation or ""
            for name, link in {**self._replacing, **self._active}.items()
        }

    # Peers we connect to

    def _add_peer(self, description: str, endpoint: IStreamClientEndpoint) -> None:
        service = ClientService(
            endpoint,
            _LinkFactory(self, description),
            retryPolicy=self._retry_policy,
            clock=self.clock,
        )
        self._peers[description] = _Peer(description, service)
        service.setName(f"peer {description}")
        service.setServiceParent(self)

    def _peer_of(self, link: ClusterLink) -> _Peer | None:
        """
        The peer whose C{ClientService} opened C{link}, if this node opened
        it and still has that peer.
        """
        if link.description is None:
            return None
        return self._peers.get(link.description)

    def _park_link(self, link: ClusterLink) -> None:
        """
        Park the peer whose C{ClientService} opened C{link}, if any.
        """
        peer = self._peer_of(link)
        if peer is not None:
            self._park(peer)

    def _park(self, peer: _Peer) -> None:
        if not peer.parked:
            peer.parked = True
            peer.service.stopService().addErrback(self._log_stop_failure, peer)

    def _log_stop_failure(self, failure: Failure, peer: _Peer) -> None:
        self.log.failure(
            "Stopping the link to {address} failed", failure, address=peer.description
        )

    def _unpark(self, node_name: str) -> None:
        if not self.running:
            return
        for peer in self._peers.values():
            if peer.parked and peer.node_name == node_name:
                peer.parked = False
                peer.service.startService()

    # Called by links and their factories

    def link_created(self, link: ClusterLink) -> None:
        """
        Track a new connection, so that stopping closes it.
        """
        self._links.add(link)

    def link_up(self, link: ClusterLink) -> None:
        """
        A link finished its handshake: keep it (unless it duplicates a link
        we keep) and report its node up.
        """
        name, incarnation = link.peer_name, link.peer_incarnation
        assert name is not None and incarnation is not None
        peer = self._peer_of(link)
        if peer is not None:
            peer.node_name = name
        if not self.running:
            link.close()
            return
        current = self._active.get(name)
        replaced = self._replacing.pop(name, None)
        if current is None and replaced is not None:
            if replaced.peer_incarnation == incarnation:
                # The twin of a dropped duplicate: the node never went down.
                self._active[name] = link
                self._send_held(name, link)
                return
            self._report_down(name, replaced)
        if current is None:
            self._activate(name, link)
        elif current.peer_incarnation != incarnation:
            # The node restarted before we noticed the old one was gone.
            del self._active[name]
            self._report_down(name, current)
            current.abort()
            self._activate(name, link)
        else:
            if current.is_up:
                keep, drop = sorted((current, link), key=lambda each: each.link_key)
            else:
                # The peer is closing the current link: the new one stays.
                keep, drop = link, current
            self._active[name] = keep
            self.log.debug("Closed a duplicate cluster link to {node}", node=name)
            drop.close()
            self._park_link(drop)
            self._send_held(name, keep)

    def link_lost(self, link: ClusterLink) -> None:
        """
        A link closed or timed out: if it was its node's link, the node is
        down, and our links to it try again.  A link that timed out is
        reported at once and again when its connection closes: the second
        report does nothing.
        """
        if link not in self._links:
            return
        self._links.remove(link)
        name = link.peer_name
        if name is not None and not link.was_up:
            self.warn_peer(
                "early-close",
                link.peer_address,
                "Cluster link with {node} at {address} closed before its "
                "handshake finished",
                level=LogLevel.info,
                node=name,
            )
        if name is None:
            return
        if self._active.get(name) is link:
            del self._active[name]
            if self._handshaking_with(link):
                # The peer dropped this link as the duplicate of one we
                # have not finished yet; that one takes over.
                self._replacing[name] = link
                self._park_link(link)
                return
            self._report_down(name, link)
            self._unpark(name)
        else:
            replaced = self._replacing.get(name)
            if replaced is not None and not self._handshaking_with(replaced):
                del self._replacing[name]
                self._report_down(name, replaced)
                self._unpark(name)

    def _handshaking_with(self, lost: ClusterLink) -> bool:
        # Only a link whose peer proved the secret counts: a stranger that
        # gives a node's name must not keep that node "up".
        return any(
            link.handshaking and link.peer_name == lost.peer_name
            for link in self._links
        )

    def owns_nonce(self, nonce: bytes) -> bool:
        """
        Whether one of this node's links uses C{nonce}: a L{Hello} with it
        comes from this node itself.
        """
        return any(link.nonce == nonce for link in self._links)

    def admit(self, link: ClusterLink) -> Deferred[None]:
        """
        Let the proven peer of C{link} join, unless a node of the same name
        and another incarnation is linked already and still answers: two
        nodes share a name, and the newer link is refused (with an error
        naming both addresses) so that presence stays with the first.  A
        linked node that does not answer within two heartbeat intervals
        has restarted, and the new link replaces it.

        @return: fires when admitted; fails with L{DuplicateNode}.
        """
        name = link.peer_name
        current = None if name is None else self._active.get(name)
        if current is None or current.peer_incarnation == link.peer_incarnation:
            return succeed(None)
        timeout = min(2 * self.heartbeat_interval, self.heartbeat_timeout)

        def decide(alive: bool) -> None:
            if not alive or self._active.get(name or "") is not current:
                return
            assert current is not None
            self.warn_peer(
                "duplicate",
                link.peer_address,
                "Refused cluster link with {address}: it is named {node}, and a "
                "live node of that name is linked from {other}; give every node "
                "its own --node-name",
                level=LogLevel.error,
                node=name,
                other=current.peer_address,
            )
            raise DuplicateNode(
                f"a node named {name} is already in the cluster, linked from "
                f"{current.peer_address}; this link is from {link.peer_address}"
            )

        return current.probe(timeout).addCallback(decide)

    def warn_peer(
        self,
        kind: str,
        address: str,
        text: str,
        level: LogLevel = LogLevel.warn,
        **fields: Any,
    ) -> None:
        """
        Log C{text} (a warning unless C{level} says otherwise) about the
        peer at C{address}, at most once a minute for each kind and host;
        the next one logged says how many were held back.
        """
        host = address.rsplit(":", 1)[0]
        held_back = self._warnings.allow(kind, host)
        if held_back is None:
            return
        if held_back:
            text += " ({held_back} similar messages held back)"
        self.log.emit(
            level,
            text,
            address=address,
            held_back=held_back,
            **fields,
        )

    def connected_to_self(self, link: ClusterLink) -> None:
        """
        A peer address leads back to this node: stop connecting to it.
        """
        self.log.info(
            "Cluster peer {address} is this node; not connecting to it",
            address=link.description,
        )
        self._park_link(link)

    def message_received(self, link: ClusterLink, channel: str, data: bytes) -> None:
        """
        Hand a message from a peer to the handlers of its channel.
        """
        self.counters.cluster_bytes_in += len(data)
        handlers = self._handlers.get(channel)
        if not handlers:
            self.log.debug(
                "Dropped a cluster message from {node} for unknown channel {channel}",
                node=link.peer_name,
                channel=channel,
            )
            return
        for handler in list(handlers):
            try:
                handler(link.peer_name or "", data)
            except Exception:
                self.log.failure(
                    "Handling a cluster message from {node} on {channel} failed",
                    node=link.peer_name,
                    channel=channel,
                )

    def members_received(
        self, link: ClusterLink, members: list[tuple[str, str]]
    ) -> None:
        """
        Connect to the members a peer knows and we do not.
        """
        for name, address in members:
            if not address or name == self.node_name or name in self._active:
                continue
            if not gossip_safe(address):
                self.log.warn(
                    "Ignored cluster node {node}: {address} is not a TCP or TLS address",
                    node=name,
                    address=address,
                )
                continue
            if any(
                peer.node_name == name or peer.description == address
                for peer in self._peers.values()
            ):
                continue
            try:
                endpoint = self._connect(address)
            except ValueError:
                self.log.warn(
                    "Ignored cluster node {node} at bad address {address}",
                    node=name,
                    address=address,
                )
                continue
            self.log.info(
                "Learned of cluster node {node} at {address}",
                node=name,
                address=address,
            )
            self._add_peer(address, endpoint)

    # Membership

    def _activate(self, name: str, link: ClusterLink) -> None:
        self._active[name] = link
        incarnation = link.peer_incarnation or ""
        self.log.info(
            "Cluster node {node} is up (incarnation {incarnation})",
            node=name,
            incarnation=incarnation,
        )
        self._observers.node_up(name, incarnation)
        members = [(self.node_name, self.advertise)] + [
            (each, other.peer_advertise)
            for each, other in sorted(self._active.items())
            if other.peer_advertise
        ]
        for other in list(self._active.values()):
            other.send_members(members)

    def _report_down(self, name: str, link: ClusterLink) -> None:
        self._drop_held(name)
        incarnation = link.peer_incarnation or ""
        self.log.info(
            "Cluster node {node} is down (incarnation {incarnation})",
            node=name,
            incarnation=incarnation,
        )
        self._observers.node_down(name, incarnation)
