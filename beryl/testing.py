"""
Test doubles for code that uses Beryl: a connection that records what the
coordinator writes, a helper that drives a coordinator the way a transport
does, an in-memory network of nodes (L{FakeNetwork}) whose
L{FakeMessaging} ends stand in for the cluster's L{INodeMessaging}, and
helpers that tell which process of C{twistd beryl --workers N} serves which
connections (read from Linux's C{/proc}), and L{MemoryNetwork}: endpoints
connected in memory with Twisted's C{iosim}, for services that link over
endpoints (the cluster).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import attrs
import orjson
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.interfaces import (
    IHalfCloseableProtocol,
    IListeningPort,
    IProtocolFactory,
    IReactorTime,
    IStreamClientEndpoint,
    IStreamServerEndpoint,
)
from twisted.internet.task import Clock
from twisted.test import iosim
from zope.interface import implementer
from zope.interface.verify import verifyClass

from beryl.app import ConnectInfo
from beryl.coordinator import Coordinator, SocketHandle
from beryl.interfaces import IConnection, IMembershipObserver, INodeMessaging
from beryl.wire import V2_JSON, Frame, Message, Serializer

__all__ = [
    "FakeClient",
    "FakeConnection",
    "FakeMessaging",
    "FakeNetwork",
    "MemoryConnection",
    "MemoryNetwork",
    "Sent",
    "connections_per_worker",
    "worker_pids",
]


@implementer(IConnection)
@attrs.define
class FakeConnection:
    """
    An L{IConnection} that keeps every frame written to it and the close
    code it was closed with.
    """

    frames: list[Frame] = attrs.field(factory=list)
    closed: tuple[int, str] | None = None
    prepare_key: object = "fake"

    def send(self, frame: Frame) -> None:
        self.frames.append(frame)

    def prepare(self, frame: Frame) -> object:
        return frame

    def send_prepared(self, prepared: object) -> None:
        assert isinstance(prepared, Frame)
        self.frames.append(prepared)

    def close(self, code: int, reason: str) -> None:
        self.closed = (code, reason)


verifyClass(IConnection, FakeConnection)


@attrs.define
class FakeClient:
    """
    One socket of a coordinator, driven as a transport would drive it,
    with what it receives decoded for assertions.
    """

    coordinator: Coordinator
    serializer: Serializer = V2_JSON
    params: dict[str, Any] = attrs.field(factory=dict)
    connection: FakeConnection = attrs.field(factory=FakeConnection)
    socket: SocketHandle = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self.socket = self.coordinator.open(
            self.connection, self.serializer, self.params, ConnectInfo()
        )

    def send(
        self, join_ref: Any, ref: Any, topic: str, event: str, payload: Any
    ) -> None:
        """
        Deliver one inbound message to the coordinator.
        """
        self.coordinator.receive(
            self.socket, Message(join_ref, ref, topic, event, payload)
        )

    def received(self) -> list[Any]:
        """
        Every text frame received so far, decoded from JSON; binary frames
        as their raw bytes.
        """
        return [
            frame.data if frame.is_binary else orjson.loads(frame.data)
            for frame in self.connection.frames
        ]

    def take(self) -> list[Any]:
        """
        L{received}, then forget those frames.
        """
        result = self.received()
        self.connection.frames.clear()
        return result

    def disconnect(self) -> None:
        """
        The connection drops without a close handshake.
        """
        self.coordinator.closed(self.socket)


@attrs.frozen
class Sent:
    """
    One message handed to a L{FakeNetwork}.

    @ivar delivered: whether it was on its way (both ends known and not cut
        apart when it was sent).
    @ivar at: the network clock's time when it was sent (0 without a clock).
    """

    source: str
    destination: str
    channel: str
    data: bytes
    delivered: bool
    at: float


Handler = Callable[[str, bytes], None]


@implementer(INodeMessaging)
class FakeMessaging:
    """
    One node's end of a L{FakeNetwork}: an in-memory L{INodeMessaging}.

    @ivar handlers: the handlers of each messaging channel, in the order they
        were added; each message goes to all of them, as with the real
        cluster service.
    @ivar sent: C{(destination, channel, data)} of every message this node
        sent that was on its way; tests may clear it.
    """

    def __init__(
        self, network: FakeNetwork, node_name: str, incarnation: str = "1"
    ) -> None:
        self.network = network
        self.node_name = node_name
        self.incarnation = incarnation
        self.handlers: dict[str, list[Handler]] = {}
        self.observers: list[IMembershipObserver] = []
        self.sent: list[tuple[str, str, bytes]] = []

    def send(self, node_name: str, channel: str, data: bytes) -> None:
        """
        See L{INodeMessaging.send}.
        """
        self.network.transmit(self, node_name, channel, data)

    def send_all(self, channel: str, data: bytes) -> None:
        """
        See L{INodeMessaging.send_all}: one message per reachable peer, in
        name order.
        """
        for node_name in sorted(self.peers()):
            self.send(node_name, channel, data)

    def add_handler(self, channel: str, handler: Handler) -> None:
        """
        See L{INodeMessaging.add_handler}.
        """
        self.handlers.setdefault(channel, []).append(handler)

    def add_membership_observer(self, observer: IMembershipObserver) -> None:
        """
        See L{INodeMessaging.add_membership_observer}.
        """
        self.observers.append(observer)

    def peers(self) -> Mapping[str, str]:
        """
        See L{INodeMessaging.peers}: the other connected nodes this one can
        reach.
        """
        if self.network.nodes.get(self.node_name) is not self:
            return {}
        return {
            name: node.incarnation
            for name, node in self.network.nodes.items()
            if name != self.node_name and self.network.reachable(self.node_name, name)
        }


verifyClass(INodeMessaging, FakeMessaging)


class FakeNetwork:
    """
    Nodes connected all to all, in memory.  Messages between two nodes
    arrive in the order they were sent, unless the pair is cut apart (then
    they are lost, as on a real link) or the receiver is gone.

    With a C{clock}, a message arrives C{latency} seconds of that clock after
    it was sent; without one, messages wait until L{flush}.
    """

    def __init__(self, clock: IReactorTime | None = None, latency: float = 0.01):
        self.clock = clock
        self.latency = latency
        self.nodes: dict[str, FakeMessaging] = {}
        self.cuts: set[frozenset[str]] = set()
        self.log: list[Sent] = []
        self._queue: list[tuple[Sent, FakeMessaging]] = []

    def node(self, node_name: str, incarnation: str = "1") -> FakeMessaging:
        """
        A new node end, not yet connected: see L{connect}.
        """
        return FakeMessaging(self, node_name, incarnation)

    def join(self, node_name: str, incarnation: str = "1") -> FakeMessaging:
        """
        A new node end, connected at once.
        """
        messaging = self.node(node_name, incarnation)
        self.connect(messaging)
        return messaging

    def connect(self, messaging: FakeMessaging) -> None:
        """
        Attach a node (replacing one of the same name) and tell everyone
        who is up.
        """
        self.nodes[messaging.node_name] = messaging
        for name, other in list(self.nodes.items()):
            if other is messaging or not self.reachable(name, messaging.node_name):
                continue
            for observer in other.observers:
                observer.node_up(messaging.node_name, messaging.incarnation)
            for observer in messaging.observers:
                observer.node_up(name, other.incarnation)

    def disconnect(self, node_name: str) -> None:
        """
        Detach a node (it crashed or left): its messages in flight are lost
        and the others see it go down.
        """
        gone = self.nodes.pop(node_name)
        for other in self.nodes.values():
            for observer in other.observers:
                observer.node_down(node_name, gone.incarnation)

    def cut(self, a: str, b: str) -> None:
        """
        Lose every message between C{a} and C{b} until L{heal}.
        """
        self.cuts.add(frozenset((a, b)))

    def heal(self, a: str, b: str) -> None:
        """
        Undo L{cut}.
        """
        self.cuts.discard(frozenset((a, b)))

    def reachable(self, a: str, b: str) -> bool:
        """
        Whether messages from C{a} reach C{b}.
        """
        return frozenset((a, b)) not in self.cuts

    def transmit(
        self, sender: FakeMessaging, destination: str, channel: str, data: bytes
    ) -> None:
        """
        Log a message and deliver it after the latency (or at L{flush}),
        unless the link is cut or either end is gone by then.
        """
        source = sender.node_name
        ok = (
            self.nodes.get(source) is sender
            and destination in self.nodes
            and self.reachable(source, destination)
        )
        at = self.clock.seconds() if self.clock is not None else 0.0
        sent = Sent(source, destination, channel, data, ok, at)
        self.log.append(sent)
        if not ok:
            return
        sender.sent.append((destination, channel, data))
        receiver = self.nodes[destination]
        if self.clock is None:
            self._queue.append((sent, receiver))
        else:
            self.clock.callLater(self.latency, self._arrive, sent, receiver)

    def flush(self) -> None:
        """
        Deliver every waiting message, in order, including those sent while
        delivering (only without a clock).
        """
        while self._queue:
            sent, receiver = self._queue.pop(0)
            self._arrive(sent, receiver)

    def _arrive(self, sent: Sent, receiver: FakeMessaging) -> None:
        if self.nodes.get(sent.destination) is not receiver:
            return
        if not self.reachable(sent.source, sent.destination):
            return
        for handler in list(receiver.handlers.get(sent.channel, ())):
            handler(sent.source, sent.data)

    def bytes_sent(self, channel: str) -> int:
        """
        The total size of the messages on C{channel} that were on their way.
        """
        return sum(
            len(s.data) for s in self.log if s.channel == channel and s.delivered
        )


_STARTED = re.compile(r"Worker (\d+) started \(pid (\d+)\)")


def worker_pids(log: str) -> dict[int, int]:
    """
    The pid of every worker, by worker number, as the parent last logged
    it (a restarted worker has its new pid).
    """
    return {int(index): int(pid) for index, pid in _STARTED.findall(log)}


def _established_inodes(port: int) -> set[str]:
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            if local_port == port and fields[3] == "01":
                inodes.add(fields[9])
    return inodes


def connections_per_worker(port: int, pids: Iterable[int]) -> dict[int, int]:
    """
    For each process in C{pids}, how many established TCP connections to
    local C{port} it holds.
    """
    inodes = _established_inodes(port)
    counts: dict[int, int] = {}
    for pid in pids:
        count = 0
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            fds = []
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:[") and target[8:-1] in inodes:
                count += 1
        counts[pid] = count
    return counts


# An in-memory TCP network for services that link over endpoints.


@implementer(IListeningPort)
@attrs.define
class _MemoryPort:
    network: MemoryNetwork
    address: str

    def startListening(self) -> None:
        pass

    def stopListening(self) -> None:
        self.network.listeners.pop(self.address, None)

    def getHost(self) -> Any:
        return iosim.FakeAddress()


@implementer(IStreamServerEndpoint)
@attrs.define
class _ServerEndpoint:
    network: MemoryNetwork
    address: str

    def listen(self, factory: IProtocolFactory) -> Deferred[IListeningPort]:
        self.network.listeners[self.address] = factory
        return succeed(_MemoryPort(self.network, self.address))


@implementer(IStreamClientEndpoint)
@attrs.define
class _ClientEndpoint:
    network: MemoryNetwork
    address: str

    def connect(self, factory: IProtocolFactory) -> Deferred[Any]:
        attempt: Deferred[Any] = Deferred(
            lambda d: self.network.pending.remove((self.address, factory, d))
        )
        self.network.pending.append((self.address, factory, attempt))
        return attempt


class _HalfClosingTransport(iosim.FakeTransport):
    """An iosim transport that remembers C{loseWriteConnection}."""

    write_closed = False
    eof_delivered = False

    def loseWriteConnection(self) -> None:
        self.write_closed = True


@attrs.define
class MemoryConnection:
    """One in-memory connection between a client and a server protocol of a L{MemoryNetwork}."""

    server_address: str
    pump: iosim.IOPump
    frozen: bool = False

    @property
    def open(self) -> bool:
        """
        Whether neither side has closed.
        """
        return not (
            self.pump.clientIO.disconnecting or self.pump.serverIO.disconnecting
        )

    @property
    def finished(self) -> bool:
        """
        Whether both sides are disconnected.
        """
        return bool(self.pump.clientIO.disconnected and self.pump.serverIO.disconnected)

    def half_close(self) -> bool:
        """
        Deliver the end of a half-closed side's data to the other side, as
        TCP does after C{loseWriteConnection} (which iosim ignores).
        """
        delivered = False
        sides = [
            (self.pump.clientIO, self.pump.server, self.pump.serverIO),
            (self.pump.serverIO, self.pump.client, self.pump.clientIO),
        ]
        for writer, reader, reader_io in sides:
            if (
                getattr(writer, "write_closed", False)
                and not getattr(writer, "eof_delivered", False)
                and not writer.stream
                and not self.frozen
                and not reader_io.disconnected
            ):
                writer.eof_delivered = True
                half = IHalfCloseableProtocol(reader, None)
                if half is not None:
                    half.readConnectionLost()
                delivered = True
        return delivered


@attrs.define
class MemoryNetwork:
    """
    Connects endpoints by address in memory with C{iosim}; data moves and
    connections complete only in L{flush}, time moves only in L{run}.
    """

    clock: Clock = attrs.field(factory=Clock)
    listeners: dict[str, IProtocolFactory] = attrs.field(factory=dict)
    pending: list[tuple[str, IProtocolFactory, Deferred[Any]]] = attrs.field(
        factory=list
    )
    connections: list[MemoryConnection] = attrs.field(factory=list)
    stranger_port: int = 40000
    """The last client port given out."""

    def server(self, address: str) -> IStreamServerEndpoint:
        """
        An endpoint that listens at C{address} on this network.
        """
        return _ServerEndpoint(self, address)

    def client(self, address: str) -> IStreamClientEndpoint:
        """
        An endpoint that connects to C{address} on this network.
        """
        return _ClientEndpoint(self, address)

    def connect_pending(self) -> bool:
        """
        Complete the connection attempts made since the last call (refused
        where nothing listens); whether there were any.
        """
        pending, self.pending = self.pending, []
        for address, factory, attempt in pending:
            server_factory = self.listeners.get(address)
            if server_factory is None:
                attempt.errback(ConnectionRefusedError(address))
                continue
            server = server_factory.buildProtocol(iosim.FakeAddress())
            client = factory.buildProtocol(iosim.FakeAddress())
            self.stranger_port += 1
            pump = iosim.connect(
                server,
                _HalfClosingTransport(  # type: ignore[no-untyped-call]
                    server,
                    isServer=True,
                    peerAddress=IPv4Address("TCP", "127.0.0.1", self.stranger_port),
                ),
                client,
                _HalfClosingTransport(  # type: ignore[no-untyped-call]
                    client,
                    isServer=False,
                    peerAddress=IPv4Address("TCP", "127.0.0.1", 4001),
                ),
                greet=False,
                clock=self.clock,
            )
            self.connections.append(MemoryConnection(address, pump))
            attempt.callback(client)
        return bool(pending)

    def flush(self) -> None:
        """
        Move data and complete connections until nothing moves.
        """
        moved = True
        while moved:
            moved = self.connect_pending()
            for connection in list(self.connections):
                if connection.frozen:
                    connection.pump.clientIO.getOutBuffer()
                    connection.pump.serverIO.getOutBuffer()
                if connection.pump.pump():
                    moved = True
                if connection.half_close():
                    moved = True
            self.connections = [c for c in self.connections if not c.finished]
            # What is due now (a stopping node's last steps) runs too.
            if any(
                call.getTime() <= self.clock.seconds()
                for call in self.clock.getDelayedCalls()
            ):
                self.clock.advance(0)
                moved = True

    def run(self, seconds: float, step: float = 0.1) -> None:
        """
        Let C{seconds} of the clock pass in steps, flushing after each.
        """
        self.flush()
        elapsed = 0.0
        while elapsed < seconds:
            self.clock.advance(step)
            elapsed += step
            self.flush()

    def open_connections(self) -> list[MemoryConnection]:
        """
        The connections neither side has closed.
        """
        return [c for c in self.connections if c.open]


for _class, _interface in (
    (_MemoryPort, IListeningPort),
    (_ServerEndpoint, IStreamServerEndpoint),
    (_ClientEndpoint, IStreamClientEndpoint),
):
    verifyClass(_interface, _class)
