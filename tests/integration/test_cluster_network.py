"""
Tests for L{beryl.cluster}: AMP cluster links, membership and messaging.
"""

from __future__ import annotations

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
