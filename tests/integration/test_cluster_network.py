"""
Tests for L{beryl.cluster}: AMP cluster links, membership and messaging.
"""

from __future__ import annotations

from typing import Callable

from twisted.internet.defer import Deferred, gatherResults
from twisted.trial.unittest import TestCase
from zope.interface import implementer

from beryl.cluster import (
    ClusterService,
)
from beryl.interfaces import IMembershipObserver


class RealNetworkTests(TestCase):
    """
    Three cluster services over loopback TCP with the real reactor.
    """

    timeout = 30

    async def _three_nodes(self) -> None:
        from twisted.internet import reactor

        waiting: dict[str, Deferred[None]] = {}
        services: list[ClusterService] = []

        @implementer(IMembershipObserver)
        class Waiter:
            def __init__(self, service: ClusterService) -> None:
                self.service = service

            def node_up(self, node_name: str, incarnation: str) -> None:
                if len(self.service.peers()) == 2:
                    waiting.pop(self.service.node_name).callback(None)

            def node_down(self, node_name: str, incarnation: str) -> None:
                pass

        received: list[tuple[str, bytes]] = []
        peers: list[str] = []
        for name in ["a", "b", "c"]:
            service = ClusterService.from_descriptions(
                reactor,
                name,
                "tcp:0:interface=127.0.0.1",
                peers,
                secret=b"loopback",
                heartbeat_interval=0.2,
            )
            waiting[name] = Deferred()
            service.add_membership_observer(Waiter(service))
            service.startService()
            services.append(service)
            self.addCleanup(service.stopService)
            port = await service.when_listening()
            service.advertise = f"tcp:host=127.0.0.1:port={port.getHost().port}"  # type: ignore[attr-defined]
            if not peers:
                peers = [service.advertise]
        services[2].add_handler(
            "test", lambda node, data: received.append((node, data))
        )
        await gatherResults(list(waiting.values()))
        arrived: Deferred[None] = Deferred()
        services[2].add_handler("test", lambda node, data: arrived.callback(None))
        services[1].send("c", "test", b"x" * 200_000)
        await arrived
        self.assertEqual(received, [("b", b"x" * 200_000)])

    def test_three_nodes(self) -> Deferred[None]:
        """Three nodes given one peer each form a mesh and exchange messages."""
        return Deferred.fromCoroutine(self._three_nodes())

    async def _stop_flushes(self) -> None:
        from twisted.internet import reactor

        first = ClusterService.from_descriptions(
            reactor, "a", "tcp:0:interface=127.0.0.1", [], heartbeat_interval=0.2
        )
        first.startService()
        self.addCleanup(first.stopService)
        port = await first.when_listening()
        up: Deferred[None] = Deferred()

        @implementer(IMembershipObserver)
        class Up:
            def node_up(self, node_name: str, incarnation: str) -> None:
                if not up.called:
                    up.callback(None)

            def node_down(self, node_name: str, incarnation: str) -> None:
                pass

        second = ClusterService.from_descriptions(
            reactor,
            "b",
            None,
            [f"tcp:host=127.0.0.1:port={port.getHost().port}"],  # type: ignore[attr-defined]
            heartbeat_interval=0.2,
            # Flushing must not depend on how loaded the machine is.
            close_timeout=25.0,
        )
        second.add_membership_observer(Up())
        second.startService()
        self.addCleanup(second.stopService)
        await up
        received: list[bytes] = []
        arrived: Deferred[None] = Deferred()

        def got(node: str, data: bytes) -> None:
            received.append(data)
            arrived.callback(None)

        first.add_handler("bye", got)
        # Larger than a socket buffer: an abort would lose most of it.
        last_words = b"b" * 8_000_000
        second.send_all("bye", last_words)
        await second.stopService()
        await arrived
        self.assertEqual(received, [last_words])

    def test_stop_flushes(self) -> None:
        """What a node sends just before it stops reaches its peers over real TCP."""
        return Deferred.fromCoroutine(self._stop_flushes())

    async def _racing_links(self) -> None:
        from twisted.internet import reactor

        greetings: list[tuple[str, str]] = []
        done: Deferred[None] = Deferred()
        pairs = 8

        def greeted(name: str) -> Callable[[str, bytes], None]:
            def handler(node: str, data: bytes) -> None:
                greetings.append((node, name))
                if len(greetings) == 2 * pairs and not done.called:
                    done.callback(None)

            return handler

        @implementer(IMembershipObserver)
        class Greeter:
            def __init__(self, service: ClusterService) -> None:
                self.service = service

            def node_up(self, node_name: str, incarnation: str) -> None:
                self.service.send(node_name, "greeting", b"hello")

            def node_down(self, node_name: str, incarnation: str) -> None:
                pass

        services = []
        for pair in range(pairs):
            names = [f"a{pair}", f"b{pair}"]
            listening = []
            for name in names:
                service = ClusterService.from_descriptions(
                    reactor, name, "tcp:0:interface=127.0.0.1", []
                )
                service.startService()
                self.addCleanup(service.stopService)
                listening.append(await service.when_listening())
                services.append(service)
            first, second = services[-2:]
            # Each dials the other at once: two links race.
            for service, port in [(first, listening[1]), (second, listening[0])]:
                description = f"tcp:host=127.0.0.1:port={port.getHost().port}"  # type: ignore[attr-defined]
                service._add_peer(description, service._connect(description))
                service.add_membership_observer(Greeter(service))
                service.add_handler("greeting", greeted(service.node_name))
        await done
        self.assertEqual(
            sorted(greetings),
            sorted(
                [(f"a{p}", f"b{p}") for p in range(pairs)]
                + [(f"b{p}", f"a{p}") for p in range(pairs)]
            ),
        )

    def test_racing_links(self) -> None:
        """Of two links racing between two nodes, what each sends on coming up arrives once."""
        return Deferred.fromCoroutine(self._racing_links())
