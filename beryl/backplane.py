"""
A Redis backplane: L{RedisMessaging}, an L{INodeMessaging} that carries the
messages between nodes over Redis pub/sub instead of the AMP mesh.

Every node subscribes to two Redis channels, C{PREFIX:DB:all} (messages
for every node) and C{PREFIX:DB:node:NAME} (messages for it alone), and publishes
on one connection, so what one node sends arrives everywhere in the order
it was sent.  A message to all nodes is published once, whatever the
number of nodes.  Membership lives in keys with a time to live: every node
refreshes C{PREFIX:member:NAME} (its incarnation) and lists itself in the
set C{PREFIX:members} every C{heartbeat_interval}; a node not seen (no key,
no message) for C{heartbeat_timeout} is down, and a node that stops says
so.

Redis is reached with C{txredisapi} (the C{redis} extra).  When Redis goes
away each node keeps serving its own clients, logs it once and reconnects
with backoff; its peers go down after C{heartbeat_timeout}, and the
presence of their users after the presence down period, as in a
partition.  When Redis returns, membership and presence converge again.
"""

from __future__ import annotations

import socket
from typing import Any, Callable, Mapping
from urllib.parse import parse_qs, unquote, urlsplit

import attrs
import orjson
from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from beryl.cluster.local import MembershipObservers, new_incarnation
from beryl.counters import Counters
from beryl.interfaces import IMembershipObserver, INodeMessaging

__all__ = ["BackplaneConfig", "RedisMessaging", "parse_backplane_url"]

Handler = Callable[[str, bytes], None]

_BYE = "\0bye"
"""The control channel of a node that stops."""


@attrs.frozen
class BackplaneConfig:
    """
    Where the Redis backplane is.  The password never appears in
    C{repr} or in L{describe}.

    @ivar ca: a PEM file of the certificate authorities to trust for
        C{rediss://}, or C{None} for the system's.
    @ivar prefix: the start of every Redis key and channel name, so that
        several Beryl clusters can share one Redis database.
    """

    host: str
    port: int = 6379
    db: int = 0
    tls: bool = False
    username: str | None = attrs.field(default=None, repr=False)
    password: str | None = attrs.field(default=None, repr=False)
    ca: str | None = None
    prefix: str = "beryl"

    def describe(self) -> str:
        """
        The URL without its credentials, for logs.
        """
        scheme = "rediss" if self.tls else "redis"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}/{self.db}"


def parse_backplane_url(url: str) -> BackplaneConfig:
    """
    Read C{redis://[[user]:password@]host[:port][/db][?prefix=P]} (or
    C{rediss://} for TLS, with C{?ca=FILE} for a private certificate
    authority).

    @raise ValueError: with a reason that does not contain the password.
    """
    parts = urlsplit(url.strip())
    if parts.scheme not in ("redis", "rediss"):
        raise ValueError("expected a redis:// or rediss:// URL")
    try:
        host = parts.hostname
        port = parts.port or 6379
    except ValueError:
        raise ValueError("bad port in the Redis URL") from None
    if not host:
        raise ValueError("no host in the Redis URL")
    path = parts.path.strip("/") or "0"
    if not path.isdigit():
        raise ValueError(f"the database in a Redis URL is a number, not {path!r}")
    query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
    unknown = set(query) - {"ca", "prefix"}
    if unknown:
        raise ValueError(f"unknown Redis URL parameter {sorted(unknown)[0]!r}")
    if "ca" in query and parts.scheme != "rediss":
        raise ValueError("ca= needs a rediss:// URL")
    return BackplaneConfig(
        host=host,
        port=port,
        db=int(path),
        tls=parts.scheme == "rediss",
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password is not None else None,
        ca=query.get("ca"),
        prefix=query.get("prefix", "beryl") or "beryl",
    )


def _ignore(failure: Failure) -> None:
    """
    Drop the failure of a publish: delivery is at most once.
    """


