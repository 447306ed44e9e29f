"""
Test doubles for code that uses Beryl: a connection that records what the
coordinator writes, a helper that drives a coordinator the way a transport
does, an in-memory network of nodes (L{FakeNetwork}) whose
L{FakeMessaging} ends stand in for the cluster's L{INodeMessaging}, and
helpers that tell which process of C{twistd beryl --workers N} serves which
connections (read from Linux's C{/proc}).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import attrs
import orjson
from twisted.internet.interfaces import IReactorTime
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
