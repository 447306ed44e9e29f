"""
Assemble Beryl's services for one node, for C{twistd beryl} and for
applications that embed Beryl in their own Twisted process::

    server = make_server(app, reactor)
    server.service.setServiceParent(my_multi_service)
    my_site_root.putChild(b"socket", server.socket_resource())
"""

from __future__ import annotations

from typing import Any, Callable

import attrs
from twisted.application.service import MultiService
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.web.resource import Resource

from beryl.app import App
from beryl.backplane import BackplaneConfig, RedisMessaging
from beryl.cluster import ClusterService, LocalMessaging
from beryl.coordinator import Coordinator
from beryl.counters import Counters
from beryl.health import Readiness
from beryl.interfaces import INodeMessaging, IPresence
from beryl.metrics import NodeMetrics
from beryl.presence.tracker import PresenceTracker, timings_problem
from beryl.pubsub import PubSub
from beryl.transport.longpoll import LongPollTransport
from beryl.transport.websocket import PhoenixWebSocketFactory
from beryl.web import socket_resource

__all__ = ["ClusterConfig", "PresenceTimings", "Server", "make_server"]


@attrs.frozen
class PresenceTimings:
    """
    How presence replicates between nodes (Phoenix's defaults).

    @ivar broadcast_period: seconds between replication ticks.
    @ivar max_silent_periods: ticks without changes before an empty
        heartbeat is sent.
    @ivar down_period: seconds of silence before a peer's presences leave;
        at least 1.5 times an idle node's heartbeat interval,
        C{broadcast_period * (max_silent_periods + 1)}, and two broadcast
        periods (see L{beryl.presence.tracker.timings_problem}).
    @ivar permdown_period: seconds of silence before a peer's presences are
        deleted; longer than C{down_period}.

    @raise ValueError: when the timings cannot work.
    """

    broadcast_period: float = 1.5
    max_silent_periods: int = 10
    down_period: float = 30.0
    permdown_period: float = 1200.0

    def __attrs_post_init__(self) -> None:
        problem = timings_problem(
            self.broadcast_period,
            self.max_silent_periods,
            self.down_period,
            self.permdown_period,
        )
        if problem is not None:
            raise ValueError(problem)


@attrs.frozen
class ClusterConfig:
    """
    How this node joins a cluster.

    @ivar node_name: this node's name, unique in the cluster.
    @ivar listen: server endpoint description for the cluster port
        (C{"tcp:4001"}).
    @ivar peers: client endpoint descriptions of other nodes' cluster ports
        (C{"tcp:host=10.0.0.2:port=4001"}); one reachable peer is enough,
        the rest of the mesh is learned from it.
    @ivar advertise: the client endpoint description other nodes use to
        reach this node's cluster port.
    @ivar secret: a shared secret every node must know, or C{None}.
    """

    node_name: str
    listen: str
    peers: tuple[str, ...] = ()
    advertise: str | None = None
    secret: bytes | None = attrs.field(default=None, repr=False)
    heartbeat_interval: float = 1.0
    heartbeat_timeout: float = 5.0


class NodeService(MultiService):
    """
    The services of one node.  Stopping it drains first: the node stops
    being ready (C{/ready} answers 503) and refuses new sockets at once,
    then, after C{drain_seconds}, its children stop in reverse order (the
    listener first, then the coordinator, which closes the remaining
    sockets with 1001).
    """

    def __init__(self, clock: IReactorTime, drain_seconds: float = 0.0) -> None:
        MultiService.__init__(self)
        self.clock = clock
        self.drain_seconds = drain_seconds
        self.on_drain: list[Callable[[], None]] = []

    def stopService(self) -> Deferred[object]:
        for callback in self.on_drain:
            callback()
        if self.drain_seconds <= 0:
            return MultiService.stopService(self)  # type: ignore[no-any-return]
        drained: Deferred[object] = deferLater(self.clock, self.drain_seconds)
        drained.addCallback(lambda _: MultiService.stopService(self))
        return drained


@attrs.frozen
class Server:
    """
    Beryl's services for one node, without a listener.

    @ivar service: start and stop this (or add it to your own
        C{MultiService}); its children are the node's services in
        dependency order.
    @ivar coordinator: the channel system, for broadcasts from
        application code.
    @ivar websocket_factory: the Autobahn factory behind the WebSocket
        endpoint.
    @ivar longpoll: the long-poll sessions behind the long-poll endpoint,
        or C{None} when it is off.
    @ivar counters: the numbers the hot paths count, for metrics.
    @ivar metrics: the node's Prometheus collector (serve it with
        L{beryl.metrics.metrics_resource}), or C{None} when metrics are
        off.
    @ivar readiness: whether the node should get new clients (the
        C{/ready} probe); the listener sets its C{listening}.
    """

    service: MultiService
    coordinator: Coordinator
    websocket_factory: PhoenixWebSocketFactory
    pubsub: PubSub
    presence: IPresence
    messaging: INodeMessaging
    longpoll: LongPollTransport | None = None
    counters: Counters = attrs.field(factory=Counters)
    metrics: NodeMetrics | None = None
    readiness: Readiness | None = None

    def socket_resource(self) -> Resource:
        """
        A C{twisted.web} resource to mount at your socket prefix (for
        example C{b"socket"}): its C{websocket} child is the Phoenix
        WebSocket endpoint, its C{longpoll} child the long-poll one.
        """
        return socket_resource(self.websocket_factory, self.longpoll)


