"""
An in-memory L{INodeMessaging} network driven by a L{task.Clock}, for
testing services that talk between nodes without sockets.
"""

from __future__ import annotations

from typing import Callable, Mapping

import attrs
from twisted.internet.task import Clock
from zope.interface import implementer

from beryl.interfaces import IMembershipObserver, INodeMessaging


@attrs.frozen
class Sent:
    """
    One message handed to the network.
    """

    source: str
    destination: str
    channel: str
    data: bytes
    delivered: bool
    at: float


@implementer(INodeMessaging)
class FakeMessaging:
    """
    One node's end of a L{FakeNetwork}.
    """

    def __init__(self, network: FakeNetwork, node_name: str, incarnation: str) -> None:
        self.network = network
        self.node_name = node_name
        self.incarnation = incarnation
        self.handlers: dict[str, Callable[[str, bytes], None]] = {}
        self.observers: list[IMembershipObserver] = []

    def send(self, node_name: str, channel: str, data: bytes) -> None:
        """
        See L{INodeMessaging.send}.
        """
        self.network.transmit(self, node_name, channel, data)

    def send_all(self, channel: str, data: bytes) -> None:
        """
        See L{INodeMessaging.send_all}.
        """
        for node_name in self.peers():
            self.send(node_name, channel, data)

    def add_handler(self, channel: str, handler: Callable[[str, bytes], None]) -> None:
        """
        See L{INodeMessaging.add_handler}.
        """
        self.handlers[channel] = handler

    def add_membership_observer(self, observer: IMembershipObserver) -> None:
        """
        See L{INodeMessaging.add_membership_observer}.
        """
        self.observers.append(observer)

    def peers(self) -> Mapping[str, str]:
        """
        See L{INodeMessaging.peers}.
        """
        return {
            name: node.incarnation
            for name, node in self.network.nodes.items()
            if name != self.node_name and self.network.reachable(self.node_name, name)
        }


class FakeNetwork:
    """
    Nodes connected all to all.  Messages arrive after C{latency} seconds
    of the clock, in the order they were sent between any two nodes, unless
    the pair is cut apart (then they are lost, as on a real link).
    """

    def __init__(self, clock: Clock, latency: float = 0.01) -> None:
        self.clock = clock
        self.latency = latency
        self.nodes: dict[str, FakeMessaging] = {}
        self.cuts: set[frozenset[str]] = set()
        self.log: list[Sent] = []

    def node(self, node_name: str, incarnation: str = "1") -> FakeMessaging:
        """
        A new node end, not yet connected: see L{connect}.
        """
        return FakeMessaging(self, node_name, incarnation)

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
        Detach a node (it crashed): its messages in flight are lost.
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
        Log a message and deliver it after the latency, unless the link is
        cut or either end is gone by then.
        """
        source = sender.node_name
        ok = (
            self.nodes.get(source) is sender
            and destination in self.nodes
            and self.reachable(source, destination)
        )
        self.log.append(
            Sent(source, destination, channel, data, ok, self.clock.seconds())
        )
        if not ok:
            return
        receiver = self.nodes[destination]

        def arrive() -> None:
            if self.nodes.get(destination) is not receiver:
                return
            if not self.reachable(source, destination):
                return
            handler = receiver.handlers.get(channel)
            if handler is not None:
                handler(source, data)

        self.clock.callLater(self.latency, arrive)

    def bytes_sent(self, channel: str) -> int:
        """
        The total size of the messages delivered on C{channel}.
        """
        return sum(
            len(s.data) for s in self.log if s.channel == channel and s.delivered
        )