@implementer(INodeMessaging)
class RedisMessaging(Service):
    """
    L{INodeMessaging} over Redis pub/sub, with membership in Redis keys.

    @ivar node_name: this node's name, unique in the cluster.
    @ivar incarnation: a new random id on each start.
    """

    log = Logger()

    def __init__(
        self,
        node_name: str,
        config: BackplaneConfig,
        clock: IReactorTime,
        reactor: Any = None,
        heartbeat_interval: float = 1.0,
        heartbeat_timeout: float = 5.0,
    ) -> None:
        """
        @param clock: schedules heartbeats and measures peers' silence.
        @param reactor: makes the connections to Redis (the clock, when
            C{None}).
        """
        if "\0" in node_name:
            raise ValueError("a node name cannot contain NUL")
        self.node_name = node_name
        self.incarnation = new_incarnation()
        self.config = config
        self.clock = clock
        self.counters = Counters()
        self.reactor = reactor if reactor is not None else clock
        self.heartbeat_interval = heartbeat_interval
        self.heartbeat_timeout = heartbeat_timeout
        prefix = config.prefix
        # Keys live in the URL's database; pub/sub channels are global to
        # the server, so their names carry the database number.
        self._channel_prefix = f"{prefix}:{config.db}"
        self._all_channel = f"{self._channel_prefix}:all".encode()
        self._own_channel = self._node_channel(node_name)
        self._members = f"{prefix}:members".encode()
        self._handlers: dict[str, list[Handler]] = {}
        self._observers = MembershipObservers()
        self._peers: dict[str, str] = {}
        self._last_seen: dict[str, float] = {}
        self._headers: dict[str, bytes] = {}
        self._publisher: Any = None
        self._subscriber: Any = None
        self._subscribed = False
        self._factories: list[Any] = []
        self._outage_logged = False
        self._started_before = False
        self._tick = LoopingCall(self._heartbeat)
        self._tick.clock = clock

    def _node_channel(self, node_name: str) -> bytes:
        return f"{self._channel_prefix}:node:{node_name}".encode()

    def _member_key(self, node_name: str) -> bytes:
        return f"{self.config.prefix}:member:{node_name}".encode()

    # Service

    def startService(self) -> None:
        """
        Connect to Redis (retrying with backoff) and start the heartbeat.
        """
        super().startService()  # type: ignore[no-untyped-call]
        if self._started_before:
            self.incarnation = new_incarnation()
            self._headers.clear()
        self._started_before = True
        self.log.info(
            "Cluster node {node} uses the Redis backplane {url}",
            node=self.node_name,
            url=self.config.describe(),
        )
        self._connect()
        self._tick.start(self.heartbeat_interval, now=False).addErrback(
            lambda failure: self.log.failure("Backplane heartbeat failed", failure)
        )

    def _connect(self) -> None:
        """
        Open the publishing and the subscribing connection.
        """
        endpoint = self._endpoint()
        self._factories = [
            _factory(self, subscriber=False),
            _factory(self, subscriber=True),
        ]
        for factory in self._factories:
            factory.startConnecting(endpoint)

    def _endpoint(self) -> Any:
        from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS

        endpoint: Any = HostnameEndpoint(
            self.reactor, self.config.host, self.config.port, timeout=5
        )
        if self.config.tls:
            from twisted.internet.ssl import (
                Certificate,
                optionsForClientTLS,
                platformTrust,
            )

            trust: Any = platformTrust()
            if self.config.ca is not None:
                with open(self.config.ca, "rb") as file:
                    trust = Certificate.loadPEM(file.read())
            endpoint = wrapClientTLS(
                optionsForClientTLS(self.config.host, trustRoot=trust), endpoint
            )
        return endpoint

    def stopService(self) -> Deferred[None]:
        """
        Tell the other nodes this one is leaving, report every peer down
        and close the connections to Redis.
        """
        super().stopService()  # type: ignore[no-untyped-call]
        if self._tick.running:
            self._tick.stop()
        leaving: list[Deferred[Any]] = []
        publisher = self._publisher
        if publisher is not None:
            self._publish(self._all_channel, self._header(_BYE))
            try:
                leaving.append(
                    publisher.delete(self._member_key(self.node_name)).addErrback(
                        _ignore
                    )
                )
                leaving.append(
                    publisher.srem(self._members, self.node_name).addErrback(_ignore)
                )
            except Exception:
                pass
        for name in sorted(self._peers):
            self._down(name)
        self._last_seen.clear()

        def disconnect(_: object) -> Deferred[Any]:
            factories, self._factories = self._factories, []
            self._publisher = self._subscriber = None
            return DeferredList(
                [factory.disconnect() for factory in factories], consumeErrors=True
            )

        done: Deferred[Any] = succeed(None)
        if leaving:
            # An unresponsive Redis must not hold up the shutdown.
            done = DeferredList(leaving).addTimeout(2.0, self.clock)
            done.addErrback(_ignore)
        return done.addCallback(disconnect).addCallback(lambda _: None)

    # Connections (called by the txredisapi factories)

    def connection_ready(self, connection: Any, subscriber: bool) -> None:
        """
        A connection to Redis is ready: subscribe on the subscriber, start
        publishing on the publisher.
        """
        if not self.running:
            connection.transport.loseConnection()
            return
        if subscriber:
            self._subscriber = connection
            connection.subscribe([self._all_channel, self._own_channel]).addCallbacks(
                lambda _: self._now_subscribed(connection),
                lambda failure: self.log.failure(
                    "Subscribing on the Redis backplane failed", failure
                ),
            )
            return
        self._publisher = connection
        if self._outage_logged:
            self._outage_logged = False
            self.log.info(
                "Redis backplane {url} is reachable again",
                url=self.config.describe(),
            )
        else:
            self.log.info(
                "Cluster node {node} connected to the Redis backplane {url}",
                node=self.node_name,
                url=self.config.describe(),
            )
        self._heartbeat()

    def _now_subscribed(self, connection: Any) -> None:
        if self._subscriber is connection:
            self._subscribed = True
            self._heartbeat()

    def connection_lost(self, connection: Any, subscriber: bool) -> None:
        """
        A connection to Redis closed; txredisapi reconnects with backoff.
        """
        if subscriber:
            if self._subscriber is connection:
                self._subscriber = None
                self._subscribed = False
        elif self._publisher is connection:
            self._publisher = None
        if self.running:
            self._log_outage()

    def connection_error(self, message: str) -> None:
        """
        Redis refused the connection for good (authentication, database).
        """
        self.log.error(
            "Redis backplane {url}: {message}",
            url=self.config.describe(),
            message=message,
        )

    def _log_outage(self) -> None:
        if not self._outage_logged:
            self._outage_logged = True
            self.log.warn(
                "Redis backplane {url} is unreachable: this node keeps serving its "
                "own clients and reconnects with backoff",
                url=self.config.describe(),
            )

    # Membership

    def _heartbeat(self) -> None:
        publisher = self._publisher
        if publisher is not None:
            try:
                if self._subscribed:
                    # Only a node that hears the others says it is there.
                    self._announce(publisher)
                publisher.smembers(self._members).addCallbacks(
                    self._members_listed, _ignore
                )
            except Exception:
                pass
        elif self.running:
            self._log_outage()
        now = self.clock.seconds()
        for name, seen in list(self._last_seen.items()):
            if now - seen > self.heartbeat_timeout:
                self._down(name)

    def _announce(self, publisher: Any) -> None:
        publisher.set(
            self._member_key(self.node_name),
            self.incarnation,
            pexpire=int(self.heartbeat_timeout * 1000),
        ).addErrback(_ignore)
        publisher.sadd(self._members, self.node_name).addErrback(_ignore)

    def _members_listed(self, members: Any) -> Deferred[Any] | None:
        names = sorted(
            name.decode("utf-8", "replace") if isinstance(name, bytes) else str(name)
            for name in members or ()
        )
        names = [name for name in names if name != self.node_name]
        publisher = self._publisher
        if not names or publisher is None:
            return None
        try:
            listed: Deferred[Any] = publisher.mget(
                [self._member_key(name) for name in names]
            )
        except Exception:
            return None
        return listed.addCallbacks(
            lambda values: self._members_found(names, values), _ignore
        )

    def _members_found(self, names: list[str], values: Any) -> None:
        publisher = self._publisher
        for name, value in zip(names, values or (), strict=False):
            if value is None:
                # Its key expired: the node is gone.
                if publisher is not None:
                    try:
                        publisher.srem(self._members, name).addErrback(_ignore)
                    except Exception:
                        pass
                continue
            incarnation = value.decode() if isinstance(value, bytes) else str(value)
            self._seen(name, incarnation)

    def _seen(self, name: str, incarnation: str) -> None:
        self._last_seen[name] = self.clock.seconds()
        known = self._peers.get(name)
        if known == incarnation:
            return
        if known is not None:
            # It restarted before we noticed it was gone.
            self._down(name)
            self._last_seen[name] = self.clock.seconds()
        self._peers[name] = incarnation
        self.log.info(
            "Cluster node {node} is up (incarnation {incarnation})",
            node=name,
            incarnation=incarnation,
        )
        self._observers.node_up(name, incarnation)

    def _down(self, name: str) -> None:
        self._last_seen.pop(name, None)
        incarnation = self._peers.pop(name, None)
        if incarnation is None:
            return
        self.log.info(
            "Cluster node {node} is down (incarnation {incarnation})",
            node=name,
            incarnation=incarnation,
        )
        self._observers.node_down(name, incarnation)

    # Messages

    def _header(self, channel: str) -> bytes:
        header = self._headers.get(channel)
        if header is None:
            header = self._headers[channel] = (
                orjson.dumps([self.node_name, self.incarnation, channel]) + b"\0"
            )
        return header

    def _publish(self, redis_channel: bytes, message: bytes) -> None:
        publisher = self._publisher
        if publisher is None:
            return
        self.counters.cluster_bytes_out += len(message)
        try:
            publisher.publish(redis_channel, message).addErrback(_ignore)
        except Exception:
            # Not connected any more: dropped, as on a lost link.
            pass

    def message_received(self, message: bytes) -> None:
        """
        Hand a message from Redis to the handlers of its channel.
        """
        self.counters.cluster_bytes_in += len(message)
        end = message.find(b"\0")
        try:
            name, incarnation, channel = orjson.loads(message[:end])
            if not (
                end > 0
                and isinstance(name, str)
                and isinstance(incarnation, str)
                and isinstance(channel, str)
            ):
                raise ValueError("bad header")
        except (ValueError, TypeError):
            self.log.warn("Dropped a malformed message from the Redis backplane")
            return
        if name == self.node_name:
            return
        if channel == _BYE:
            if self._peers.get(name) == incarnation:
                self._down(name)
            return
        self._seen(name, incarnation)
        handlers = self._handlers.get(channel)
        if not handlers:
            return
        data = message[end + 1 :]
        for handler in handlers:
            try:
                handler(name, data)
            except Exception:
                self.log.failure(
                    "Handling a cluster message from {node} on {channel} failed",
                    node=name,
                    channel=channel,
                )

    # INodeMessaging

    def send(self, node_name: str, channel: str, data: bytes) -> None:
        """
        Publish C{data} for C{channel} on C{node_name}'s Redis channel;
        dropped when that node is not up.
        """
        if node_name in self._peers:
            self._publish(self._node_channel(node_name), self._header(channel) + data)

    def send_all(self, channel: str, data: bytes) -> None:
        """
        Publish C{data} once, for every node that is up.
        """
        if self._peers:
            self._publish(self._all_channel, self._header(channel) + data)

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
        The peers that are up: node name to incarnation (read-only).
        """
        return self._peers


def _factory(messaging: RedisMessaging, subscriber: bool) -> Any:
    """
    A txredisapi factory of one connection (reconnecting with backoff)
    that reports to C{messaging}.
    """
    import txredisapi  # type: ignore[import-untyped]

    base: Any = txredisapi.RedisFactory

    class Protocol(txredisapi.SubscriberProtocol):  # type: ignore[misc]
        def messageReceived(self, pattern: Any, channel: Any, message: Any) -> None:
            messaging.message_received(message)

    class Factory(base):  # type: ignore[misc]
        maxDelay = 10
        initialDelay = 0.5

        def addConnection(self, conn: Any) -> None:
            super().addConnection(conn)
            if conn in self.pool:
                conn.whenDisconnected().addCallback(
                    lambda _: messaging.connection_lost(conn, subscriber)
                )
                messaging.connection_ready(conn, subscriber)

        def connectionError(self, why: str) -> None:
            messaging.connection_error(why)
            super().connectionError(why)

    if subscriber:
        Factory.protocol = Protocol
    config = messaging.config
    return Factory(
        f"{config.host}:{config.port}",
        config.db,
        1,
        isLazy=True,
        charset=None,
        password=config.password,
        convertNumbers=False,
        username=config.username,
    )


def default_backplane_node_name() -> str:
    """
    A node name for a backplane node that was given none.
    """
    import os

    return f"{socket.gethostname()}:{os.getpid()}"