def make_server(
    app: App,
    reactor: Any,
    *,
    max_channels: int = 100,
    max_message_rate: float = 100.0,
    message_burst: float = 200.0,
    max_join_rate: float = 10.0,
    join_burst: float = 100.0,
    max_topic_bytes: int = 1024,
    idle_timeout: float = 60.0,
    check_origin: str | list[str] | Callable[[str], bool] | None = "host",
    max_frame_size: int = 8 * 1024 * 1024,
    max_send_buffer: int = 16 * 1024 * 1024,
    handshake_timeout: float = 10.0,
    max_connections_per_address: int = 0,
    cluster: ClusterConfig | None = None,
    node_name: str = "beryl",
    presence: PresenceTimings | None = None,
    longpoll: bool = True,
    longpoll_timeout: float = 10.0,
    longpoll_idle_timeout: float = 15.0,
    backplane: BackplaneConfig | None = None,
    metrics: bool = True,
    ready_grace: float = 30.0,
    drain_seconds: float = 0.0,
) -> Server:
    """
    Build the services that serve C{app}, in dependency order: cluster
    links, PubSub, presence, coordinator.

    @param reactor: the reactor (or, in tests, a fake) used for time and,
        with a cluster, for the links.
    @param check_origin: see L{PhoenixWebSocketFactory}, as are
        C{max_send_buffer}, C{handshake_timeout} and
        C{max_connections_per_address}.
    @param max_message_rate: see L{Coordinator}, as are C{message_burst},
        C{max_join_rate}, C{join_burst} and C{max_topic_bytes}.
    @param cluster: how to join a cluster; C{None} for a node on its own
        (named C{node_name}).
    @param presence: presence replication timings (Phoenix's defaults when
        C{None}).
    @param longpoll: serve the long-poll transport beside the WebSocket one;
        C{longpoll_timeout} and C{longpoll_idle_timeout} are its poll
        timeout and idle timeout (see L{LongPollTransport}).
    @param backplane: link the nodes through this Redis server instead of
        the AMP mesh (with C{cluster} C{None}); this node is C{node_name}.
    @param metrics: whether to keep Prometheus metrics (L{Server.metrics}).
    @param ready_grace: seconds after which the node is ready even if not
        every configured peer is up.
    @param drain_seconds: how long stopping waits, not ready and refusing
        new sockets, before it closes the open ones (see L{NodeService}).
    """
    timings = presence if presence is not None else PresenceTimings()
    counters = Counters()
    node = NodeService(reactor, drain_seconds)
    service: MultiService = node
    messaging: INodeMessaging
    if backplane is not None:
        if cluster is not None:
            raise ValueError("use a backplane or a cluster, not both")
        redis = RedisMessaging(node_name, backplane, reactor)
        redis.name = "cluster"
        redis.counters = counters
        service.addService(redis)
        messaging = redis
    elif cluster is None:
        messaging = LocalMessaging(node_name)
    else:
        links = ClusterService.from_descriptions(
            reactor,
            cluster.node_name,
            cluster.listen,
            list(cluster.peers),
            secret=cluster.secret,
            advertise=cluster.advertise,
            heartbeat_interval=cluster.heartbeat_interval,
            heartbeat_timeout=cluster.heartbeat_timeout,
        )
        links.name = "cluster"
        links.counters = counters
        service.addService(links)
        messaging = links
    pubsub = PubSub(messaging, name="beryl", clock=reactor, counters=counters)
    pubsub.name = "pubsub"
    service.addService(pubsub)
    tracker = PresenceTracker(
        None if cluster is None and backplane is None else messaging,
        reactor,
        broadcast_period=timings.broadcast_period,
        max_silent_periods=timings.max_silent_periods,
        down_period=timings.down_period,
        permdown_period=timings.permdown_period,
    )
    tracker.name = "presence"
    service.addService(tracker)
    coordinator = Coordinator(
        app,
        clock=reactor,
        pubsub=pubsub,
        presence=tracker,
        max_channels=max_channels,
        idle_timeout=idle_timeout,
        max_message_rate=max_message_rate,
        message_burst=message_burst,
        max_join_rate=max_join_rate,
        join_burst=join_burst,
        max_topic_bytes=max_topic_bytes,
        counters=counters,
    )
    coordinator.name = "coordinator"
    service.addService(coordinator)
    factory = PhoenixWebSocketFactory(
        coordinator,
        check_origin=check_origin,
        max_frame_size=max_frame_size,
        max_send_buffer=max_send_buffer,
        handshake_timeout=handshake_timeout,
        max_connections_per_address=max_connections_per_address,
        counters=counters,
    )
    sessions = None
    if longpoll:
        sessions = LongPollTransport(
            coordinator,
            reactor,
            node_name=pubsub.node_name,
            check_origin=check_origin,
            poll_timeout=longpoll_timeout,
            idle_timeout=longpoll_idle_timeout,
            max_buffer=max_send_buffer,
            max_body=max_frame_size,
            counters=counters,
        )

    def peers_up() -> int:
        return len(messaging.peers())

    node_metrics = (
        NodeMetrics(
            app.telemetry,
            counters,
            presence_entries=tracker.entry_count,
            peers_up=peers_up,
        )
        if metrics
        else None
    )
    readiness = Readiness(
        reactor,
        expected_peers=0 if cluster is None else len(cluster.peers),
        peers_up=peers_up,
        grace_period=ready_grace,
    )

    def drain() -> None:
        readiness.draining = True
        coordinator.refuse_new_sockets()

    node.on_drain.append(drain)
    return Server(
        service,
        coordinator,
        factory,
        pubsub,
        tracker,
        messaging,
        sessions,
        counters,
        node_metrics,
        readiness,
    )
